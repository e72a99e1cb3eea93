"""Checkers for assignment 6: the forward process in one jump, and the DDIM update.

The learner writes two functions; each checker compares them with
:mod:`dgm.diffusion` on shown and hidden cases (hidden schedules of several
lengths, hidden shapes, both ends of the chain, several ``eta``):

* ``q_sample(x0, t, noise, betas) -> x_t``:
  ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` with ``abar_t = prod_{s<=t} (1 - beta_s)``,
  ``t`` a long tensor ``(B,)`` of indices ``0..T-1``;
* ``ddim_step(eps, x_t, t, t_prev, betas, eta, noise) -> x_prev``: one DDIM
  step from index ``t`` to the earlier index ``t_prev`` (``-1`` = the data,
  where ``abar = 1``), with ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``.

Named mistakes (each gets its own hint): alpha instead of alpha-bar,
``1 - abar`` instead of its square root, off-by-one indexing of ``t``, ``eta``
ignored, ``sigma^2`` left out of the direction term, and ``t_prev = -1`` read
as Python's "last element".

Each checker returns a :class:`~dgm.checks.CheckResult`; with
``DGM_CHECKS_STRICT=1`` a failure raises ``AssertionError`` instead.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import Case, CheckResult, Mistake, finish, run_checks, summarize_value

__all__ = ["check_q_sample", "check_ddim_step", "q_sample_cases", "ddim_step_cases", "Q_SAMPLE_MISTAKES",
           "DDIM_MISTAKES"]


# ---------------------------------------------------------------------------
# references and schedules
# ---------------------------------------------------------------------------
def _schedule(betas: torch.Tensor):
    from dgm.diffusion import Schedule

    return Schedule(betas.double())


def _reference_q_sample(x0, t, noise, betas):
    from dgm.diffusion import q_sample

    return q_sample(x0.double(), t, noise.double(), _schedule(betas))


def _reference_ddim_step(eps, x_t, t, t_prev, betas, eta, noise):
    from dgm.diffusion import ddim_step

    return ddim_step(eps.double(), x_t.double(), t, t_prev, _schedule(betas), eta, noise.double())


def _random_betas(seed: int, timesteps: int) -> torch.Tensor:
    """An increasing schedule that is neither linear nor cosine, so no formula for a known one can pass."""
    gen = torch.Generator().manual_seed(seed)
    return torch.sort(torch.rand(timesteps, generator=gen, dtype=torch.float64) * 0.08 + 1e-3).values


def _linear(timesteps: int) -> torch.Tensor:
    from dgm.diffusion import linear_betas

    return linear_betas(timesteps)


def _cosine(timesteps: int) -> torch.Tensor:
    from dgm.diffusion import cosine_betas

    return cosine_betas(timesteps)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------
# 1. q_sample
# ---------------------------------------------------------------------------
def _view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1)))


def _q_with(abar_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise_scale: Callable = torch.sqrt):
    """A q_sample built from a (possibly wrong) way to get abar_t, and a (possibly wrong) noise scale."""
    def q(x0, t, noise, betas):
        abar = _view(abar_of(betas.double(), t), x0)
        return abar.sqrt() * x0.double() + noise_scale(1 - abar) * noise.double()
    return q


def _cumprod(betas):
    return torch.cumprod(1 - betas, 0)


Q_SAMPLE_MISTAKES = (
    Mistake("alpha_t instead of alpha-bar_t", _q_with(lambda b, t: (1 - b)[t]),
            "q(x_t | x_0) jumps t+1 steps at once: use abar_t = prod_{s<=t} (1 - beta_s) "
            "(torch.cumprod(1 - betas, 0)[t]), not the one-step alpha_t = 1 - beta_t."),
    Mistake("(1 - abar_t) instead of sqrt(1 - abar_t) on the noise", _q_with(lambda b, t: _cumprod(b)[t], lambda v: v),
            "1 - abar_t is the VARIANCE of the noise; multiply the standard normal noise by its square root."),
    Mistake("abar_t instead of sqrt(abar_t) on x0", lambda x0, t, n, b: (
        _view(_cumprod(b.double())[t], x0) * x0.double() + (1 - _view(_cumprod(b.double())[t], x0)).sqrt() * n.double()),
            "the mean of q(x_t | x_0) is sqrt(abar_t) x_0: take the square root of abar_t."),
    Mistake("off by one: abar_{t-1} (one step too few)",
            _q_with(lambda b, t: torch.cat([torch.ones(1, dtype=b.dtype), _cumprod(b)])[t]),
            "index t = 0 has already been noised once: abar_0 = 1 - beta_0, so use cumprod(1 - betas)[t] "
            "(do not prepend a 1 or use t - 1)."),
    Mistake("off by one: abar_{t+1} (one step too many)",
            _q_with(lambda b, t: torch.cat([_cumprod(b), _cumprod(b)[-1:]])[t + 1]),
            "index t is the (t+1)-th noising step, and abar_t = cumprod(1 - betas)[t]: no t + 1."),
)


def _validate_like(name: str, shape_of: Callable[[tuple], tuple]) -> Callable[[Any, tuple], str | None]:
    def validate(got: Any, args: tuple) -> str | None:
        shape = shape_of(args)
        if not isinstance(got, torch.Tensor):
            return f"{name} should be a torch.Tensor of shape {shape}, got {summarize_value(got)}"
        if tuple(got.shape) != shape:
            extra = ""
            if got.ndim > len(shape) or (got.ndim == len(shape) and got.shape[0] != shape[0]):
                extra = (" (broadcasting went wrong: reshape the per-example coefficients to (B, 1, ..., 1), "
                         "e.g. abar[t].view(-1, *[1] * (x.ndim - 1)))")
            return f"{name} has shape {tuple(got.shape)}, expected {shape} (the shape of the input){extra}"
        if not got.is_floating_point():
            return f"{name} must be floating point, got {got.dtype}"
        if not torch.isfinite(got).all():
            return f"{name} contains NaN or inf"
        return None
    return validate


def q_sample_cases() -> list[Case]:
    x0 = torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 0.0]], dtype=torch.float64)
    noise = torch.tensor([[0.3, 0.1], [-1.0, 0.5], [1.0, -2.0]], dtype=torch.float64)
    betas3 = torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64)
    abar = torch.cumprod(1 - betas3, 0)
    t = torch.tensor([0, 1, 2])
    shown = abar[t].sqrt()[:, None] * x0 + (1 - abar[t]).sqrt()[:, None] * noise
    return [
        Case("3 points, betas = (0.1, 0.2, 0.5), t = (0, 1, 2)", (x0, t, noise, betas3), expected=shown,
             hint="abar = cumprod(1 - betas) = (0.9, 0.72, 0.36); row i uses abar[t[i]], reshaped to (B, 1) "
                  "so that it broadcasts over the row."),
        Case("8x8 images, linear schedule T=1000, t spread over the chain",
             lambda: (_randn(1, 5, 1, 8, 8), torch.tensor([0, 9, 250, 500, 999]), _randn(2, 5, 1, 8, 8), _linear(1000)),
             reference=_reference_q_sample,
             inputs="x0, noise: (5, 1, 8, 8); t = (0, 9, 250, 500, 999); betas: linear 1e-4..0.02, T=1000",
             hint="one coefficient per example: reshape abar[t] to (B, 1, 1, 1) so that it broadcasts over the image."),
        Case("hidden: random increasing schedule T=50, shape (7, 3, 5)",
             lambda: (_randn(3, 7, 3, 5), torch.tensor([0, 1, 2, 10, 30, 48, 49]), _randn(4, 7, 3, 5),
                      _random_betas(5, 50)),
             reference=_reference_q_sample, hidden=True),
        Case("hidden: cosine schedule T=200, points (6, 2), repeated t",
             lambda: (_randn(6, 6, 2), torch.tensor([3, 3, 0, 199, 100, 1]), _randn(7, 6, 2), _cosine(200)),
             reference=_reference_q_sample, hidden=True),
        Case("hidden: T=7, one example of shape (1, 4), last step",
             lambda: (_randn(8, 1, 4), torch.tensor([6]), _randn(9, 1, 4), _random_betas(10, 7)),
             reference=_reference_q_sample, hidden=True),
    ]


def check_q_sample(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``q_sample(x0, t, noise, betas) -> x_t``, shaped like ``x0``."""
    cases = q_sample_cases()
    for case in cases:
        case.mistakes = Q_SAMPLE_MISTAKES
    result = run_checks(fn, cases, title="q_sample", arg_names=("x0", "t", "noise", "betas"),
                        validate=_validate_like("x_t", lambda args: tuple(args[0].shape)), atol=1e-6, rtol=1e-5)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 2. ddim_step
