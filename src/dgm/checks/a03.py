"""Checkers for assignment 3: reparameterised sampling and the ELBO with the closed-form KL.

* ``reparameterize(mu, logvar) -> z``: a sample of ``N(mu, diag(exp(logvar)))``
  through which gradients flow. Judged by the *gradients* of ``z`` with
  respect to ``mu`` and ``logvar`` (which identify the formula: ``dz/dmu = 1``,
  ``dz/dlogvar = (z - mu) / 2``) and by the *statistics* of the implied noise
  ``eps = (z - mu) / sigma`` over many rows (mean 0, standard deviation 1, a
  fresh draw for every entry). Random results cannot be compared with a
  reference value, so every case has a ``judge``.
* ``kl_to_standard_normal(mu, logvar) -> (batch,)``: the closed-form
  ``KL(q || N(0, I))`` per example, compared with :func:`dgm.vae.kl_to_standard_normal`.
* ``negative_elbo(x, logits, mu, logvar) -> scalar``: the training loss of a
  VAE with Bernoulli pixels, ``mean over the batch of (-log p(x | z) + KL)``,
  compared with the package's formula.

Named mistakes (each recognised and explained in the report): the
log-variance used as the standard deviation, ``exp(logvar)`` used as the
standard deviation (the missing ½), sampling without the reparameterisation
trick (no gradient reaches the encoder), uniform noise, one noise draw shared
by the batch, the KL without its ½, summed (not averaged) over the batch, or
averaged over the latent dimensions, and the reconstruction averaged over pixels.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.nn import functional as F

from . import Case, CheckResult, Mistake, as_dtype, finish, probe_case, randomness_problem, run_checks, summarize_value

__all__ = ["check_reparameterize", "check_kl", "check_negative_elbo", "reference_negative_elbo"]


# ---------------------------------------------------------------------------
# 1. reparameterize
# ---------------------------------------------------------------------------
def _reparam_inputs(rows: int, dim: int, seed: int, dtype=torch.float32) -> Callable[[], tuple]:
    def build() -> tuple:
        gen = torch.Generator().manual_seed(seed)
        mu = torch.randn(rows, dim, generator=gen, dtype=dtype) * 2
        logvar = torch.rand(rows, dim, generator=gen, dtype=dtype) * 3 - 2  # std from 0.37 to 1.65
        return mu, logvar
    return build


def _with_gradients(fn: Callable) -> Callable:
    """Call the learner's ``reparameterize`` on leaf copies of ``mu``/``logvar`` and return
    ``(z, dz/dmu, dz/dlogvar)`` (elementwise, from ``z.sum()``), or ``(z, None, None)``
    when no gradient reaches the inputs."""
    def call(mu: torch.Tensor, logvar: torch.Tensor):
        mu = mu.detach().clone().requires_grad_(True)
        logvar = logvar.detach().clone().requires_grad_(True)
        z = fn(mu, logvar)
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            return z, None, None
        grad_mu, grad_logvar = torch.autograd.grad(z.sum(), [mu, logvar], allow_unused=True)
        return z.detach(), grad_mu, grad_logvar
    call.__name__ = getattr(fn, "__name__", "reparameterize")
    return call


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(((a - b).abs() <= tol * (1 + b.abs())).all())


def _reparam_judge(got: Any, args: tuple) -> str | None:
    mu, logvar = args
    z, grad_mu, grad_logvar = got
    if not isinstance(z, torch.Tensor):
        return f"should return a torch.Tensor z shaped like mu {tuple(mu.shape)}, got {summarize_value(z)}"
    if tuple(z.shape) != tuple(mu.shape):
        return (f"z has shape {tuple(z.shape)}, expected {tuple(mu.shape)} (one sample per entry of mu; "
                "draw eps with torch.randn_like(mu))")
    if not z.is_floating_point() or not torch.isfinite(z).all():
        return "z should be finite floating-point numbers"
    if z.dtype != mu.dtype:
        return (f"z is {str(z.dtype)[6:]} for {str(mu.dtype)[6:]} inputs: noise made with torch.randn(shape) is float32; "
                "draw it with torch.randn_like(mu), which keeps mu's dtype (and device)")
    if grad_mu is None and grad_logvar is None:
        return ("no gradient reaches mu and logvar: z was sampled without the reparameterisation trick "
                "(torch.normal, Normal(...).sample() or .detach() cut the graph), so no gradient reaches the "
                "encoder. Write z = mu + sigma * eps with eps = torch.randn_like(mu) drawn separately.")
    if grad_logvar is None or grad_mu is None:
        which = "logvar" if grad_logvar is None else "mu"
        return f"z does not depend on {which}; z = mu + exp(logvar / 2) * eps uses both"
    sigma = torch.exp(0.5 * logvar)
    noise = z - mu  # = sigma * eps when the formula is right
    if not _close(grad_mu, torch.ones_like(mu)):
        return "dz/dmu should be 1 for every entry (z = mu + ...); it is not"
    if not _close(grad_logvar, 0.5 * noise):
        eps_if_logvar_is_std = noise / logvar
        if _close(grad_logvar, eps_if_logvar_is_std, 1e-3):
            return ("dz/dlogvar equals eps: the log-variance is used as the standard deviation "
                    "(z = mu + logvar * eps). The standard deviation is exp(logvar / 2).")
        if _close(grad_logvar, noise):
            return ("dz/dlogvar equals sigma * eps with sigma = exp(logvar): exp(logvar) is the VARIANCE; the "
                    "standard deviation is exp(logvar / 2) -- the 1/2 is missing.")
        return ("dz/dlogvar should be (z - mu) / 2, i.e. z = mu + exp(logvar / 2) * eps; your z depends on "
                "logvar in another way")
    eps = noise / sigma
    if eps.shape[0] > 1 and bool((eps - eps[:1]).abs().max() < 1e-6):
        return ("every row got the same noise: draw a separate eps for every example, "
                "eps = torch.randn_like(mu), not torch.randn(mu.shape[-1])")
    if eps.ndim > 1 and eps.shape[-1] > 1 and bool((eps - eps[..., :1]).abs().max() < 1e-6):
        return ("every latent dimension got the same noise: the latent dimensions are independent, so each needs its "
                "own draw: eps = torch.randn_like(mu), not torch.randn(batch, 1)")
    mean, std = float(eps.mean()), float(eps.std())
    if 0.4 < mean < 0.6 and 0.2 < std < 0.4:
        return (f"the noise eps = (z - mu) / sigma looks uniform on [0, 1] (mean {mean:.2f}, std {std:.2f}): "
                "torch.rand_like draws uniform numbers; use torch.randn_like for N(0, 1)")
    tolerance = 6 / math.sqrt(eps.numel())  # 6 standard errors
    if abs(mean) > tolerance or abs(std - 1) > 2 * tolerance:
        return (f"the noise eps = (z - mu) / sigma should be N(0, 1); over {eps.numel()} entries it has mean "
                f"{mean:.3f} and std {std:.3f}")
    return None


def check_reparameterize(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``reparameterize(mu, logvar) -> z`` by its gradients and its noise statistics."""
    cases = [
        Case("mu, logvar of shape (2000, 3)", args=_reparam_inputs(2000, 3, 0), judge=_reparam_judge, seed=0,
             hint="z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)"),
        Case("hidden: shape (500, 11)", args=_reparam_inputs(500, 11, 1), judge=_reparam_judge, seed=1,
             hidden=True),
        Case("hidden: shape (3000, 1), float64", args=_reparam_inputs(3000, 1, 2, torch.float64),
             judge=_reparam_judge, seed=2, hidden=True),
        Case("hidden: shape (64, 40)", args=_reparam_inputs(64, 40, 3), judge=_reparam_judge, seed=3, hidden=True),
        probe_case("hidden: every call draws fresh noise from torch's generator", _fresh_noise_probe),
    ]
    return finish(run_checks(_with_gradients(fn), cases, title="reparameterize", arg_names=("mu", "logvar")), strict)


