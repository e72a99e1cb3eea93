"""Sample quality vs network evaluations of the shipped guided flow-matching checkpoint on digits.

For each ODE solver and number of steps, 1,000 samples (seeded) are scored by the digit classifier's
Fréchet distance to the test split (``dgm.run``'s metric), for the unconditional branch (w = -1, the
null label) and the conditional model with guidance weights w = 0 and w = 1 (labels cycle through the
digits, as ``dgm.run.score_samples``). Writes ``data/flow_matching_digits_nfe.jsonl``, one line per
setting. Run: ``python data/flow_matching_digits_nfe.py`` (single-threaded, about a minute).
"""

import json
import time
from pathlib import Path

import torch

from dgm import data, metrics, run
from dgm.classifier import load_classifier

torch.set_num_threads(1)
HERE = Path(__file__).parent
model, _ = run.load_checkpoint(str(HERE / "checkpoints" / "fm-guided-digits-seed0.pt"))
test = data.load("digits", "test")
classifier = load_classifier("digits")
reference = classifier.features(test.x)
labels = torch.arange(1000) % 10
rows = []
for sampler, steps in (("euler", 5), ("euler", 10), ("euler", 20), ("heun", 3), ("heun", 5), ("heun", 10)):
    for w in (-1.0, 0.0, 1.0):
        torch.manual_seed(0)
        start = time.perf_counter()
        samples = model.sample(1000, labels=labels, guidance=w, sampler=sampler, steps=steps)
        ms = 1000 * (time.perf_counter() - start) / 1000
        row = {"sampler": sampler, "steps": steps, "network_evaluations": model.evaluations(sampler, steps),
               "guidance": w, "fd": metrics.frechet_distance(classifier.features(samples), reference),
               "class_accuracy": float((classifier.predict(samples) == labels).double().mean()),
               "sample_ms_per_example": ms}
        rows.append(row)
        print(json.dumps(row), flush=True)
(HERE / "flow_matching_digits_nfe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
