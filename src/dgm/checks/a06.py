"""Checkers for assignment 6: the forward process, the training loss, and the DDPM and DDIM updates.

The learner writes four functions; each checker compares them with
:mod:`dgm.diffusion` on shown and hidden cases (hidden schedules of several
lengths, hidden shapes, both ends of the chain, several ``eta``).

Step arguments are code indices, counted from 0 as in :mod:`dgm.diffusion` and
Hugging Face ``diffusers``: code index ``i`` is the book's step ``t = i + 1``
(``book/notation.md``, "Where the code counts differently"), so ``betas[i]``
is ``beta_{i+1}`` of the book's ``beta_1 .. beta_T`` and ``abar[i]`` is
``alpha-bar_{i+1}``; index ``-1`` stands for the data, step 0, where
``abar = 1``. The formulas below use the indices:

* ``q_sample(x0, t, noise, betas) -> x_t``:
  ``sqrt(abar[t]) x0 + sqrt(1 - abar[t]) noise`` with ``abar[t] = prod_{s<=t} (1 - betas[s])``,
  ``t`` a long tensor ``(B,)`` of indices ``0..T-1``;
* ``ddim_step(eps, x_t, t, t_prev, betas, eta, noise) -> x_prev``: one DDIM
  step from index ``t`` to the earlier index ``t_prev`` (``-1`` = the data,
  where ``abar = 1``), with ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``;
* ``noise_prediction_loss(eps_model, x0, t, noise, betas) -> scalar``: the
  DDPM training loss ``mean |noise - eps_model(x_t, t)|^2`` with ``x_t`` from
  ``q_sample``; judged by its value and by the gradient it sends to the
  network's parameters;
* ``ddpm_step(eps, x_t, t, betas, noise) -> x_{t-1}``: one ancestral step, the
  mean of the posterior ``q(x_{t-1} | x_t, x_0)`` at the guess ``x0_hat`` plus
  ``sqrt(beta~_t) noise``, no noise at index ``t = 0`` (step 1, whose step back is the data).

Every checker has float32 and float64 cases (the schedule stays float64) and
wants the answer in the dtype of ``x``.

Named mistakes (each gets its own hint): alpha instead of alpha-bar,
``1 - abar`` instead of its square root, off-by-one indexing of ``t``, ``eta``
ignored, ``sigma^2`` left out of the direction term, and ``t_prev = -1`` read
as Python's "last element".

Each checker returns a :class:`~dgm.checks.CheckResult`; with
``DGM_CHECKS_STRICT=1`` a failure raises ``AssertionError`` instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from . import (Case, CheckResult, Mistake, as_dtype, finish, parameter_gradient_problem, probe_case, run_checks,
               scalar_loss_problem, summarize_value)

__all__ = ["check_q_sample", "check_ddim_step", "check_noise_prediction_loss", "check_ddpm_step", "q_sample_cases",
           "ddim_step_cases", "Q_SAMPLE_MISTAKES", "DDIM_MISTAKES", "DDPM_MISTAKES", "LOSS_MISTAKES", "TinyDenoiser"]


# ---------------------------------------------------------------------------
# references and schedules
# ---------------------------------------------------------------------------
def _schedule(betas: torch.Tensor):
    from dgm.diffusion import Schedule

    return Schedule(betas.double())


def _reference_q_sample(x0, t, noise, betas):
    from dgm.diffusion import q_sample

    return q_sample(x0.double(), t, noise.double(), _schedule(betas)).to(x0.dtype)


def _reference_ddim_step(eps, x_t, t, t_prev, betas, eta, noise):
    from dgm.diffusion import ddim_step

    return ddim_step(eps.double(), x_t.double(), t, t_prev, _schedule(betas), eta, noise.double()).to(x_t.dtype)


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
            "q(x_t | x_0) jumps every step up to t at once: use alpha-bar_t, the product of (1 - beta_s) "
            "over steps 1..t, which is torch.cumprod(1 - betas, 0)[t] at code index t (step t + 1), "
            "not the one-step alpha = 1 - betas[t]."),
    Mistake("(1 - abar_t) instead of sqrt(1 - abar_t) on the noise", _q_with(lambda b, t: _cumprod(b)[t], lambda v: v),
            "1 - abar_t is the VARIANCE of the noise; multiply the standard normal noise by its square root."),
    Mistake("abar_t instead of sqrt(abar_t) on x0", lambda x0, t, n, b: (
        _view(_cumprod(b.double())[t], x0) * x0.double() + (1 - _view(_cumprod(b.double())[t], x0)).sqrt() * n.double()),
            "the mean of q(x_t | x_0) is sqrt(abar_t) x_0: take the square root of abar_t."),
    Mistake("off by one: abar_{t-1} (one step too few)",
            _q_with(lambda b, t: torch.cat([torch.ones(1, dtype=b.dtype), _cumprod(b)])[t]),
            "code index 0 is step 1, already noised once: cumprod(1 - betas)[0] = 1 - betas[0] (the book's "
            "1 - beta_1), so use cumprod(1 - betas)[t] (do not prepend a 1 or use t - 1)."),
    Mistake("off by one: abar_{t+1} (one step too many)",
            _q_with(lambda b, t: torch.cat([_cumprod(b), _cumprod(b)[-1:]])[t + 1]),
            "code index t is step t + 1 already, and its alpha-bar is cumprod(1 - betas)[t]: no t + 1."),
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
    cases += [as_dtype(c, torch.float32, only=(0, 2)) for c in cases[1:3]]
    result = run_checks(fn, cases, title="q_sample", arg_names=("x0", "t", "noise", "betas"),
                        validate=_validate_like("x_t", lambda args: tuple(args[0].shape)))
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
    cases += [as_dtype(c, torch.float32, only=(0, 1, 6)) for c in cases[1:3]]
    result = run_checks(fn, cases, title="ddim_step",
                        arg_names=("eps", "x_t", "t", "t_prev", "betas", "eta", "noise"),
                        validate=_validate_like("x_prev", lambda args: tuple(args[1].shape)), atol=1e-6, rtol=1e-5)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 3. the noise-prediction loss
# ---------------------------------------------------------------------------
class TinyDenoiser(torch.nn.Module):
    """A small seeded noise predictor ``(x_t (B, ...), t (B,)) -> eps (B, ...)`` for the checks."""

    def __init__(self, dim: int, seed: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(dim, dim, generator=gen, dtype=dtype) / dim**0.5)
        self.time = torch.nn.Parameter(torch.randn(dim, generator=gen, dtype=dtype))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x_t.flatten(1)
        scale = (t.to(flat.dtype) / 100.0).view(-1, 1)
        return (torch.tanh(flat @ self.weight) + scale * self.time).view_as(x_t)


def _abar(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas.double(), 0)


def _loss_with(*, target: str = "noise", model_input: str = "x_t", reduce: str = "mean", t_shift: int = 0,
               noise_scale: Callable = torch.sqrt):
    """The noise-prediction loss, with one part done in a (possibly wrong) way; defaults give the right one."""
    def loss(eps_model, x0, t, noise, betas):
        abar = _view(_abar(betas)[t], x0).to(x0.dtype)
        x_t = abar.sqrt() * x0 + noise_scale(1 - abar) * noise
        prediction = eps_model(x_t if model_input == "x_t" else x0, t + t_shift)
        wanted = {"noise": noise, "x0": x0, "x_t": x_t}[target]
        squared = (prediction - wanted) ** 2
        return squared.mean() if reduce == "mean" else squared.sum() if reduce == "sum" else squared.sum(
            tuple(range(1, x0.ndim))).mean()
    return loss


_reference_loss = _loss_with()

LOSS_MISTAKES = (
    Mistake("the network compared with x0 instead of the noise", _loss_with(target="x0"),
            "this network predicts the NOISE: the target is `noise`, the epsilon that made x_t, not x0."),
    Mistake("the network compared with x_t", _loss_with(target="x_t"),
            "the target is the noise that was added, `noise`, not the noisy input x_t."),
    Mistake("the network given x0 instead of x_t", _loss_with(model_input="x0"),
            "the network sees the NOISY data: eps_model(x_t, t) with x_t = q_sample(x0, t, noise, betas)."),
    Mistake("a sum instead of a mean", _loss_with(reduce="sum"),
            "Ho et al.'s simple loss is the MEAN of the squared error over the batch and every dimension."),
    Mistake("summed over the dimensions, averaged over the batch", _loss_with(reduce="per_example"),
            "average over every entry (.mean()), as the package does; summing over dimensions scales the loss by D."),
    Mistake("the network given t + 1", _loss_with(t_shift=1),
            "pass the same step index t that made x_t: eps_model(x_t, t)."),
    Mistake("(1 - abar_t) instead of sqrt(1 - abar_t) on the noise", _loss_with(noise_scale=lambda v: v),
            "x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise: the noise is scaled by the square root."),
)


def _loss_case(name: str, seed: int, shape: tuple[int, ...], t: Callable[[], torch.Tensor],
               betas: Callable[[], torch.Tensor], hidden: bool = True, dtype: torch.dtype = torch.float64) -> Case:
    def args() -> tuple:
        dim = 1
        for n in shape[1:]:
            dim *= n
        return (TinyDenoiser(dim, seed + 3, dtype), _randn(seed, *shape).to(dtype), t(), _randn(seed + 1, *shape).to(dtype),
                betas())

    return Case(name, args, reference=_reference_loss, mistakes=LOSS_MISTAKES, hidden=hidden,
                inputs=f"eps_model: a small seeded network; x0, noise: {shape} {str(dtype)[6:]}; t: {name.split('t = ')[-1]}",
                hint="x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (your q_sample); loss = ((eps_model(x_t, t) - noise)**2).mean()")


def _loss_gradient_probe(fn: Callable) -> str | None:
    """Gradients must reach the network's parameters exactly as from the reference loss."""
    x0, noise = _randn(90, 6, 3), _randn(91, 6, 3)
    t, betas = torch.tensor([0, 5, 17, 30, 49, 2]), _random_betas(92, 50)
    return parameter_gradient_problem(
        fn, _reference_loss, lambda: (TinyDenoiser(3, 93), x0.clone(), t.clone(), noise.clone(), betas.clone()),
        cut="part of the computation (the prediction, or x_t fed to the network) was cut from the graph",
        atol=1e-9, rtol=1e-7)


