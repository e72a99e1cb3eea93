"""The shipped checkpoints: small, made by a recorded command, and they reproduce
their recorded metrics when reloaded with ``weights_only=True``."""

import json

import pytest
import torch

from dgm import compare, data, run
from dgm.classifier import CHECKPOINT_DIR

MANIFEST = json.loads((CHECKPOINT_DIR / "manifest.json").read_text())
MODELS = sorted(name for name in MANIFEST if not name.startswith("classifier_"))

pytestmark = pytest.mark.slow


def test_the_comparison_has_a_checkpoint_per_family():
    for name, _, _ in compare.ENTRIES:
        assert f"{name}-digits-seed0.pt" in MANIFEST, f"no shipped checkpoint for {name} (chapter 8 loads it)"


def test_sizes_and_recorded_commands():
    total = 0
    for name, entry in MANIFEST.items():
        path = CHECKPOINT_DIR / name
        size = path.stat().st_size
        total += size
        assert size <= 2 * 1024 * 1024, f"{name} is {size / 2**20:.1f} MB; the limit is 2 MB per checkpoint"
        assert entry["command"].startswith("python -m dgm "), entry["command"]
        if name in MODELS:
            assert "--out data/checkpoints" in entry["command"] and "--manifest" in entry["command"]
    assert total <= 25 * 1024 * 1024, f"checkpoints total {total / 2**20:.1f} MB; the limit is 25 MB"


# the metric each family's row reports, and how closely a reload must reproduce it
# (all evaluations are seeded: the slack only covers floating-point differences between machines)
TOLERANCE = {"test_nll_nats": 0.02, "test_nll_bound_nats": 0.05, "test_neg_elbo_nats": 0.05}


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_reproduces_its_recorded_metric(name):
    ckpt = torch.load(CHECKPOINT_DIR / name, weights_only=True)  # plain tensors and values only
    recorded = MANIFEST[name]["metrics"]
    model, _ = run.load_checkpoint(str(CHECKPOINT_DIR / name))
    measured = run.test_metrics(model, data.load(ckpt["data"], "test", binarize=ckpt.get("binarize")),
                                sample_quality=False)
    keys = [key for key in TOLERANCE if key in recorded]
    for key in keys:
        assert measured[key] == pytest.approx(recorded[key], abs=TOLERANCE[key]), key
    if not keys:  # no likelihood (a GAN): its seeded samples' Fréchet distance instead
        assert "fd" in recorded, f"{name} records no metric to reproduce"
        fd = run.test_metrics(model, data.load(ckpt["data"], "test"))["fd"]
        assert fd == pytest.approx(recorded["fd"], rel=0.05)
