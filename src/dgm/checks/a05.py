"""Checkers for assignment 5: the affine coupling layer of RealNVP.

The learner writes three functions (shapes: ``x``, ``z`` are ``(B, D)``,
``mask`` is a 0/1 float ``(D,)``, ``net`` maps ``(B, D) -> (B, 2D)``:
a shift and a raw log-scale, in that order):

* ``coupling_forward(x, mask, net, scale_bound) -> (z, log_det)``
  with ``s = scale_bound * tanh(raw / scale_bound)`` on the transformed
  half only, ``z = x * exp(s) + t`` there, ``x`` unchanged where
  ``mask == 1``, and ``log_det = log|det dz/dx|`` per example ``(B,)``;
* ``coupling_inverse(z, mask, net, scale_bound) -> (x, log_det)``, its
  inverse, with ``log_det = log|det dx/dz|``;
* ``flow_log_prob(x, masks, nets, scale_bound) -> (B,)``: a stack of
  couplings (applied in list order) on a standard normal base, by the
  change of variables formula.

Every case uses float64, random masks and random conditioner weights large
enough that the raw log-scales pass the bound, so each named mistake changes
the answer. The reference is :class:`dgm.flows.AffineCoupling`'s formula
(:func:`reference_forward`), itself tested against nflows.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import Case, CheckResult, Mistake, finish, run_checks, summarize_value, tolerance

__all__ = ["check_coupling_forward", "check_coupling_inverse", "check_flow_log_prob",
           "reference_forward", "reference_inverse", "reference_flow_log_prob", "random_net"]


# ---------------------------------------------------------------------------
# the reference and its known wrong variants
# ---------------------------------------------------------------------------
def _params(kept: torch.Tensor, net: Callable, bound: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and log-scale from the conditioner; ``bound=None`` leaves the log-scale unbounded."""
    shift, raw = net(kept).chunk(2, dim=1)
    log_scale = raw if bound is None else bound * torch.tanh(raw / bound)
    return shift, log_scale


def _forward(x, mask, net, scale_bound, *, bounded=True, keep_half=True, reduce="per_sample",
             conditioner_input="masked", swapped=False):
    """The coupling's forward map, with switches that reproduce the named mistakes."""
    kept = x * mask if conditioner_input == "masked" else x
    if swapped:  # the net's two halves read the other way round
        net = (lambda original: lambda h: torch.cat(original(h).chunk(2, dim=1)[::-1], dim=1))(net)
    shift, log_scale = _params(kept, net, scale_bound if bounded else None)
    if keep_half:
        shift, log_scale = shift * (1 - mask), log_scale * (1 - mask)
    z = x * log_scale.exp() + shift
    return z, _reduce(log_scale, reduce)


def _inverse(z, mask, net, scale_bound, *, bounded=True, keep_half=True, reduce="per_sample", sign=-1,
             order="shift_first"):
    shift, log_scale = _params(z * mask, net, scale_bound if bounded else None)
    if keep_half:
        shift, log_scale = shift * (1 - mask), log_scale * (1 - mask)
    if order == "shift_first":
        x = (z - shift) * (-log_scale).exp()
    else:  # scale first, then shift: not the inverse of x * exp(s) + t
        x = z * (-log_scale).exp() - shift
    return x, sign * _reduce(log_scale, reduce)


def _reduce(log_scale: torch.Tensor, how: str) -> torch.Tensor:
    if how == "per_sample":
        return log_scale.sum(1)
    if how == "none":
        return log_scale
    return log_scale.sum()  # over the whole batch


def reference_forward(x: torch.Tensor, mask: torch.Tensor, net: Callable,
                      scale_bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The right ``coupling_forward``."""
    return _forward(x, mask, net, scale_bound)


def reference_inverse(z: torch.Tensor, mask: torch.Tensor, net: Callable,
                      scale_bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The right ``coupling_inverse``."""
    return _inverse(z, mask, net, scale_bound)


def _log_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))


def _stack_log_prob(x, masks, nets, scale_bound, *, logdet_sign=1, normaliser=True, use_logdet=True):
    total = x.new_zeros(len(x))
    for mask, net in zip(masks, nets):
        x, log_det = reference_forward(x, mask, net, scale_bound)
        total = total + log_det
    base = _log_normal(x) if normaliser else -0.5 * x.pow(2).sum(1)
    return base + (logdet_sign * total if use_logdet else 0)


