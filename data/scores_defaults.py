"""Chapter 7's energy-based model and score network at their default runs on ``ring`` and ``ring-sharp``.

Every line is ``python -m dgm train MODEL --data DATA --seed SEED --threads 1`` (the registry's default
steps and settings), run through :func:`dgm.run.train`, the CLI's code path:

    OMP_NUM_THREADS=1 python data/scores_defaults.py                  # rewrites data/scores_defaults.jsonl
    OMP_NUM_THREADS=1 python data/scores_defaults.py ebm ring-sharp   # only these runs, appended

One JSON line per run: the model, data, seed and steps, the process's CPU seconds for training (a busy
machine inflates them far less than the wall-clock ``train_seconds``), the test metrics (the EBM's
quadrature NLL beside the entropy; the NCSN's DSM loss) and the sample scores (``modes_captured``,
``high_quality_frac``, ``mode_std_ratio`` on ``ring-sharp``; ``energy_distance`` on both).
"""

import json
import platform
import sys
from pathlib import Path

import torch

from dgm import run

OUT = Path(__file__).with_name("scores_defaults.jsonl")
MODELS, DATA, SEEDS = ("ebm", "ncsn"), ("ring", "ring-sharp"), (0, 1, 2)
KEYS = ("steps", "best_step", "train_seconds", "test_nll_nats", "entropy_nats", "test_quadrature_error_nats",
        "test_dsm_loss", "modes_captured", "high_quality_frac", "mode_std_ratio", "energy_distance",
        "sample_ms_per_example", "sampling_passes", "params")


def one_run(name: str, data: str, seed: int) -> dict:
    model, history, result = run.train(name, data, seed=seed, progress=False, threads=1)
    line = {"model": name, "data": data, "seed": seed, "train_cpu_seconds": round(history.cpu_seconds, 2)}
    line.update({key: result[key] for key in KEYS if key in result})
    line["command"] = f"python -m dgm train {name} --data {data} --seed {seed} --threads 1"
    line["torch"], line["machine"] = torch.__version__, platform.machine()
    return line


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    models = [a for a in argv if a in MODELS] or MODELS
    datas = [a for a in argv if a in DATA] or DATA
    if not argv:
        OUT.write_text("")
    for name in models:
        for data in datas:
            for seed in SEEDS:
                line = one_run(name, data, seed)
                print(json.dumps(line), flush=True)
                with OUT.open("a") as f:
                    f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