# ---------------------------------------------------------------------------
def _ddim_with(abar_prev_of=None, abar_of=None, use_eta=True, sigma_in_direction=True):
    """A DDIM step with one part done in a (possibly wrong) way; defaults reproduce the right answer."""
    def step(eps, x_t, t, t_prev, betas, eta, noise):
        b = betas.double()
        abars = _cumprod(b)
        abar = abar_of(b, t) if abar_of else abars[t]
        if abar_prev_of:
            abar_prev = abar_prev_of(b, t, t_prev)
        else:
            abar_prev = abars[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        eps, x_t, noise = eps.double(), x_t.double(), noise.double()
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        e = eta if use_eta else 0.0
        sigma = e * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
        direction_var = 1 - abar_prev - (sigma**2 if sigma_in_direction else 0.0)
        return abar_prev.sqrt() * x0 + direction_var.clamp(min=0).sqrt() * eps + sigma * noise
    return step


DDIM_MISTAKES = (
    Mistake("eta ignored (always deterministic)", _ddim_with(use_eta=False),
            "with eta > 0 DDIM adds sigma * noise, sigma = eta * sqrt((1 - abar_prev)/(1 - abar_t) * "
            "(1 - abar_t/abar_prev)), and the direction term shrinks to sqrt(1 - abar_prev - sigma^2) * eps."),
    Mistake("sigma^2 left out of the direction term", _ddim_with(sigma_in_direction=False),
            "the noise takes part of the variance: the direction pointing to x_t is "
            "sqrt(1 - abar_prev - sigma^2) * eps, not sqrt(1 - abar_prev) * eps."),
    Mistake("alpha instead of alpha-bar", _ddim_with(abar_prev_of=lambda b, t, tp: (1 - b)[tp] if tp >= 0
                                                     else torch.tensor(1.0, dtype=torch.float64),
                                                     abar_of=lambda b, t: (1 - b)[t]),
            "DDIM works with the cumulative products abar = cumprod(1 - betas), not the one-step alpha = 1 - beta."),
    Mistake("t_prev = -1 read as the last element (abar[-1])", _ddim_with(abar_prev_of=lambda b, t, tp: _cumprod(b)[tp]),
            "t_prev = -1 means the clean data, where abar = 1; in Python abar[-1] is the LAST step (pure noise). "
            "Handle t_prev < 0 separately."),
    Mistake("off by one: abar_prev = abar[t - 1] whatever t_prev is",
            _ddim_with(abar_prev_of=lambda b, t, tp: _cumprod(b)[t - 1] if t >= 1
                       else torch.tensor(1.0, dtype=torch.float64)),
            "DDIM jumps from t to t_prev, which may be many steps back: use abar[t_prev], not abar[t - 1]."),
    Mistake("off by one: abar_{t+1} and abar_{t_prev+1}",
            _ddim_with(abar_prev_of=lambda b, t, tp: _cumprod(b)[tp + 1],
                       abar_of=lambda b, t: torch.cat([_cumprod(b), _cumprod(b)[-1:]])[t + 1]),
            "index t already includes step t: abar_t = cumprod(1 - betas)[t], and t_prev = -1 (the data) has abar = 1."),
)


def _ddim_case(name: str, seed: int, shape: tuple[int, ...], t: int, t_prev: int, betas: Callable[[], torch.Tensor],
               eta: float, hidden: bool = True, hint: str = "") -> Case:
    def args() -> tuple:
        return (_randn(seed, *shape), _randn(seed + 1, *shape), t, t_prev, betas(), eta, _randn(seed + 2, *shape))

    return Case(name, args, reference=_reference_ddim_step, hidden=hidden, hint=hint,
                inputs=f"eps, x_t, noise: shape {shape}; t={t}, t_prev={t_prev}; eta={eta}")


def ddim_step_cases() -> list[Case]:
    return [
        _ddim_case("linear T=1000, 999 -> 949, eta=0 (deterministic)", 10, (4, 2), 999, 949, lambda: _linear(1000),
                   0.0, hidden=False, hint="x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t); "
                   "x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps when eta = 0."),
        _ddim_case("linear T=1000, 500 -> 450, eta=1", 20, (3, 1, 8, 8), 500, 450, lambda: _linear(1000), 1.0,
                   hidden=False, hint="with eta = 1, add sigma * noise and use sqrt(1 - abar_prev - sigma^2) for eps."),
        _ddim_case("linear T=1000, last step 49 -> -1 (the data)", 30, (5, 2), 49, -1, lambda: _linear(1000), 0.0,
                   hidden=False, hint="t_prev = -1 is the data: abar_prev = 1, so x_prev = x0_hat."),
        _ddim_case("hidden: cosine T=100, 60 -> 40, eta=0.5, shape (6, 3, 4)", 40, (6, 3, 4), 60, 40,
                   lambda: _cosine(100), 0.5),
        _ddim_case("hidden: random schedule T=30, 29 -> 28 (one step), eta=1", 50, (8, 2), 29, 28,
                   lambda: _random_betas(51, 30), 1.0),
        _ddim_case("hidden: random schedule T=30, 3 -> -1, eta=0.7", 60, (2, 5), 3, -1, lambda: _random_betas(61, 30),
                   0.7),
        _ddim_case("hidden: linear T=1000, 1 -> 0, eta=0.3", 70, (4, 1, 2, 2), 1, 0, lambda: _linear(1000), 0.3),
    ]


def check_ddim_step(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``ddim_step(eps, x_t, t, t_prev, betas, eta, noise) -> x_prev``, shaped like ``x_t``."""
    cases = ddim_step_cases()
    for case in cases:
        case.mistakes = DDIM_MISTAKES
    result = run_checks(fn, cases, title="ddim_step",
                        arg_names=("eps", "x_t", "t", "t_prev", "betas", "eta", "noise"),
                        validate=_validate_like("x_prev", lambda args: tuple(args[1].shape)), atol=1e-6, rtol=1e-5)
    return finish(result, strict)