def reference_flow_log_prob(x: torch.Tensor, masks: Sequence[torch.Tensor], nets: Sequence[Callable],
                            scale_bound: float) -> torch.Tensor:
    """The right ``flow_log_prob``."""
    return _stack_log_prob(x, masks, nets, scale_bound)


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------
def random_net(dim: int, hidden: int, seed: int, gain: float = 2.0) -> nn.Module:
    """A float64 conditioner ``(B, dim) -> (B, 2 dim)`` with weights large enough to pass the bound."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * dim)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(gain * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return net


def _random_mask(dim: int, gen: torch.Generator) -> torch.Tensor:
    """A 0/1 float64 mask with at least one 0 and one 1, in a random pattern."""
    while True:
        mask = (torch.rand(dim, generator=gen) < 0.5).double()
        if 0 < mask.sum() < dim:
            return mask


def _coupling_case(name: str, dim: int, batch: int, bound: float, seed: int, hidden: bool,
                   mask: Sequence[float] | None = None, hint: str = "", dtype: torch.dtype = torch.float64) -> Case:
    def build() -> tuple:
        gen = torch.Generator().manual_seed(seed)
        m = torch.tensor(mask, dtype=torch.float64) if mask is not None else _random_mask(dim, gen)
        x = 1.5 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
        return x.to(dtype), m.to(dtype), random_net(dim, 8, seed + 1).to(dtype), bound

    shown = f"mask={list(mask)}" if mask is not None else f"a random mask of length {dim}"
    return Case(name, build, hidden=hidden, hint=hint,
                inputs=f"x: (batch={batch}, D={dim}) {str(dtype)[6:]}; {shown}; net: a random MLP D -> 2D; "
                       f"scale_bound={bound}")


def _coupling_cases(kind: str) -> list[Case]:
    hint = ("shift, raw = net(x * mask).chunk(2, dim=1); s = scale_bound * tanh(raw / scale_bound); "
            "keep only the transformed half: s * (1 - mask), shift * (1 - mask)")
    return [
        _coupling_case(f"{kind}: D=4, mask=[1, 1, 0, 0], batch 3, scale_bound=2", 4, 3, 2.0, 10, False,
                       [1, 1, 0, 0], hint),
        _coupling_case(f"{kind}: D=2, mask=[0, 1], batch 5, scale_bound=1", 2, 5, 1.0, 20, False, [0, 1], hint),
        _coupling_case(f"{kind}: D=7, random mask, batch 6, scale_bound=1.5", 7, 6, 1.5, 30, True, None, hint),
        _coupling_case(f"{kind}: D=16, random mask, batch 2, scale_bound=3", 16, 2, 3.0, 40, True, None, hint),
        _coupling_case(f"{kind}: D=5, random mask, batch 1, scale_bound=0.5", 5, 1, 0.5, 50, True, None, hint),
        _coupling_case(f"{kind}: D=6, random mask, batch 4, scale_bound=2, float32", 6, 4, 2.0, 55, True, None, hint,
                       dtype=torch.float32),
        _coupling_case(f"{kind}: D=3, random mask, batch 9, scale_bound=1, float32", 3, 9, 1.0, 56, True, None, hint,
                       dtype=torch.float32),
    ]


def _judge_pair(reference: Callable, direction: str) -> Callable[[Any, tuple], str | None]:
    out_name = "z" if direction == "forward" else "x"

    def judge(got: Any, args: tuple) -> str | None:
        inputs, mask = args[0], args[1]
        want_out, want_logdet = reference(*args)
        batch, dim = inputs.shape
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return f"return a pair ({out_name}, log_det); got {summarize_value(got)}"
        out, log_det = got
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, dim):
            return f"{out_name} should be a tensor shaped like the input, ({batch}, {dim}); got {summarize_value(out)}"
        if not isinstance(log_det, torch.Tensor):
            return f"log_det should be a tensor of shape ({batch},), got {summarize_value(log_det)}"
        if tuple(log_det.shape) == (batch, dim):
            return (f"log_det has shape {tuple(log_det.shape)}: one log-determinant per example is the sum of the "
                    f"log-scales over the dimensions, so sum over dim=1 to get shape ({batch},)")
        if log_det.ndim == 0 and batch > 1:
            return (f"log_det is a single number: it was summed over the batch too; keep one value per example, "
                    f"shape ({batch},) (sum over dim=1 only)")
        if tuple(log_det.shape) != (batch,):
            return f"log_det should have shape ({batch},), got {tuple(log_det.shape)}"
        if out.dtype != inputs.dtype or log_det.dtype != inputs.dtype:
            return (f"the inputs are {str(inputs.dtype)[6:]} but {out_name} is {str(out.dtype)[6:]} and log_det "
                    f"{str(log_det.dtype)[6:]}: keep the inputs' dtype (no torch.tensor(...)/.float() constants)")
        if not (out.requires_grad and log_det.requires_grad):
            which = out_name if not out.requires_grad else "log_det"
            return (f"no gradient reaches the conditioner's parameters through {which}: it was computed under "
                    "torch.no_grad(), with .detach() or through .data, so the flow could not be trained")
        atol, rtol = tolerance(inputs.dtype, 1e-8, 1e-8)
        kept = mask.bool()
        if not torch.allclose(out.detach()[:, kept], inputs[:, kept], atol=atol / 10, rtol=0):
            return ("the kept half (where mask == 1) changed: the coupling must pass it through unchanged, "
                    "and scale and shift only the other half (multiply s and t by 1 - mask)")
        if not torch.allclose(out.detach(), want_out, atol=atol, rtol=rtol):
            bad = (out.detach() - want_out).abs().max()
            return f"{out_name} differs from the expected values on the transformed half (largest difference {bad:.3g})"
        if not torch.allclose(log_det.detach(), want_logdet, atol=atol, rtol=rtol):
            if torch.allclose(log_det.detach(), -want_logdet, atol=atol, rtol=rtol):
                return f"log_det has the wrong sign; {out_name} is right"
            wrt = "x" if direction == "forward" else "z"
            return f"{out_name} is right, but log_det differs from log|det d{out_name}/d{wrt}|"
        return None

    return judge


_FORWARD_MISTAKES = (
    Mistake("exp(raw) instead of the bounded scale",
            lambda x, m, n, b: _forward(x, m, n, b, bounded=False),
            "this layer bounds its log-scale: s = scale_bound * tanh(raw / scale_bound), then exp(s)."),
    Mistake("scale and shift applied to the conditioning half",
            lambda x, m, n, b: _forward(x, m, n, b, keep_half=False),
            "the half with mask == 1 conditions the others and must pass unchanged; multiply s and t by "
            "(1 - mask) (which also drops its log-scales from log_det)."),
    Mistake("log-det not summed per sample",
            lambda x, m, n, b: _forward(x, m, n, b, reduce="none"),
            "log|det| of a diagonal Jacobian block is the SUM of the log-scales: sum over dim=1."),
    Mistake("log-det summed over the whole batch",
            lambda x, m, n, b: _forward(x, m, n, b, reduce="all"),
            "the log-determinant belongs to each example: sum over dim=1 only."),
    Mistake("the conditioner reads all of x",
            lambda x, m, n, b: _forward(x, m, n, b, conditioner_input="all"),
            "the net may only read the kept half, net(x * mask); otherwise the inverse cannot recompute s and t."),
    Mistake("shift and log-scale swapped",
            lambda x, m, n, b: _forward(x, m, n, b, swapped=True),
            "net(...) returns [shift, raw log-scale] in that order: shift, raw = net(...).chunk(2, dim=1)."),
)

_INVERSE_MISTAKES = (
    Mistake("log-det with the wrong sign in the inverse",
            lambda z, m, n, b: _inverse(z, m, n, b, sign=1),
            "the inverse divides by exp(s), so log|det dx/dz| = -sum(s): minus the forward's log-det."),
    Mistake("exp(raw) instead of the bounded scale",
            lambda z, m, n, b: _inverse(z, m, n, b, bounded=False),
            "use the same bounded log-scale as the forward: s = scale_bound * tanh(raw / scale_bound)."),
    Mistake("scale and shift applied to the conditioning half",
            lambda z, m, n, b: _inverse(z, m, n, b, keep_half=False),
            "the half with mask == 1 is unchanged in both directions: multiply s and t by (1 - mask)."),
    Mistake("scale undone before the shift",
            lambda z, m, n, b: _inverse(z, m, n, b, order="scale_first"),
            "undo the forward in reverse order: first subtract t, then divide by exp(s): x = (z - t) * exp(-s)."),
    Mistake("log-det not summed per sample",
            lambda z, m, n, b: _inverse(z, m, n, b, reduce="none"),
            "sum the log-scales over dim=1: one log-determinant per example."),
)


def check_coupling_forward(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``coupling_forward(x, mask, net, scale_bound) -> (z, log_det)``."""
    cases = _coupling_cases("forward")
    for case in cases:
        case.judge = _judge_pair(reference_forward, "forward")
        case.mistakes = _FORWARD_MISTAKES
    return finish(run_checks(fn, cases, title="coupling_forward", atol=1e-8, rtol=1e-8), strict)