def _fresh_noise_probe(call: Callable) -> str | None:
    mu, logvar = _reparam_inputs(50, 2, 4)()
    return randomness_problem(lambda: call(mu, logvar)[0], what="z")


# ---------------------------------------------------------------------------
# 2. the KL term
# ---------------------------------------------------------------------------
def _reference_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    from dgm.vae import kl_to_standard_normal

    return kl_to_standard_normal(mu, logvar)


_KL_MISTAKES = (
    Mistake("the 1/2 is missing",
            lambda mu, lv: (mu**2 + lv.exp() - lv - 1).sum(-1),
            "KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - log sigma^2 - 1), summed over the latent dims."),
    Mistake("log-variance treated as the standard deviation",
            lambda mu, lv: 0.5 * (mu**2 + lv**2 - torch.log(lv**2) - 1).sum(-1),
            "logvar is log sigma^2: sigma^2 = exp(logvar) and log sigma^2 = logvar."),
    Mistake("exp(logvar) treated as the standard deviation",
            lambda mu, lv: 0.5 * (mu**2 + (2 * lv).exp() - 2 * lv - 1).sum(-1),
            "exp(logvar) is already the variance sigma^2; do not square it."),
    Mistake("averaged over the latent dimensions",
            lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1).mean(-1),
            "the latent dimensions are independent, so their KLs add up: sum over the last dim, do not average."),
    Mistake("the -1 is missing",
            lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv).sum(-1),
            "at mu = 0, logvar = 0 (q equals the prior) the KL must be 0; the formula has a -1 per dimension."),
    Mistake("the sign of the log term",
            lambda mu, lv: 0.5 * (mu**2 + lv.exp() + lv - 1).sum(-1),
            "the log-variance enters with a minus sign: - log sigma^2 = - logvar."),
)


