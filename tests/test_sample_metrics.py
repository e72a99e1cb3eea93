"""Sample-quality metrics (mode coverage, energy distance, Fréchet distance, class
balance) against independent computations and constructed cases, and the shipped
digit classifiers against their recorded accuracy."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from dgm import classifier as clf
from dgm import data, metrics, run


# ---- mode coverage (VEEGAN / PacGAN protocol) --------------------------------
@pytest.mark.parametrize("name,k", [("ring-sharp", 8), ("grid-sharp", 25)])
def test_true_samples_capture_every_mode(name, k):
    density = data.toy_density(name)
    result = metrics.mode_coverage(density.sample(2500, seed=0), density.means, density.std)
    assert result["modes_captured"] == k
    # within 3 sigma in 2-D: P(chi2_2 <= 9) = 1 - exp(-4.5) = 0.9889
    assert abs(result["high_quality_frac"] - (1 - math.exp(-4.5))) < 0.01


def test_a_collapsed_sampler_captures_one_mode():
    density = data.toy_density("ring-sharp")
    samples = density.means[3] + density.std * torch.randn(2500, 2, generator=torch.Generator().manual_seed(0))
    result = metrics.mode_coverage(samples, density.means, density.std)
    assert result["modes_captured"] == 1
    assert result["high_quality_frac"] > 0.95


def test_far_away_samples_are_not_high_quality():
    density = data.toy_density("grid-sharp")
    samples = torch.full((2500, 2), 1.0)  # halfway between grid points, 20 sigma from any mode
    result = metrics.mode_coverage(samples, density.means, density.std)
    assert result == {"modes_captured": 0, "high_quality_frac": 0.0}


def test_mode_coverage_scales_distances_by_std():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    samples = torch.tensor([[0.25, 0.0], [10.0, 0.35]])
    assert metrics.mode_coverage(samples, modes, std=0.1) == {"modes_captured": 1, "high_quality_frac": 0.5}
    assert metrics.mode_coverage(samples, modes, std=0.2) == {"modes_captured": 2, "high_quality_frac": 1.0}


def test_mode_coverage_rejects_bad_inputs():
    modes = torch.zeros(8, 2)
    with pytest.raises(ValueError, match="columns"):
        metrics.mode_coverage(torch.zeros(10, 3), modes, 0.1)
    with pytest.raises(ValueError, match="std"):
        metrics.mode_coverage(torch.zeros(10, 2), modes, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.mode_coverage(torch.full((10, 2), float("nan")), modes, 0.1)


# ---- energy distance ---------------------------------------------------------
def test_energy_distance_matches_scipy_in_1d():
    gen = np.random.default_rng(0)
    a, b = gen.normal(0, 1, 1500), gen.normal(0.5, 1.3, 1200)
    ours = metrics.energy_distance(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None])
    # scipy returns sqrt(2E|X-Y| - E|X-X'| - E|Y-Y'|) with V-statistics (diagonal included);
    # ours leaves the zero diagonal out, which adds E|X-X'|/n + E|Y-Y'|/m ~ 1e-3 here
    theirs = scipy.stats.energy_distance(a, b) ** 2
    assert ours == pytest.approx(theirs, abs=3e-3)


def test_energy_distance_separates_distributions():
    density = data.toy_density("ring")
    same = metrics.energy_distance(density.sample(2000, seed=1), density.sample(2000, seed=2))
    shifted = metrics.energy_distance(density.sample(2000, seed=1), density.sample(2000, seed=2) + 0.3)
    assert abs(same) < 5e-3
    assert shifted > 0.05


# ---- Fréchet distance --------------------------------------------------------
def _frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_frechet_distance_matches_scipy_sqrtm():
    gen = np.random.default_rng(0)
    a = gen.normal(size=(500, 6)) @ gen.normal(size=(6, 6))
    b = gen.normal(size=(400, 6)) @ gen.normal(size=(6, 6)) + 0.7
    ours = metrics.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert ours == pytest.approx(_frechet_scipy(a, b), rel=1e-6)


def test_frechet_distance_of_known_gaussians():
    # two isotropic Gaussians N(0, I) and N(m, 4I) in 3-D: |m|^2 + 3 * (1 + 4 - 2 * 2)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=gen)
    b = 2 * torch.randn(200_000, 3, generator=gen) + torch.tensor([1.0, 0.0, 2.0])
    assert metrics.frechet_distance(a, b) == pytest.approx(5 + 3, rel=0.02)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_class_balance():
    assert metrics.class_balance(torch.arange(1000) % 10) == pytest.approx(1.0)
    assert metrics.class_balance(torch.full((1000,), 3)) == pytest.approx(0.1)
    assert 0.1 < metrics.class_balance(torch.arange(1000) % 5) < 1.0


# ---- the shipped classifiers ------------------------------------------------
MANIFEST = json.loads((clf.CHECKPOINT_DIR / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_shipped_classifier_reproduces_its_recorded_accuracy(name):
    entry = MANIFEST[f"classifier_{name}.pt"]
    ckpt = torch.load(clf.CHECKPOINT_DIR / f"classifier_{name}.pt", weights_only=True)
    assert (clf.CHECKPOINT_DIR / f"classifier_{name}.pt").stat().st_size <= 2 * 1024 * 1024
    assert ckpt["config"]["size"] == (8 if name == "digits" else 28)
    model = clf.load_classifier(name)
    test = data.load(name, "test")
    acc = clf.accuracy(model, test.x, test.y)
    assert acc == pytest.approx(entry["metrics"]["test_accuracy"], abs=0.005)
    assert acc > 0.93, "the yardstick must actually recognise digits"
    assert entry["command"].startswith(f"python -m dgm classifier --data {name}")


def test_classifier_checks_its_input_and_its_file(tmp_path):
    model = clf.load_classifier("digits")
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        model.features(torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="no digit classifier"):
        clf.load_classifier("ring")
    # a corrupted checkpoint is refused with a fix in the message
    (tmp_path / "classifier_digits.pt").write_bytes(
        (clf.CHECKPOINT_DIR / "classifier_digits.pt").read_bytes() + b"x")
    (tmp_path / "manifest.json").write_text((clf.CHECKPOINT_DIR / "manifest.json").read_text())
    with pytest.raises(ValueError, match="SHA-256"):
        clf.load_classifier("digits", directory=tmp_path)


def test_augmentation_shifts_without_losing_ink():
    x = torch.zeros(5, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0  # ink away from the border survives any shift of 1
    shifted = clf._augment(x, 1, torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert not torch.equal(shifted, x)


# ---- run.score_samples: any object with sample(n) -----------------------------
class _Sampler(torch.nn.Module):
    """A stand-in 'model' whose sample(n) returns given points or images."""

    def __init__(self, draw, num_classes=None):
        super().__init__()
        self.draw = draw
        if num_classes:
            self.num_classes = num_classes
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def sample(self, n, labels=None):
        return self.draw(n) if labels is None else self.draw(n, labels)


def test_score_samples_on_sharp_toys():
    density = data.toy_density("ring-sharp")
    good = run.score_samples(_Sampler(lambda n: density.sample(n, seed=7)), data.load("ring-sharp", "test"))
    assert good["modes_captured"] == 8 and good["high_quality_frac"] > 0.97
    collapsed = run.score_samples(_Sampler(lambda n: density.means[:1].repeat(n, 1)), data.load("ring-sharp", "test"))
    assert collapsed["modes_captured"] == 1
    assert 0.95 < good["mode_std_ratio"] < 1.05 and abs(good["energy_distance"]) < 0.01


@pytest.mark.parametrize("name", ["ring-sharp", "grid-sharp"])
def test_mode_std_ratio_sees_samples_narrower_or_wider_than_the_data(name):
    """A sampler can score a perfect high-quality fraction with its modes shrunk to points; the spread
    ratio and the energy distance cannot be fooled that way."""
    density = data.toy_density(name)

    def around_modes(scale):
        def draw(n):
            x = density.sample(n, seed=11).double()
            centre = density.means[torch.cdist(x, density.means.double()).argmin(1)]
            return (centre + scale * (x - centre)).float()
        return _Sampler(draw)

    scores = {scale: run.score_samples(around_modes(scale), data.load(name, "test")) for scale in (0.5, 1.0, 1.5)}
    assert 0.95 < scores[1.0]["mode_std_ratio"] < 1.05
    assert 0.45 < scores[0.5]["mode_std_ratio"] < 0.55
    assert scores[1.5]["mode_std_ratio"] > 1.3
    assert scores[0.5]["high_quality_frac"] >= scores[1.0]["high_quality_frac"]  # what the old metric rewards
    assert scores[0.5]["energy_distance"] > scores[1.0]["energy_distance"] + 1e-4
    assert math.isnan(metrics.mode_spread(density.means[:1] + 100.0, density.means, density.std))


def test_score_samples_on_images_rank_real_above_blank():
    train = data.load("digits", "train")
    real = run.score_samples(_Sampler(lambda n: train.x[:n]), data.load("digits", "test"))
    blank = run.score_samples(_Sampler(lambda n: torch.zeros(n, 1, 8, 8)), data.load("digits", "test"))
    assert real["fd"] < blank["fd"] / 5
    assert real["class_balance"] > 0.9 and blank["class_balance"] == pytest.approx(0.1)


def test_score_samples_class_accuracy_for_conditional_models():
    train = data.load("digits", "train")
    by_label = [train.x[train.y == c] for c in range(10)]

    def right(n, labels):
        return torch.stack([by_label[int(c)][i // 10] for i, c in enumerate(labels)])

    def wrong(n, labels):
        return right(n, (labels + 1) % 10)

    assert run.score_samples(_Sampler(right, 10), data.load("digits", "test"), n=500)["class_accuracy"] > 0.9
    assert run.score_samples(_Sampler(wrong, 10), data.load("digits", "test"), n=500)["class_accuracy"] < 0.1