def check_coupling_inverse(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``coupling_inverse(z, mask, net, scale_bound) -> (x, log_det)`` (random ``z``: the
    coupling is a bijection of the whole space, so every ``z`` has an ``x``)."""
    cases = _coupling_cases("inverse")
    for case in cases:
        case.judge = _judge_pair(reference_inverse, "inverse")
        case.mistakes = _INVERSE_MISTAKES
    return finish(run_checks(fn, cases, title="coupling_inverse", atol=1e-8, rtol=1e-8), strict)


_STACK_MISTAKES = (
    Mistake("the log-determinants subtracted",
            lambda x, ms, ns, b: _stack_log_prob(x, ms, ns, b, logdet_sign=-1),
            "change of variables: log p(x) = log N(f(x)) + log|det df/dx|, with a PLUS: add every layer's log_det."),
    Mistake("the log-determinants left out",
            lambda x, ms, ns, b: _stack_log_prob(x, ms, ns, b, use_logdet=False),
            "log N(z) alone is the density of z, not of x: add the sum of the layers' log_det."),
    Mistake("the Gaussian's normalising constant left out",
            lambda x, ms, ns, b: _stack_log_prob(x, ms, ns, b, normaliser=False),
            "log N(z; 0, I) = -0.5 * (|z|^2 + D log(2 pi)); the D log(2 pi) term matters when comparing models."),
)


def _stack_case(name: str, dim: int, batch: int, layers: int, seed: int, hidden: bool,
                dtype: torch.dtype = torch.float64) -> Case:
    def build() -> tuple:
        gen = torch.Generator().manual_seed(seed)
        masks = [_random_mask(dim, gen).to(dtype) for _ in range(layers)]
        nets = [random_net(dim, 8, seed + 10 + i, gain=0.7).to(dtype) for i in range(layers)]
        return torch.randn(batch, dim, generator=gen, dtype=torch.float64).to(dtype), masks, nets, 2.0

    return Case(name, build, reference=reference_flow_log_prob, hidden=hidden, mistakes=_STACK_MISTAKES,
                inputs=f"x: ({batch}, {dim}) {str(dtype)[6:]}; {layers} couplings with random masks and nets; scale_bound=2",
                hint="z, total = x, 0; for each (mask, net): z, ld = coupling_forward(z, mask, net, scale_bound); "
                     "total += ld; return log N(z; 0, I) + total")


def check_flow_log_prob(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``flow_log_prob(x, masks, nets, scale_bound) -> (B,)``."""
    cases = [
        _stack_case("2 couplings, D=2, batch 4", 2, 4, 2, 60, False),
        _stack_case("hidden: 3 couplings, D=6, batch 5", 6, 5, 3, 70, True),
        _stack_case("hidden: 1 coupling, D=3, batch 1", 3, 1, 1, 80, True),
        _stack_case("hidden: 4 couplings, D=9, batch 3", 9, 3, 4, 90, True),
        _stack_case("hidden: 3 couplings, D=4, batch 6, float32", 4, 6, 3, 95, True, torch.float32),
    ]
    return finish(run_checks(fn, cases, title="flow_log_prob", atol=1e-8, rtol=1e-8, grad_args=(0,)), strict)
