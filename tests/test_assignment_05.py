"""Assignment 5: its plausible mistakes and its own checks; the tests every assignment shares
(solutions accepted, mistakes rejected, strict mode, the notebooks) run from ``SPEC`` in test_assignments.py."""

import math

import torch

from assignment_support import Assignment
from dgm.checks import a05
from dgm.flows import AffineCoupling


CHECKERS = {
    "coupling_forward": a05.check_coupling_forward,
    "coupling_inverse": a05.check_coupling_inverse,
    "flow_log_prob": a05.check_flow_log_prob,
}


def test_the_reference_agrees_with_the_package_layer():
    """The checker's formula is the one dgm.flows.AffineCoupling uses (tested against nflows)."""
    torch.manual_seed(0)
    mask = torch.tensor([0.0, 1, 1, 0, 1])
    layer = AffineCoupling(mask, hidden_size=8, scale_bound=1.5).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(6, 5, dtype=torch.float64)
    for ours, theirs in ((layer(x), a05.reference_forward(x, mask.double(), layer.net, 1.5)),
                         (layer.inverse(x), a05.reference_inverse(x, mask.double(), layer.net, 1.5))):
        assert torch.allclose(ours[0], theirs[0]) and torch.allclose(ours[1], theirs[1])


# ---------------------------------------------------------------------------
# plausible wrong implementations
# ---------------------------------------------------------------------------
def _log_scale(raw, bound):
    return bound * torch.tanh(raw / bound)


def fwd_exp_raw(x, mask, net, bound):
    shift, raw = net(x * mask).chunk(2, dim=1)
    s, t = raw * (1 - mask), shift * (1 - mask)
    return x * s.exp() + t, s.sum(1)


def fwd_scales_kept_half(x, mask, net, bound):
    shift, raw = net(x * mask).chunk(2, dim=1)
    s = _log_scale(raw, bound)
    return x * s.exp() + shift, s.sum(1)


def fwd_not_summed(x, mask, net, bound):
    shift, raw = net(x * mask).chunk(2, dim=1)
    s, t = _log_scale(raw, bound) * (1 - mask), shift * (1 - mask)
    return x * s.exp() + t, s


def fwd_summed_over_batch(x, mask, net, bound):
    z, s = fwd_not_summed(x, mask, net, bound)
    return z, s.sum()


def fwd_reads_all_of_x(x, mask, net, bound):
    shift, raw = net(x).chunk(2, dim=1)
    s, t = _log_scale(raw, bound) * (1 - mask), shift * (1 - mask)
    return x * s.exp() + t, s.sum(1)


def fwd_swapped_outputs(x, mask, net, bound):
    raw, shift = net(x * mask).chunk(2, dim=1)
    s, t = _log_scale(raw, bound) * (1 - mask), shift * (1 - mask)
    return x * s.exp() + t, s.sum(1)


def fwd_wrong_sign(x, mask, net, bound):
    z, s = fwd_not_summed(x, mask, net, bound)
    return z, -s.sum(1)


def inv_wrong_sign(z, mask, net, bound):
    shift, raw = net(z * mask).chunk(2, dim=1)
    s, t = _log_scale(raw, bound) * (1 - mask), shift * (1 - mask)
    return (z - t) * (-s).exp(), s.sum(1)


def inv_exp_raw(z, mask, net, bound):
    shift, raw = net(z * mask).chunk(2, dim=1)
    s, t = raw * (1 - mask), shift * (1 - mask)
    return (z - t) * (-s).exp(), -s.sum(1)


def inv_scales_kept_half(z, mask, net, bound):
    shift, raw = net(z * mask).chunk(2, dim=1)
    s = _log_scale(raw, bound)
    return (z - shift) * (-s).exp(), -s.sum(1)


def inv_scale_first(z, mask, net, bound):
    shift, raw = net(z * mask).chunk(2, dim=1)
    s, t = _log_scale(raw, bound) * (1 - mask), shift * (1 - mask)
    return z * (-s).exp() - t, -s.sum(1)


