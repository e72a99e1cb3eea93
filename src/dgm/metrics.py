"""Units and summaries for the numbers the book reports.

Negative log-likelihoods are in **nats per example** (natural log) unless a
name says otherwise; bits per dimension divide by ``D ln 2``.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Iterable

import torch


def nats_to_bpd(nats: float, dims: int) -> float:
    """Nats per example -> bits per dimension: ``nats / (dims * ln 2)``."""
    if dims <= 0:
        raise ValueError(f"dims must be positive, got {dims}")
    return nats / (dims * math.log(2))


def bpd_to_nats(bpd: float, dims: int) -> float:
    """Bits per dimension -> nats per example."""
    if dims <= 0:
        raise ValueError(f"dims must be positive, got {dims}")
    return bpd * dims * math.log(2)


def summarize(values: Iterable[float]) -> dict[str, float]:
    """Median, mean, standard deviation, standard error and count of ``values``.

    The book quotes medians over seeds (timings and small-sample results are
    noisy); the standard error says how far the mean can be trusted.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize needs at least one value")
    n = len(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "std": std,
        "se": std / math.sqrt(n),
        "n": n,
    }


def kl_monte_carlo(
    p_sample: Callable[[int], torch.Tensor],
    log_p: Callable[[torch.Tensor], torch.Tensor],
    log_q: Callable[[torch.Tensor], torch.Tensor],
    n: int,
) -> tuple[float, float]:
    """Monte Carlo estimate of KL(p || q) = E_p[log p(x) - log q(x)] and its standard error.

    Args:
        p_sample: draws ``n`` samples from p, shape ``(n, ...)``.
        log_p, log_q: log-densities of p and q, ``(n, ...) -> (n,)``.
        n: number of samples; the standard error shrinks like ``1 / sqrt(n)``.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2 to estimate a standard error, got {n}")
    x = p_sample(n)
    diff = (log_p(x) - log_q(x)).double()
    if diff.shape != (n,):
        raise ValueError(f"log_p and log_q must return shape ({n},), got {tuple(diff.shape)}")
    return float(diff.mean()), float(diff.std() / math.sqrt(n))


# ---------------------------------------------------------------------------
# sample quality: the metrics for families without a likelihood (GANs), and a
# second opinion for those with one
# ---------------------------------------------------------------------------
def _check_points(name: str, x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1, got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has {x.shape[1]} columns but the modes have {dim}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.double()


def mode_coverage(samples: torch.Tensor, modes: torch.Tensor, std: float) -> dict[str, float]:
    """How many mixture modes a sampler reaches, and how many samples land on one.

    The protocol of VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et al., 2018)
    for mixtures of isotropic Gaussians: a sample is *high quality* if it lies
    within 3 standard deviations of its nearest mode; a mode is *captured* if it
    is the nearest mode of at least one high-quality sample. The papers draw
    2,500 samples.

    Args:
        samples: ``(N, D)`` generated points.
        modes: ``(K, D)`` the mixture's means.
        std: the components' standard deviation (the same in every direction).

    Returns:
        ``{"modes_captured": int in 0..K, "high_quality_frac": float in [0, 1]}``.
    """
    modes = _check_points("modes", modes)
    samples = _check_points("samples", samples, modes.shape[1])
    if not (isinstance(std, (int, float)) and std > 0):
        raise ValueError(f"std must be a positive number, got {std!r}")
    distance, nearest = torch.cdist(samples, modes).min(dim=1)
    high_quality = distance <= 3 * std
    return {
        "modes_captured": int(nearest[high_quality].unique().numel()),
        "high_quality_frac": float(high_quality.double().mean()),
    }


def mode_spread(samples: torch.Tensor, modes: torch.Tensor, std: float) -> float:
    """The samples' spread around the modes they land on: the pooled per-coordinate standard deviation
    of the high-quality samples (within 3 ``std`` of their nearest mode) about their mode's sample mean.

    :func:`mode_coverage` cannot see a sampler whose modes are narrower than the data's (it even scores
    it above a perfect sampler); this can. Compare it with the same number for true samples
    (``mode_std_ratio`` in :func:`dgm.run.score_samples`: 1.0 is perfect, below 1 too narrow, above too wide).
    Returns NaN when no mode holds two high-quality samples.
    """
    modes = _check_points("modes", modes)
    samples = _check_points("samples", samples, modes.shape[1])
    distance, nearest = torch.cdist(samples, modes).min(dim=1)
    keep = distance <= 3 * std
    points, owner = samples[keep].double(), nearest[keep]
    counts = torch.bincount(owner, minlength=len(modes)).double()
    means = torch.zeros(len(modes), modes.shape[1], dtype=torch.float64).index_add_(0, owner, points)
    means = means / counts.clamp(min=1)[:, None]
    squares = (points - means[owner]).pow(2).sum()
    degrees = (counts[counts >= 1] - 1).sum() * modes.shape[1]
    return float((squares / degrees).sqrt()) if degrees > 0 else math.nan


def energy_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two samples.

    Zero exactly when the two distributions are equal (Székely & Rizzo), and it
    needs no density, so it scores samplers of any family. Within-sample means
    leave out the zero diagonal (unbiased U-statistics).

    Args:
        a: ``(N, D)`` and b: ``(M, D)`` samples, ``N, M >= 2``.
    """
    a = _check_points("a", a)
    b = _check_points("b", b, a.shape[1])
    if len(a) < 2 or len(b) < 2:
        raise ValueError("energy_distance needs at least 2 points in each sample")

    def mean_distance(x: torch.Tensor, y: torch.Tensor, same: bool) -> float:
        total = sum(float(torch.cdist(x[i:i + chunk], y).sum()) for i in range(0, len(x), chunk))
        pairs = len(x) * (len(y) - 1) if same else len(x) * len(y)
        return total / pairs

    return 2 * mean_distance(a, b, False) - mean_distance(a, a, True) - mean_distance(b, b, True)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``: the FID formula
    (Heusel et al., 2017), here in the feature space of the book's digit
    classifier (:mod:`dgm.classifier`) because Inception weights cannot be
    downloaded. Biased upwards for small samples: compare numbers computed
    with the same sample sizes.

    Args:
        features_a: ``(N, F)``; features_b: ``(M, F)``; ``N, M >= 2``.
    """
    a = _check_points("features_a", features_a)
    b = _check_points("features_b", features_b, a.shape[1])
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance needs at least 2 feature vectors in each set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    # tr((S_a S_b)^(1/2)) = sum of sqrt of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric PSD)
    eval_a, evec_a = torch.linalg.eigh(cov_a)
    sqrt_a = evec_a @ torch.diag(eval_a.clamp(min=0).sqrt()) @ evec_a.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt)


def class_balance(predicted: torch.Tensor, num_classes: int = 10) -> float:
    """Perplexity of the predicted-class histogram over ``num_classes``: 1 = all classes equally often.

    ``exp(H(histogram)) / num_classes``; a sampler that draws a single digit scores
    ``1 / num_classes``. A quick mode-collapse detector for image models.
    """
    if predicted.ndim != 1 or len(predicted) == 0:
        raise ValueError(f"predicted must be a non-empty 1-D tensor of class indices, got shape {tuple(predicted.shape)}")
    freq = torch.bincount(predicted.long(), minlength=num_classes).double() / len(predicted)
    entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
    return float(entropy.exp() / num_classes)
