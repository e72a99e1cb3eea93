"""Chapter 8's second comparison: every family's quality against the CPU time it trained for.

The main table shows each family at its own default run (from seconds to minutes). Here each family
trains at several step counts chosen so that its training costs about 10, 30 and 90 CPU-seconds on one
thread (a short probe measures each model's seconds per step first), and the same test metrics as
``python -m dgm compare`` are taken after each run. The clock is the process's CPU time with one
thread, which a busy machine inflates far less than wall-clock time.

    OMP_NUM_THREADS=1 python data/compare_budgets.py        # rewrites data/compare_budgets.jsonl

One JSON line per run: the model, the steps it ran (rerun a line with
``python -m dgm train MODEL --data digits --seed 0 --steps STEPS --threads 1``), its CPU and wall
seconds, the test NLL or bound and its kind, FD and class balance of 1,000 samples.
"""

import json
import platform
import sys
import time
from pathlib import Path

import torch

from dgm import compare, registry, run

OUT = Path(__file__).with_name("compare_budgets.jsonl")
CPU_BUDGETS = (10, 30, 90)
PROBE_STEPS = 20
NO_WALL_CLOCK = 10**7  # the runs stop by steps, not by the defaults' wall-clock budgets


def seconds_per_step(name: str) -> float:
    _, history, _ = run.train(name, "digits", seed=0, steps=PROBE_STEPS, budget_seconds=NO_WALL_CLOCK,
                              progress=False, sample_quality=False, threads=1, eval_every=10**6)
    return history.cpu_seconds / max(history.steps, 1)


def train_for(name: str, chapter: int, family: str, steps: int, budget: float | None) -> dict:
    torch.manual_seed(0)
    model, history, result = run.train(name, "digits", seed=0, steps=steps, budget_seconds=NO_WALL_CLOCK,
                                       progress=False, threads=1)
    nll, kind = compare.likelihood_of(result)
    return {"model": name, "chapter": chapter, "family": family, "target_cpu_seconds": budget,
            "steps": history.steps, "stopped_because": history.stopped_because,
            "cpu_seconds": history.cpu_seconds, "wall_seconds": history.seconds,
            "nll_nats": nll, "nll_kind": kind, "fd": result.get("fd"),
            "class_balance": result.get("class_balance")}


def main() -> None:
    torch.set_num_threads(1)
    lines = []
    for name, chapter, family in compare.ENTRIES:
        if registry.get(name).train.get("max_steps") == 0:  # closed form: no training to budget
            lines.append(train_for(name, chapter, family, 0, None))
        else:
            per_step = seconds_per_step(name)
            for budget in CPU_BUDGETS:
                lines.append(train_for(name, chapter, family, max(1, round(budget / per_step)), budget))
        print(json.dumps(lines[-1]), file=sys.stderr)
    stamp = {"command": "OMP_NUM_THREADS=1 python data/compare_budgets.py", "date": time.strftime("%Y-%m-%d"),
             "machine": platform.machine(), "torch": torch.__version__}
    OUT.write_text("".join(json.dumps(line | stamp) + "\n" for line in lines))


if __name__ == "__main__":
    main()
