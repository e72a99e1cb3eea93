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
