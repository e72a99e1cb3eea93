"""How much the diffusion bound's estimate swings with its random steps: the estimator before and after
``dgm.diffusion._bound_steps`` evaluated the first and last steps exactly.

    OMP_NUM_THREADS=1 python data/diffusion_bound_estimator.py   # appends to data/diffusion_bound_estimator.jsonl

On the shipped ``ddpm-digits-seed0.pt`` and the digits test split: the full bound (all T - 1 KL terms,
one draw of each x_t), then 100-step estimates with seeds 0..9, stratified over all steps (the old
estimator) and exact at both ends (the current one).
"""

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from dgm import data, run
from dgm import diffusion

HERE = Path(__file__).parent


def old_steps(T, num_timesteps):
    edges = torch.linspace(1, T, num_timesteps + 1)
    steps = [int(lo + torch.rand(()) * (hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]
    return [(t, (T - 1) / num_timesteps) for t in steps]


def bound(model, x, num_timesteps, seed, steps_rule):
    original = diffusion._bound_steps
    diffusion._bound_steps = steps_rule
    try:
        torch.manual_seed(seed)
        return float(model.bound_terms(x, num_timesteps)["total"].mean())
    finally:
        diffusion._bound_steps = original


def main():
    model, _ = run.load_checkpoint(str(HERE / "checkpoints" / "ddpm-digits-seed0.pt"))
    model.eval()
    x = data.load("digits", "test").x
    start = time.perf_counter()
    full = bound(model, x, None, 0, diffusion._bound_steps)
    record = {"checkpoint": "ddpm-digits-seed0.pt", "split": "test", "full_bound_nats": full,
              "full_seconds": time.perf_counter() - start, "num_timesteps": 100,
              "command": "OMP_NUM_THREADS=1 python data/diffusion_bound_estimator.py",
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    for name, rule in (("stratified", old_steps), ("ends_exact", diffusion._bound_steps)):
        values = [bound(model, x, 100, seed, rule) for seed in range(10)]
        record[name] = {"values": values, "mean": statistics.mean(values), "std": statistics.stdev(values),
                        "min": min(values), "max": max(values)}
    with open(HERE / "diffusion_bound_estimator.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: (v if not isinstance(v, dict) else {a: b for a, b in v.items() if a != "values"})
                      for k, v in record.items()}, indent=1))


if __name__ == "__main__":
    main()
