"""Training steps per second of every registry model with 1 and 2 CPU threads, on an idle machine
and beside one busy process (a learner's laptop always runs something else).

    python data/threads_benchmark.py > data/threads_benchmark.jsonl

Each line: model, data, threads, busy (whether a competing process spun on one core), steps/s
(median of 3 timings of a fixed number of steps; ``run`` numbers the runs kept in the .jsonl).
``ModelSpec.threads`` in ``dgm/registry.py`` is 1 for every model but the convolutional image models,
the only ones that gained 1.3x or more from a second core on an idle machine in both runs; beside one
busy process, a second thread cost every model 1.7-5.5x.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import time

import torch

from dgm import data, registry

DATA_FOR = {"points": "ring", "categorical": "digits", "grey": "mnist5k", "binary": "mnist5k-bin"}


def spin() -> None:
    while True:
        pass


def steps_per_second(name: str, data_name: str, threads: int, seconds: float = 1.0) -> float:
    torch.set_num_threads(threads)
    spec = registry.MODELS[name]
    split = data.load(data_name, "train")
    torch.manual_seed(0)
    model = registry.build(name, split.info())
    optimizers = model.configure_optimizers(spec.train.get("lr", 1e-3))
    x = split.x if not spec.labels else (split.x, split.y)
    model.initialize(x)
    batch_size = spec.train.get("batch_size", 128)

    def batch(i: int):
        rows = torch.arange(i * batch_size, (i + 1) * batch_size) % len(split.x)
        return split.x[rows] if not spec.labels else (split.x[rows], split.y[rows])

    for i in range(3):  # warm-up
        model.training_step(batch(i), optimizers)
    # steps that take about `seconds`
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 4:
        model.training_step(batch(n), optimizers)
        n += 1
    steps = max(3, int(n * 4))
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(steps):
            model.training_step(batch(i), optimizers)
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    # MODEL or MODEL@DATA; by default every model on its first kind of data, and DDPM's U-Net on digits too
    names = sys.argv[1:] or [*sorted(registry.MODELS), "ddpm@digits"]
    runs = []
    for entry in names:
        name, _, data_name = entry.partition("@")
        kind = registry.MODELS[name].data_kinds[0]
        runs.append((name, data_name or ("mnist5k" if name == "cyclegan" else DATA_FOR[kind])))
    for busy in (False, True):
        spinner = multiprocessing.Process(target=spin, daemon=True) if busy else None
        if spinner:
            spinner.start()
        try:
            for name, data_name in runs:
                for threads in (1, 2):
                    rate = steps_per_second(name, data_name, threads)
                    print(json.dumps({"model": name, "data": data_name, "threads": threads, "busy": busy,
                                      "steps_per_second": round(rate, 2)}), flush=True)
        finally:
            if spinner:
                spinner.terminate()


if __name__ == "__main__":
    main()