def _kl_inputs(rows: int, dim: int, seed: int) -> Callable[[], tuple]:
    def build() -> tuple:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(rows, dim, generator=gen), torch.rand(rows, dim, generator=gen) * 4 - 3
    return build


def _kl_shape_check(got: Any, args: tuple) -> str | None:
    mu, _ = args
    if isinstance(got, torch.Tensor) and got.ndim == 0:
        return (f"returned a single number, expected one KL per example, shape ({mu.shape[0]},): sum over the "
                "latent dims only (.sum(-1)); the average over the batch belongs in the loss")
    if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(mu.shape):
        return (f"returned shape {tuple(mu.shape)}, one value per latent dimension; sum over the latent "
                f"dims (.sum(-1)) to get shape ({mu.shape[0]},)")
    return None


def check_kl(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``kl_to_standard_normal(mu, logvar) -> (batch,)`` against the closed form."""
    prior = (torch.zeros(2, 3), torch.zeros(2, 3))
    cases = [
        Case("q equals the prior: mu = 0, logvar = 0 -> KL = 0", args=prior, expected=torch.zeros(2),
             mistakes=_KL_MISTAKES),
        Case("mu = [[1, 2]], logvar = [[0, log 4]]", args=(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, math.log(4.0)]])),
             reference=_reference_kl, mistakes=_KL_MISTAKES),
        Case("hidden: (37, 5)", args=_kl_inputs(37, 5, 0), reference=_reference_kl, mistakes=_KL_MISTAKES, hidden=True),
        Case("hidden: (1, 64)", args=_kl_inputs(1, 64, 1), reference=_reference_kl, mistakes=_KL_MISTAKES, hidden=True),
        Case("hidden: (200, 2)", args=_kl_inputs(200, 2, 2), reference=_reference_kl, mistakes=_KL_MISTAKES, hidden=True),
    ]
    cases += [as_dtype(c, torch.float64) for c in cases[1:3]]
    return finish(run_checks(fn, cases, title="kl_to_standard_normal", arg_names=("mu", "logvar"),
                             validate=_kl_shape_check, grad_args=(0, 1)), strict)


# ---------------------------------------------------------------------------
# 3. the negative ELBO
# ---------------------------------------------------------------------------
def reference_negative_elbo(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor,
                            logvar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-log p(x | z) + KL(q(z | x) || N(0, I))``, Bernoulli pixels.

    ``x``, ``logits``: ``(batch, D)``; ``mu``, ``logvar``: ``(batch, latent)``.
    """
    reconstruction = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    return (-reconstruction + _reference_kl(mu, logvar)).mean()


def _bce(x, logits):
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def _kl(mu, lv):
    return 0.5 * (mu**2 + lv.exp() - lv - 1).sum(-1)


_ELBO_MISTAKES = (
    Mistake("KL summed over the batch instead of averaged",
            lambda x, lg, mu, lv: _bce(x, lg).mean() + _kl(mu, lv).sum(),
            "both terms are per example: average the KL over the batch like the reconstruction term, "
            "otherwise its weight grows with the batch size."),
    Mistake("everything summed over the batch",
            lambda x, lg, mu, lv: (_bce(x, lg) + _kl(mu, lv)).sum(),
            "return the MEAN over the batch (nats per example), so the loss does not depend on the batch size."),
    Mistake("the reconstruction averaged over pixels",
            lambda x, lg, mu, lv: F.binary_cross_entropy_with_logits(lg, x) + _kl(mu, lv).mean(),
            "F.binary_cross_entropy_with_logits averages over pixels by default; log p(x | z) is the SUM over "
            "pixels (reduction='none', then .sum(-1)), or the KL term outweighs it D times over."),
    Mistake("the 1/2 of the KL is missing",
            lambda x, lg, mu, lv: (_bce(x, lg) + 2 * _kl(mu, lv)).mean(),
            "KL = 1/2 sum(mu^2 + exp(logvar) - logvar - 1)."),
    Mistake("log-variance treated as the standard deviation in the KL",
            lambda x, lg, mu, lv: (_bce(x, lg) + 0.5 * (mu**2 + lv**2 - torch.log(lv**2) - 1).sum(-1)).mean(),
            "logvar is log sigma^2: sigma^2 = exp(logvar)."),
    Mistake("the ELBO itself (the wrong sign)",
            lambda x, lg, mu, lv: (-_bce(x, lg) - _kl(mu, lv)).mean(),
            "the loss to MINIMISE is the negative ELBO: reconstruction error (-log p(x | z)) PLUS the KL."),
    Mistake("the KL subtracted",
            lambda x, lg, mu, lv: (_bce(x, lg) - _kl(mu, lv)).mean(),
            "ELBO = E[log p(x | z)] - KL, so -ELBO = -log p(x | z) + KL: the KL is added to the loss."),
    Mistake("probabilities instead of logits",
            lambda x, lg, mu, lv: (F.binary_cross_entropy(lg.clamp(1e-6, 1 - 1e-6), x, reduction="none").sum(-1)
                                   + _kl(mu, lv)).mean(),
            "the decoder returns LOGITS (any real number); use F.binary_cross_entropy_with_logits."),
)


def _elbo_inputs(batch: int, pixels: int, latent: int, seed: int) -> Callable[[], tuple]:
    def build() -> tuple:
        gen = torch.Generator().manual_seed(seed)
        x = (torch.rand(batch, pixels, generator=gen) < 0.3).float()
        logits = torch.randn(batch, pixels, generator=gen) * 3
        mu = torch.randn(batch, latent, generator=gen)
        logvar = torch.rand(batch, latent, generator=gen) * 3 - 2
        return x, logits, mu, logvar
    return build


def _elbo_scalar(got: Any, args: tuple) -> str | None:
    if isinstance(got, torch.Tensor) and got.ndim > 0 and got.numel() > 1:
        return (f"returned a tensor of shape {tuple(got.shape)}; the loss is one number, the mean over the "
                "batch of the per-example negative ELBO")
    return None


def check_negative_elbo(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``negative_elbo(x, logits, mu, logvar) -> scalar`` (Bernoulli pixels, closed-form KL)."""
    cases = [
        Case("batch 4, 6 pixels, 2 latent dims", args=_elbo_inputs(4, 6, 2, 0), reference=reference_negative_elbo,
             mistakes=_ELBO_MISTAKES),
        Case("hidden: batch 50, 784 pixels, 8 latent dims", args=_elbo_inputs(50, 784, 8, 1),
             reference=reference_negative_elbo, mistakes=_ELBO_MISTAKES, hidden=True),
        Case("hidden: batch 1, 64 pixels, 1 latent dim", args=_elbo_inputs(1, 64, 1, 2),
             reference=reference_negative_elbo, mistakes=_ELBO_MISTAKES, hidden=True),
        Case("hidden: batch 17, 10 pixels, 30 latent dims", args=_elbo_inputs(17, 10, 30, 3),
             reference=reference_negative_elbo, mistakes=_ELBO_MISTAKES, hidden=True),
    ]
    cases += [as_dtype(c, torch.float64) for c in cases[:2]]
    return finish(run_checks(fn, cases, title="negative_elbo", arg_names=("x", "logits", "mu", "logvar"),
                             validate=_elbo_scalar, grad_args=(1, 2, 3)), strict)