def inv_not_summed(z, mask, net, bound):
    shift, raw = net(z * mask).chunk(2, dim=1)
    s, t = _log_scale(raw, bound) * (1 - mask), shift * (1 - mask)
    return (z - t) * (-s).exp(), -s


def _stack(x, masks, nets, bound, sign=1, with_logdet=True, normaliser=True):
    total = torch.zeros(len(x), dtype=x.dtype)
    for mask, net in zip(masks, nets):
        x, ld = a05.reference_forward(x, mask, net, bound)
        total = total + ld
    base = -0.5 * x.pow(2).sum(1) - (0.5 * x.shape[1] * math.log(2 * math.pi) if normaliser else 0)
    return base + (sign * total if with_logdet else 0)


def stack_minus_logdet(x, masks, nets, bound):
    return _stack(x, masks, nets, bound, sign=-1)


def stack_no_logdet(x, masks, nets, bound):
    return _stack(x, masks, nets, bound, with_logdet=False)


def stack_no_normaliser(x, masks, nets, bound):
    return _stack(x, masks, nets, bound, normaliser=False)


def stack_reversed_order(x, masks, nets, bound):
    return _stack(x, masks[::-1], nets[::-1], bound)


FWD_1 = "forward: D=4, mask=[1, 1, 0, 0], batch 3, scale_bound=2"
INV_1 = "inverse: D=4, mask=[1, 1, 0, 0], batch 3, scale_bound=2"
STACK_1 = "2 couplings, D=2, batch 4"
WRONG = [
    ("coupling_forward", fwd_exp_raw, FWD_1, "exp(raw) instead of the bounded scale"),
    ("coupling_forward", fwd_scales_kept_half, FWD_1, "the kept half (where mask == 1) changed"),
    ("coupling_forward", fwd_scales_kept_half, FWD_1, "scale and shift applied to the conditioning half"),
    ("coupling_forward", fwd_not_summed, FWD_1, "sum over dim=1 to get shape (3,)"),
    ("coupling_forward", fwd_summed_over_batch, FWD_1, "summed over the batch too"),
    ("coupling_forward", fwd_reads_all_of_x, FWD_1, "the conditioner reads all of x"),
    ("coupling_forward", fwd_swapped_outputs, FWD_1, "shift and log-scale swapped"),
    ("coupling_forward", fwd_wrong_sign, FWD_1, "log_det has the wrong sign"),
    ("coupling_inverse", inv_wrong_sign, INV_1, "log-det with the wrong sign in the inverse"),
    ("coupling_inverse", inv_exp_raw, INV_1, "exp(raw) instead of the bounded scale"),
    ("coupling_inverse", inv_scales_kept_half, INV_1, "scale and shift applied to the conditioning half"),
    ("coupling_inverse", inv_scale_first, INV_1, "scale undone before the shift"),
    ("coupling_inverse", inv_not_summed, INV_1, "sum over dim=1 to get shape (3,)"),
    ("flow_log_prob", stack_minus_logdet, STACK_1, "the log-determinants subtracted"),
    ("flow_log_prob", stack_no_logdet, STACK_1, "the log-determinants left out"),
    ("flow_log_prob", stack_no_normaliser, STACK_1, "normalising constant left out"),
    ("flow_log_prob", stack_reversed_order, STACK_1, "values differ"),
]


def _check_source_output(text):
    round_trip = float(text.split("max |x - inverse(forward(x))| = ")[1].split()[0])
    assert round_trip < 1e-12
    gap = float(text.split("gap ")[1].split()[0])
    assert gap < 1.0, text  # a few hundred steps: clearly learning, far from uniform


SPEC = Assignment(
    number="05", checkers=CHECKERS, wrong=WRONG, stubs=3,
    strict_example=("coupling_inverse", inv_wrong_sign, "wrong sign in the inverse"),
    leaks=("torch.tanh(raw / scale_bound)", "(z - shift) * torch.exp(-log_scale)"),
    source_check=_check_source_output, student_expect=("Finish exercises 1 to 3 first",),
)