def _scalar_loss(got: Any, args: tuple) -> str | None:
    return scalar_loss_problem(got)


def check_noise_prediction_loss(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``noise_prediction_loss(eps_model, x0, t, noise, betas) -> scalar``."""
    cases = [
        _loss_case("points (4, 2), linear T=1000, t = (0, 10, 500, 999)", 100, (4, 2),
                   lambda: torch.tensor([0, 10, 500, 999]), lambda: _linear(1000), hidden=False),
        _loss_case("hidden: images (3, 1, 4, 4), cosine T=100, t = (99, 0, 42)", 110, (3, 1, 4, 4),
                   lambda: torch.tensor([99, 0, 42]), lambda: _cosine(100)),
        _loss_case("hidden: random schedule T=20, (5, 3), t = (1, 1, 19, 7, 0)", 120, (5, 3),
                   lambda: torch.tensor([1, 1, 19, 7, 0]), lambda: _random_betas(121, 20)),
        _loss_case("hidden: float32 points (6, 2), linear T=1000, t = (3, 999, 250, 250, 1, 0)", 130, (6, 2),
                   lambda: torch.tensor([3, 999, 250, 250, 1, 0]), lambda: _linear(1000), dtype=torch.float32),
        probe_case("hidden: the loss sends the network's parameters the right gradient", _loss_gradient_probe),
    ]
    result = run_checks(fn, cases, title="noise_prediction_loss", arg_names=("eps_model", "x0", "t", "noise", "betas"),
                        validate=_scalar_loss)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 4. one ancestral DDPM step
# ---------------------------------------------------------------------------
def _reference_ddpm_step(eps, x_t, t, betas, noise):
    from dgm.diffusion import ddpm_step

    return ddpm_step(eps.double(), x_t.double(), t, _schedule(betas), noise.double()).to(x_t.dtype)


def _ddpm_with(*, variance: str = "posterior", std_is_variance: bool = False, abar_prev_wraps: bool = False,
               x0_from: str = "guess", shift: int = 0, noise_at_zero: bool = False):
    """A DDPM step with one part done in a (possibly wrong) way; the defaults give the right step."""
    def step(eps, x_t, t, betas, noise):
        b = betas.double()
        abars = _abar(b)
        t_ = min(t + shift, len(b) - 1)
        abar = abars[t_]
        abar_prev = abars[t_ - 1] if (t_ >= 1 or abar_prev_wraps) else torch.tensor(1.0, dtype=torch.float64)
        beta, alpha = b[t_], 1 - b[t_]
        eps, x_t, noise = eps.double(), x_t.double(), noise.double()
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt() if x0_from == "guess" else x_t
        mean = beta * abar_prev.sqrt() / (1 - abar) * x0 + (1 - abar_prev) * alpha.sqrt() / (1 - abar) * x_t
        var = (1 - abar_prev) / (1 - abar) * beta if variance == "posterior" else beta
        scale = var if std_is_variance else var.sqrt()
        if t == 0 and not noise_at_zero:  # beta~_0 = 0: the posterior at the data has no noise left
            return mean
        return mean + scale * noise
    return step


DDPM_MISTAKES = (
    Mistake("the variance used as the standard deviation", _ddpm_with(std_is_variance=True),
            "beta~_t is the VARIANCE of q(x_{t-1} | x_t, x_0): add sqrt(beta~_t) * noise, not beta~_t * noise."),
    Mistake("beta_t instead of the posterior variance beta~_t", _ddpm_with(variance="beta"),
            "this step samples the posterior q(x_{t-1} | x_t, x_0), whose variance is "
            "beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t, not beta_t."),
    Mistake("beta_t as the variance, and noise added at t = 0 too", _ddpm_with(variance="beta", noise_at_zero=True),
            "sample the posterior: its variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t is 0 at t = 0, "
            "where the step returns the mean; with beta_t the last step adds noise to the data."),
    Mistake("abar_{t-1} at t = 0 read as abar[-1]", _ddpm_with(abar_prev_wraps=True),
            "at t = 0 there is no earlier step: abar_{-1} = 1 (the data), but abar[t - 1] = abar[-1] is the LAST step."),
    Mistake("x_t used in place of the guess of x0", _ddpm_with(x0_from="x_t"),
            "the posterior mean needs x0; estimate it from the noise: x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."),
    Mistake("off by one: the coefficients of step t + 1", _ddpm_with(shift=1),
            "index t uses beta_t = betas[t] and abar_t = cumprod(1 - betas)[t]; its previous is abar[t - 1]."),
)


def _ddpm_case(name: str, seed: int, shape: tuple[int, ...], t: int, betas: Callable[[], torch.Tensor],
               hidden: bool = True, hint: str = "") -> Case:
    def args() -> tuple:
        return (_randn(seed, *shape), _randn(seed + 1, *shape), t, betas(), _randn(seed + 2, *shape))

    return Case(name, args, reference=_reference_ddpm_step, hidden=hidden, hint=hint, mistakes=DDPM_MISTAKES,
                inputs=f"eps, x_t, noise: shape {shape}; t={t}")


def check_ddpm_step(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``ddpm_step(eps, x_t, t, betas, noise) -> x_{t-1}``, shaped like ``x_t``."""
    hint = ("x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t); mean = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x0_hat "
            "+ (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) x_t; x_{t-1} = mean + sqrt(beta~_t) noise (no noise at t = 0)")
    cases = [
        _ddpm_case("linear T=1000, t = 500", 200, (4, 2), 500, lambda: _linear(1000), hidden=False, hint=hint),
        _ddpm_case("linear T=1000, the last step t = 0 (no noise)", 210, (3, 2), 0, lambda: _linear(1000),
                   hidden=False, hint="at t = 0, abar_{t-1} = 1 and the step returns the mean without noise"),
        _ddpm_case("hidden: cosine T=100, the first step t = 99, shape (2, 1, 3, 3)", 220, (2, 1, 3, 3), 99,
                   lambda: _cosine(100)),
        _ddpm_case("hidden: random schedule T=30, t = 1", 230, (5, 3), 1, lambda: _random_betas(231, 30)),
        _ddpm_case("hidden: random schedule T=30, t = 17", 240, (6, 2), 17, lambda: _random_betas(241, 30)),
    ]
    # float32 loses digits in 1 - abar_t near t = 0 (abar_0 = 0.9999): a looser rtol for those cases
    cases += [dataclasses.replace(as_dtype(c, torch.float32, only=(0, 1, 4)), rtol=2e-3) for c in cases[:2]]
    result = run_checks(fn, cases, title="ddpm_step", arg_names=("eps", "x_t", "t", "betas", "noise"),
                        validate=_validate_like("x_prev", lambda args: tuple(args[1].shape)), atol=1e-6, rtol=1e-5)
    return finish(result, strict)
