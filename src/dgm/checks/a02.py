"""Checkers for assignment 2: the masks that make a network autoregressive.

A network defines ``p(x) = prod_i p(x_i | x_<i)`` only if the output for
``x_i`` never sees ``x_i`` or anything after it. So every checker here judges
the learner's answer by its *connectivity* -- which inputs each output can
see -- and only then by its exact values:

* ``made_masks(in_degrees, hidden_degrees) -> [M_1, ..., M_L, M_out]``,
  MADE's masks from the units' degrees. The path-existence matrix through the
  stack of masks (:func:`dgm.autoregressive.mask_connectivity`, a boolean
  matrix product) must never let the output of degree ``d`` see an input of
  degree ``>= d``, and must contain every path the degrees allow; then each
  mask is compared with :func:`dgm.autoregressive.made_masks`.
* ``conv_mask(kernel_size, mask_type, in_channels, out_channels)``, the
  PixelCNN kernel mask ``(out, in, k, k)``. The kernel entries it keeps are
  the pixels one masked convolution lets an output pixel see; they are
  compared with the mask of :class:`dgm.autoregressive.MaskedConv2d`.
* ``MaskedConv2d(in_channels, out_channels, kernel_size, mask_type)``, the
  layer. Judged by which input pixels each output pixel depends on
  (:func:`pixel_dependencies`, measured with gradients), with the weights as
  initialised and again after they change, as training changes them.
* ``pixelcnn(hidden_channels, num_layers, kernel_size)``, a small stack of
  those layers. Its pixel dependencies must lie strictly in the past (raster
  order) and equal those of the same stack built from the package's layers
  (:func:`reference_pixelcnn`), blind spot included.

Each checker returns a :class:`~dgm.checks.CheckResult`; with
``DGM_CHECKS_STRICT=1`` a failure raises ``AssertionError`` instead.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import (Case, CheckResult, Mistake, _first, finish, generator_problem, module_problem,
               parameter_gradient_problem, probe_case, run_checks, scalar_loss_problem, summarize_value)

__all__ = ["check_autoregressive_nll", "check_sample_autoregressive", "reference_nll", "NLL_MISTAKES",
    "check_made_masks",
    "check_conv_mask",
    "check_masked_conv2d",
    "check_pixelcnn",
    "pixel_dependencies",
    "reference_pixelcnn",
    "IMAGE_SIZE",
]

#: (height, width) of the test image for layers and stacks: not square, so a
#: transposed mask shows
IMAGE_SIZE = (7, 9)


# ---------------------------------------------------------------------------
# shared helpers: masks, pixels, messages
# ---------------------------------------------------------------------------
def _mask_problem(got: Any, shape: tuple[int, ...], label: str, transposed_hint: str) -> str | None:
    """``None`` when ``got`` is a float tensor of 0s and 1s shaped ``shape``, else what is wrong."""
    if not isinstance(got, torch.Tensor):
        return f"{label} should be a torch.Tensor of shape {shape}, got {summarize_value(got)}"
    if tuple(got.shape) != shape:
        extra = ""
        if got.ndim == len(shape) and tuple(got.shape) == shape[:-2] + shape[-1:] + shape[-2:-1] != shape:
            extra = f" ({transposed_hint})"
        return f"{label} has shape {tuple(got.shape)}, expected {shape}{extra}"
    if not got.is_floating_point():
        return f"{label} should be a floating-point tensor of 0.0 and 1.0 (use .float()), got dtype {got.dtype}"
    values = got.detach()
    if not ((values == 0) | (values == 1)).all():
        bad = values[(values != 0) & (values != 1)]
        return f"{label} should hold only 0s and 1s, but it has the value {float(bad[0]):.4g}"
    return None


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """'1 entry', '3 entries'."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _pixel(p: int, width: int) -> str:
    row, col = divmod(int(p), width)
    return f"({row}, {col})"


def _offset_text(drow: int, dcol: int) -> str:
    """'the centre pixel itself', '1 row above and 2 columns to the right of the centre', ..."""
    if drow == 0 and dcol == 0:
        return "the centre pixel itself"
    parts = []
    if drow:
        parts.append(f"{abs(drow)} row{'s' if abs(drow) > 1 else ''} {'above' if drow < 0 else 'below'}")
    if dcol:
        parts.append(f"{abs(dcol)} column{'s' if abs(dcol) > 1 else ''} to the {'left' if dcol < 0 else 'right'}")
    return " and ".join(parts) + " of the centre"


# ---------------------------------------------------------------------------
# 1. made_masks
# ---------------------------------------------------------------------------
def _reference_made_masks(in_degrees: torch.Tensor, hidden_degrees: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    from dgm.autoregressive import made_masks

    return made_masks(in_degrees, list(hidden_degrees))


def _connectivity(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    from dgm.autoregressive import mask_connectivity

    return mask_connectivity([m.detach() for m in masks])


def _made_masks_with(in_degrees, hidden_degrees, hidden_rule, output_rule, transpose=False) -> list[torch.Tensor]:
    """Masks built with the given comparisons: the shape of several known mistakes."""
    masks, below = [], in_degrees
    for degrees in hidden_degrees:
        masks.append(hidden_rule(degrees[:, None], below[None, :]).float())
        below = degrees
    masks.append(output_rule(in_degrees[:, None], below[None, :]).float())
    return [m.T for m in masks] if transpose else masks


def _inverse_degrees(in_degrees: torch.Tensor) -> torch.Tensor:
    """The degrees read the other way round: input ``in_degrees[j] - 1`` gets degree ``j + 1``."""
    out = torch.empty_like(in_degrees)
    out[in_degrees - 1] = torch.arange(1, len(in_degrees) + 1)
    return out


_MADE_MISTAKES = (
    Mistake("`>=` in the output mask",
            lambda d, h: _made_masks_with(d, h, torch.ge, torch.ge),
            "the output for the input of degree d may only see hidden units of degree < d (strictly): with >= it "
            "reaches units of degree d, which see the input x_d itself."),
    Mistake("`>` in the hidden masks",
            lambda d, h: _made_masks_with(d, h, torch.gt, torch.gt),
            "a hidden unit of degree m may see every unit below it of degree <= m (>=, not >); with > it loses "
            "connections, and the outputs miss inputs they are allowed to use."),
    Mistake("`>` in the hidden masks and `>=` in the output mask",
            lambda d, h: _made_masks_with(d, h, torch.gt, torch.ge),
            "the two comparisons are swapped: hidden masks use >=, only the output mask uses strict >."),
    Mistake("transposed masks",
            lambda d, h: _made_masks_with(d, h, torch.ge, torch.gt, transpose=True),
            "a mask is shaped like nn.Linear's weight, (out_features, in_features): one ROW per unit of the "
            "layer it feeds, one column per unit below."),
    Mistake("the degrees read as a visiting order (the inverse permutation)",
            lambda d, h: _made_masks_with(_inverse_degrees(d), h, torch.ge, torch.gt),
            "in_degrees[j] IS the degree of input j; use it as it is. (An ordering that lists which input comes "
            "first is its inverse: in_degrees[ordering] = 1..D.)"),
    Mistake("the natural order 1..D instead of in_degrees",
            lambda d, h: _made_masks_with(torch.arange(1, len(d) + 1), h, torch.ge, torch.gt),
            "use the given in_degrees for the inputs (and the outputs), not torch.arange(1, D + 1)."),
)


def _made_judge(got: Any, args: tuple) -> str | None:
    in_degrees, hidden_degrees = args
    expected = _reference_made_masks(in_degrees, hidden_degrees)
    n_hidden = len(hidden_degrees)
    if not isinstance(got, (list, tuple)):
        return f"expected a list of {len(expected)} masks, got {summarize_value(got)}"
    if len(got) != len(expected):
        extra = ""
        if len(got) == n_hidden:
            extra = " (the output mask, from the last hidden layer to the outputs, is missing)"
        return (f"expected {len(expected)} masks ({n_hidden} hidden layer{'s' if n_hidden != 1 else ''} + the output "
                f"layer), got {len(got)}{extra}")
    names = [f"mask {i} (hidden layer {i + 1})" for i in range(n_hidden)] + [f"mask {n_hidden} (output layer)"]
    for i, (mask, ref) in enumerate(zip(got, expected)):
        problem = _mask_problem(mask, tuple(ref.shape), names[i],
                                "transposed: nn.Linear's weight is (out_features, in_features)")
        if problem:
            return problem

    # connectivity: the only thing that makes the network autoregressive
    conn = _connectivity(got)
    allowed = in_degrees[:, None] > in_degrees[None, :]
    leak = conn & ~allowed
    if leak.any():
        k, j = _first(leak)
        dk, dj = int(in_degrees[k]), int(in_degrees[j])
        what = f"input {j}, its own variable" if k == j else f"input {j} (degree {dj})"
        return (f"not autoregressive: output {k} (degree {dk}) depends on {what}; the output of degree d may only "
                f"depend on inputs of degree < d ({_count(int(leak.sum()), 'forbidden input-output path')} in all)")
    reference_conn = _connectivity(expected)
    missing = reference_conn & ~conn
    if missing.any():
        k, j = _first(missing)
        return (f"connections missing: output {k} (degree {int(in_degrees[k])}) should depend on input {j} "
                f"(degree {int(in_degrees[j])}) through the hidden units, but no path joins them "
                f"({_count(int(missing.sum()), 'input-output path')} missing in all)")
    # the connectivity is right: now the exact masks of the convention
    for i, (mask, ref) in enumerate(zip(got, expected)):
        wrong = mask.detach().ne(ref)
        if wrong.any():
            k, j = _first(wrong)
            below = in_degrees if i == 0 else hidden_degrees[i - 1]
            above = in_degrees if i == n_hidden else hidden_degrees[i]
            rule = "m_out(k) > m_in(j)" if i == n_hidden else "m_out(k) >= m_in(j)"
            return (f"the inputs reach the right outputs, but {names[i]} differs from the rule {rule} at "
                    f"[{k}, {j}] (unit degree {int(above[k])}, unit below degree {int(below[j])}): expected "
                    f"{int(ref[k, j])}, got {float(mask[k, j]):g}")
    return None


def _covering_degrees(gen: torch.Generator, size: int, d: int) -> torch.Tensor:
    """``size`` hidden degrees in 1..d-1 that use every value (when size >= d-1), in random order."""
    return torch.randperm(size, generator=gen) % (d - 1) + 1


def _made_case(name: str, in_degrees, hidden_degrees, hidden: bool, hint: str = "", inputs: str | None = None) -> Case:
    in_degrees = torch.as_tensor(in_degrees, dtype=torch.long)
    hidden_degrees = [torch.as_tensor(h, dtype=torch.long) for h in hidden_degrees]
    if inputs is None:
        inputs = (f"in_degrees={in_degrees.tolist()}; hidden_degrees="
                  f"{[h.tolist() for h in hidden_degrees]}")
    return Case(name, (in_degrees, hidden_degrees), judge=_made_judge, hidden=hidden, hint=hint, inputs=inputs)


def _random_made_case(name: str, seed: int, d: int, sizes: Sequence[int], sampled: bool) -> Case:
    """A hidden case: a random ordering; degrees that use every value, or drawn as in the paper."""
    from dgm.autoregressive import made_degrees

    gen = torch.Generator().manual_seed(seed)
    ordering = torch.randperm(d, generator=gen)
    if sampled:
        in_degrees, hidden_degrees = made_degrees(ordering, sizes, gen)
        how = "drawn as in the paper (dgm.autoregressive.made_degrees)"
    else:
        in_degrees, _ = made_degrees(ordering, [], gen)
        hidden_degrees = [_covering_degrees(gen, size, d) for size in sizes]
        how = f"every degree 1..{d - 1} used in each layer, in random order"
    shown = in_degrees.tolist() if d <= 12 else f"a random permutation of 1..{d}"
    inputs = f"D={d}; in_degrees={shown}; hidden sizes {tuple(sizes)}, degrees {how}"
    return _made_case(name, in_degrees, hidden_degrees, True, inputs=inputs)


def made_masks_cases() -> list[Case]:
    hint = ("hidden layer: mask[k, j] = 1 if m(k) >= m_below(j); output layer: mask[i, k] = 1 if "
            "in_degrees[i] > m_last(k); each mask is (units of this layer, units below).")
    return [
        _made_case("D=3 in natural order, one hidden layer of 4 units", [1, 2, 3], [[1, 2, 1, 2]], False, hint),
        _made_case("D=4, in_degrees=[3, 1, 4, 2], two hidden layers", [3, 1, 4, 2], [[2, 1, 3, 1, 2], [1, 3, 2]],
                   False, hint),
        _made_case("D=2, in_degrees=[2, 1], one hidden layer of 3 units", [2, 1], [[1, 1, 1]], True, hint),
        _made_case("D=5, no hidden layer (hidden_degrees = [])", [4, 1, 5, 3, 2], [], True,
                   "with no hidden layer the only mask joins inputs to outputs directly: "
                   "mask[i, j] = 1 if in_degrees[i] > in_degrees[j]."),
        _random_made_case("D=7, random ordering, one hidden layer of 7 units (square masks)", 71, 7, [7], False),
        _random_made_case("D=12, random ordering, 3 hidden layers, degrees drawn at random", 72, 12, [9, 20, 6], True),
        _random_made_case("D=16, random ordering, 4 hidden layers of 16 units", 73, 16, [16, 16, 16, 16], False),
        _random_made_case("D=30, random ordering, 2 hidden layers of random sizes", 74, 30, [41, 57], False),
        _random_made_case("D=25, random ordering, 2 hidden layers, degrees drawn at random", 75, 25, [30, 12], True),
    ]


def check_made_masks(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``made_masks(in_degrees, hidden_degrees) -> [M_1, ..., M_L, M_out]`` (MADE's masks)."""
    cases = made_masks_cases()
    for case in cases:
        case.mistakes = _MADE_MISTAKES
    result = run_checks(fn, cases, title="made_masks", arg_names=("in_degrees", "hidden_degrees"), atol=0, rtol=0)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 2. conv_mask
# ---------------------------------------------------------------------------
def _reference_conv_mask(kernel_size: int, mask_type: str, in_channels: int = 1, out_channels: int = 1) -> torch.Tensor:
    from dgm.autoregressive import MaskedConv2d

    layer = MaskedConv2d(in_channels, out_channels, kernel_size, mask_type)
    return layer.mask.expand(out_channels, in_channels, kernel_size, kernel_size).clone().float()


def _spatial_variant(transform: Callable[[torch.Tensor, int, str], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A known mistake: ``transform(correct (k, k) mask, k, mask_type)``, expanded to the channels."""

    def wrong(kernel_size, mask_type, in_channels=1, out_channels=1):
        spatial = _reference_conv_mask(kernel_size, mask_type)[0, 0]
        return transform(spatial, kernel_size, mask_type).expand(out_channels, in_channels, -1, -1).clone()

    return wrong


def _whole_centre_row(m: torch.Tensor, k: int, mask_type: str) -> torch.Tensor:
    m = m.clone()
    m[k // 2, :] = 1
    if mask_type == "A":
        m[k // 2, k // 2] = 0
    return m


def _rows_below_kept(m: torch.Tensor, k: int, mask_type: str) -> torch.Tensor:
    m = m.clone()
    m[k // 2 + 1:] = 1
    return m


def _other_type(m: torch.Tensor, k: int, mask_type: str) -> torch.Tensor:
    m = m.clone()
    m[k // 2, k // 2] = 1 - m[k // 2, k // 2]
    return m


_CONV_MISTAKES = (
    Mistake("the centre pixel of the other mask type", _spatial_variant(_other_type),
            "type A (first layer) leaves the centre OUT, so a pixel never sees its own value; type B (later "
            "layers) keeps it, because there the centre holds features of the past only."),
    Mistake("the whole centre row kept", _spatial_variant(_whole_centre_row),
            "in the centre row only the pixels LEFT of the centre come earlier in raster order; zero the rest "
            "(from the centre for type A, after it for type B)."),
    Mistake("the rows below the centre kept", _spatial_variant(_rows_below_kept),
            "every row below the centre comes later in raster order: zero them all."),
    Mistake("the mask transposed (column-by-column order)", _spatial_variant(lambda m, k, t: m.T.contiguous()),
            "raster order runs along a ROW first (left to right), then moves down: keep the rows above the centre, "
            "and the left part of the centre row, not the columns to the left."),
    Mistake("the mask flipped (the future instead of the past)", _spatial_variant(lambda m, k, t: m.flip(0, 1)),
            "keep the pixels above and to the left of the centre: they come earlier in raster order."),
)


def _conv_judge(got: Any, args: tuple) -> str | None:
    kernel_size, mask_type, in_channels, out_channels = args
    k = kernel_size
    shape = (out_channels, in_channels, k, k)
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (k, k):
        return f"the mask has shape {(k, k)}: return the full weight-shaped mask {shape} (expand it over the channels)"
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (in_channels, out_channels, k, k) != shape:
        return (f"the mask has shape {tuple(got.shape)}: in and out channels are swapped; nn.Conv2d's weight is "
                f"(out_channels, in_channels, kh, kw) = {shape}")
    problem = _mask_problem(got, shape, "the mask", "the kernel's height and width are swapped")
    if problem:
        return problem
    got = got.detach()
    spatial = got[0, 0]
    differs = (got != spatial).flatten(2).any(-1)
    if differs.any():
        o, i = _first(differs)
        return (f"the mask differs between channel pairs: [{o}, {i}] is not the same as [0, 0]; with one colour "
                f"every (out, in) channel pair gets the same spatial mask")
    reference = _reference_conv_mask(*args)[0, 0]
    centre = k // 2
    if spatial[centre, centre] != reference[centre, centre]:
        if mask_type == "A":
            return ("type A keeps the centre pixel: an output would see the very pixel it predicts "
                    "(the centre entry must be 0 for type A)")
        return "type B drops the centre pixel: the centre entry must be 1 for type B"
    later = (spatial == 1) & (reference == 0)
    if later.any():
        r, c = _first(later)
        return (f"the mask keeps kernel entry [{r}, {c}], the pixel {_offset_text(r - centre, c - centre)}, which "
                f"comes later in raster order ({_count(int(later.sum()), 'such entry', 'such entries')})")
    earlier = (spatial == 0) & (reference == 1)
    if earlier.any():
        r, c = _first(earlier)
        return (f"the mask drops kernel entry [{r}, {c}], the pixel {_offset_text(r - centre, c - centre)}, which "
                f"comes earlier in raster order and should be visible "
                f"({_count(int(earlier.sum()), 'such entry', 'such entries')})")
    return None


def _conv_case(kernel_size: int, mask_type: str, in_channels: int, out_channels: int, hidden: bool,
               expected: list | None = None, hint: str = "") -> Case:
    name = f"{kernel_size}x{kernel_size} type {mask_type}, {in_channels} in / {out_channels} out channels"
    if expected is not None:
        name += f": {expected}"
    args = (kernel_size, mask_type, in_channels, out_channels)
    inputs = f"kernel_size={kernel_size}, mask_type={mask_type!r}, in_channels={in_channels}, out_channels={out_channels}"
    return Case(name, args, judge=_conv_judge, hidden=hidden, hint=hint, inputs=inputs)


def conv_mask_cases() -> list[Case]:
    hint = ("raster order: every row above the centre is visible, and in the centre row the pixels left of the "
            "centre; type B adds the centre itself.")
    return [
        _conv_case(3, "A", 1, 1, False, [[1, 1, 1], [1, 0, 0], [0, 0, 0]], hint),
        _conv_case(3, "B", 1, 1, False, [[1, 1, 1], [1, 1, 0], [0, 0, 0]], hint),
        _conv_case(5, "A", 2, 3, True, hint=hint),
        _conv_case(5, "B", 4, 4, True, hint=hint),
        _conv_case(7, "A", 3, 1, True, hint=hint),
        _conv_case(7, "B", 1, 2, True, hint=hint),
        _conv_case(1, "B", 2, 3, True, hint="a 1x1 type-B mask keeps its only entry, the centre: all ones."),
        _conv_case(3, "A", 5, 2, True, hint=hint),
    ]


def check_conv_mask(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``conv_mask(kernel_size, mask_type, in_channels=1, out_channels=1) -> (out, in, k, k)``."""
    cases = conv_mask_cases()
    for case in cases:
        case.mistakes = _CONV_MISTAKES
    result = run_checks(fn, cases, title="conv_mask",
                        arg_names=("kernel_size", "mask_type", "in_channels", "out_channels"), atol=0, rtol=0)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# which input pixels an output pixel sees
# ---------------------------------------------------------------------------
def pixel_dependencies(module: Callable[[torch.Tensor], torch.Tensor], in_channels: int, height: int, width: int,
                       *, positive: bool = True, seed: int = 0, batch: int = 3) -> torch.Tensor:
    """Which input pixels each output pixel depends on: bool ``(H*W, H*W)``.

    Entry ``[p, q]`` is True when some output channel at pixel ``p`` depends on
    some input channel at pixel ``q``; pixels are numbered in raster order,
    ``p = row * width + col``. Measured with gradients on a copy of
    ``module`` (which maps ``(N, in_channels, H, W)`` to ``(N, C, H, W)``):

    * ``positive=True``: every parameter of the copy is made positive
      (``|w| + 0.01``) and so is the input, so no ReLU is switched off and no
      two paths cancel. The answer is the network's *structural*
      connectivity, and it reveals any weight that ``forward`` does not mask
      (training would give such a weight a value);
    * ``positive=False``: the weights as they are, ``batch`` random inputs and
      a random projection of the output channels: what the layer does now.

    A raster-order autoregressive stack has a strictly lower-triangular matrix.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead
    try:
        return _pixel_dependencies(module, in_channels, height, width, positive, seed, batch)
    finally:
        torch.set_num_threads(threads)


def _pixel_dependencies(module, in_channels: int, height: int, width: int, positive: bool, seed: int,
                        batch: int) -> torch.Tensor:
    model = copy.deepcopy(module)
    if isinstance(model, nn.Module):
        model.eval()
        if positive:
            with torch.no_grad():
                for param in model.parameters():
                    if param.is_floating_point():
                        param.abs_().add_(0.01)
    gen = torch.Generator().manual_seed(seed)
    if positive:
        base = 0.5 + torch.rand(1, in_channels, height, width, generator=gen)
    else:
        base = torch.randn(batch, in_channels, height, width, generator=gen)
    n, b = height * width, len(base)
    # one copy of the inputs per output pixel p: copy p is differentiated through output pixel p only
    x = base.repeat(n, 1, 1, 1).requires_grad_(True)  # (n * b, C, H, W), copy p holds rows p*b .. p*b + b-1
    y = model(x)
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or tuple(y.shape[2:]) != (height, width) or len(y) != n * b:
        raise ValueError(f"expected an output of shape ({n * b}, C, {height}, {width}), got {summarize_value(y)}")
    proj = torch.ones(y.shape[1]) if positive else torch.randn(y.shape[1], generator=gen)
    out = (y * proj.to(y)[None, :, None, None]).sum(1).reshape(n, b, n)  # [copy p, example, output pixel]
    own = out[torch.arange(n), :, torch.arange(n)]  # (n, b): output pixel p of copy p
    (grad,) = torch.autograd.grad(own.sum(), x, allow_unused=True)
    if grad is None:
        return torch.zeros(n, n, dtype=torch.bool)
    return grad.reshape(n, b * in_channels, n).abs().sum(1) > 0


def _dependency_problem(got: torch.Tensor, expected: torch.Tensor, width: int, *, self_hint: str = "",
                        extra_hint: str = "", missing_hint: str | Callable | None = "") -> str | None:
    """Compare two dependency matrices; describe the first difference, worst kind first.

    ``missing_hint`` may be a function ``(got, expected) -> str``; ``None``
    looks only for dependencies that should not be there.
    """
    extra = got & ~expected
    n = len(got)
    own = extra & torch.eye(n, dtype=torch.bool)
    later = extra & torch.ones(n, n, dtype=torch.bool).triu(1)
    for kind in (later, own):  # a look into the future first: it is the more basic mistake
        if kind.any():
            p, q = _first(kind)
            what = "itself" if p == q else f"input pixel {_pixel(q, width)}, which comes later in raster order"
            return (f"not autoregressive: output pixel {_pixel(p, width)} depends on {what} "
                    f"({_count(int(extra.sum()), 'forbidden (output, input) pixel pair')} in all)"
                    f"{self_hint if p == q else ''}")
    if extra.any():
        p, q = _first(extra)
        return (f"output pixel {_pixel(p, width)} depends on the earlier input pixel {_pixel(q, width)}, which it "
                f"should not reach ({_count(int(extra.sum()), 'such pair')}){extra_hint}")
    if missing_hint is None:
        return None
    missing = expected & ~got
    if missing.any():
        p, q = _first(missing)
        what = "input pixel itself" if p == q else f"earlier input pixel {_pixel(q, width)}"
        hint = missing_hint(got, expected) if callable(missing_hint) else missing_hint
        return (f"output pixel {_pixel(p, width)} does not see the {what}, which it should "
                f"({_count(int(missing.sum()), '(output, input) pixel pair')} missing){hint}")
    return None


_ONLY_AT_INIT = ("; with the weights as initialised it was fine, so the mask is applied only once. Training "
                 "changes the weights: multiply by the mask in forward, every call "
                 "(F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding))")


def _judge_dependencies(module: nn.Module, in_channels: int, expected: torch.Tensor, *, self_hint: str = "",
                        extra_hint: str = "", missing_hint: str | Callable = "") -> str | None:
    """Dependencies as initialised, then structurally (any weight values), against ``expected``."""
    height, width = IMAGE_SIZE
    as_is = pixel_dependencies(module, in_channels, height, width, positive=False)
    problem = _dependency_problem(as_is, expected, width, self_hint=self_hint, extra_hint=extra_hint,
                                  missing_hint=None)
    if problem:
        return problem
    structural = pixel_dependencies(module, in_channels, height, width)
    leak = _dependency_problem(structural, expected, width, self_hint=self_hint, extra_hint=extra_hint,
                               missing_hint=None)
    if leak:
        return "after the weights change (as in training): " + leak + _ONLY_AT_INIT
    return _dependency_problem(structural, expected, width, missing_hint=missing_hint)


def _run_module(module: Any, in_channels: int, out_channels: int, who: str) -> str | None:
    """``None`` when ``module`` maps a batch of images to the right shape, else what is wrong."""
    height, width = IMAGE_SIZE
    if not callable(module):
        return f"{who} should give a torch.nn.Module, got {summarize_value(module)}"
    x = torch.rand(2, in_channels, height, width, generator=torch.Generator().manual_seed(0))
    try:
        y = module(x)
    except Exception as exc:  # noqa: BLE001 - reported to the learner
        return f"calling it on a batch of shape {tuple(x.shape)} raised {type(exc).__name__}: {exc}"
    want = (2, out_channels, height, width)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else summarize_value(y)
        extra = ""
        if isinstance(y, torch.Tensor) and y.ndim == 4 and tuple(y.shape[2:]) != (height, width):
            extra = " (padding = kernel_size // 2 keeps the image size)"
        elif isinstance(y, torch.Tensor) and y.ndim == 4 and y.shape[1] != out_channels:
            extra = f" ({out_channels} output channel{'s' if out_channels > 1 else ''} expected)"
        return f"on input {tuple(x.shape)} the output has shape {got}, expected {want}{extra}"
    return None


# ---------------------------------------------------------------------------
# 3. MaskedConv2d
# ---------------------------------------------------------------------------
def _reference_layer(in_channels: int, out_channels: int, kernel_size: int, mask_type: str) -> nn.Module:
    from dgm.autoregressive import MaskedConv2d

    return MaskedConv2d(in_channels, out_channels, kernel_size, mask_type)


def _layer_judge(got: Any, args: tuple) -> str | None:
    in_channels, out_channels, kernel_size, mask_type = args
    if not isinstance(got, nn.Module):
        return f"MaskedConv2d(...) should make a torch.nn.Module, got {summarize_value(got)}"
    extra = [name for name, _ in got.named_parameters() if name.rsplit(".", 1)[-1] not in ("weight", "bias")]
    if extra:
        return (f"the layer has trainable parameters besides weight and bias: {extra}; the optimiser would "
                f"change the mask: store it with self.register_buffer('mask', ...)")
    problem = _run_module(got, in_channels, out_channels, "MaskedConv2d(...)")
    if problem:
        return problem
    problem = module_problem(got, torch.rand(2, in_channels, *IMAGE_SIZE, generator=torch.Generator().manual_seed(1)),
                             who="the layer")
    if problem:
        return problem
    expected = pixel_dependencies(_reference_layer(*args), in_channels, *IMAGE_SIZE)
    return _judge_dependencies(
        got, in_channels, expected,
        self_hint=": a type-A layer must not see the centre pixel",
        extra_hint=": is the mask the right size for kernel_size, and is it the mask of this mask_type?",
        missing_hint=(f" (the layer sees exactly the pixels conv_mask({kernel_size}, {mask_type!r}) keeps"
                      + ("; type B keeps the centre" if mask_type == "B" else "") + ")"))


def masked_conv2d_cases() -> list[Case]:
    hint = ("register conv_mask(kernel_size, mask_type, in_channels, out_channels) as a buffer, use "
            "padding=kernel_size // 2, and convolve with self.weight * self.mask in forward.")
    cases = []
    for args, hidden in [((1, 4, 3, "A"), False), ((4, 4, 3, "B"), False), ((2, 3, 5, "A"), True),
                         ((3, 2, 7, "B"), True), ((2, 2, 1, "B"), True), ((1, 3, 5, "B"), True)]:
        i, o, k, t = args
        name = f"MaskedConv2d({i}, {o}, {k}, {t!r}) on a {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} image"
        cases.append(Case(name, args, judge=_layer_judge, hidden=hidden, hint=hint, seed=0,
                          inputs=f"in_channels={i}, out_channels={o}, kernel_size={k}, mask_type={t!r}"))
    return cases


def check_masked_conv2d(cls: Callable, strict: bool | None = None) -> CheckResult:
    """Check the class ``MaskedConv2d(in_channels, out_channels, kernel_size, mask_type)`` by its pixel dependencies."""
    result = run_checks(cls, masked_conv2d_cases(), title="MaskedConv2d")
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 4. pixelcnn
# ---------------------------------------------------------------------------
def reference_pixelcnn(hidden_channels: int, num_layers: int, kernel_size: int) -> nn.Sequential:
    """The stack of exercise 4, from :class:`dgm.autoregressive.MaskedConv2d`.

    A type-A ``k x k`` layer ``1 -> hidden_channels``, then ``num_layers - 1``
    type-B ``k x k`` layers ``hidden -> hidden``, each followed by a ReLU, then a
    ``1 x 1`` type-B layer to one output channel (one logit per pixel).
    """
    from dgm.autoregressive import MaskedConv2d

    layers: list[nn.Module] = [MaskedConv2d(1, hidden_channels, kernel_size, "A"), nn.ReLU()]
    for _ in range(num_layers - 1):
        layers += [MaskedConv2d(hidden_channels, hidden_channels, kernel_size, "B"), nn.ReLU()]
    layers.append(MaskedConv2d(hidden_channels, 1, 1, "B"))
    return nn.Sequential(*layers)


def _stack_judge(got: Any, args: tuple) -> str | None:
    problem = _run_module(got, 1, 1, "pixelcnn(...)")
    if problem:
        return problem
    problem = _structure_problem(got, *args)
    if problem:
        return problem
    problem = module_problem(got, torch.rand(2, 1, *IMAGE_SIZE, generator=torch.Generator().manual_seed(1)),
                             who="the stack")
    if problem:
        return problem
    expected = pixel_dependencies(reference_pixelcnn(*args), 1, *IMAGE_SIZE)
    return _judge_dependencies(
        got, 1, expected,
        self_hint=(": the FIRST layer must be type A; a type-B first layer passes each pixel's own value "
                   "on to its output"),
        extra_hint=": is the last layer a 1x1 convolution, and are there exactly num_layers k x k layers?",
        missing_hint=_stack_missing_hint)


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.SiLU)


def _structure_problem(stack: nn.Module, hidden_channels: int, num_layers: int, kernel_size: int) -> str | None:
    """What the exercise asks of the stack's layers: the hidden size, a non-linearity after every k x k layer,
    and nothing after the last 1x1 layer (it returns logits)."""
    modules = list(stack.children()) if isinstance(stack, nn.Sequential) else []
    if not modules:
        return None  # a custom module: judged by its dependencies only
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    activations = [m for m in modules if isinstance(m, _ACTIVATIONS)]
    if isinstance(modules[-1], _ACTIVATIONS):
        return (f"the stack ends with {type(modules[-1]).__name__}: the last 1x1 layer returns LOGITS (any real "
                "number); an activation after it squashes them (drop it; the loss applies the sigmoid)")
    widths = [m.out_channels for m in convs[:-1]]
    if widths and any(w != hidden_channels for w in widths):
        return (f"the hidden layers have {widths} output channels; every k x k layer should have hidden_channels = "
                f"{hidden_channels} (the argument, not a fixed number)")
    if len(activations) < len(convs) - 1:  # (how many layers there should be is judged by what they see)
        return (f"{len(activations)} non-linearities for {len(convs) - 1} k x k layers: put an nn.ReLU() after "
                "every k x k masked layer, or the stack is one linear map however deep it is")
    return None


def _stack_missing_hint(got: torch.Tensor, expected: torch.Tensor) -> str:
    """Why a stack sees too little: a type-A layer after the first loses the pixel to the left."""
    width = IMAGE_SIZE[1]
    left = torch.arange(len(got))
    left = left[left % width > 0]  # pixels with a left neighbour
    if (expected[left, left - 1] & ~got[left, left - 1]).any():
        return (": after the first layer use type B. A type-A layer later in the stack drops the centre, and of "
                "the positions it may read, only the centre holds the pixel just to the left, so that pixel is lost")
    return ": too few layers, or a kernel smaller than kernel_size?"


def pixelcnn_cases() -> list[Case]:
    hint = ("MaskedConv2d(1, h, k, 'A'), ReLU, then num_layers - 1 times MaskedConv2d(h, h, k, 'B'), ReLU, "
            "then MaskedConv2d(h, 1, 1, 'B'); return them in an nn.Sequential.")
    cases = []
    for args, hidden in [((8, 2, 3), False), ((4, 3, 3), True), ((6, 2, 5), True), ((3, 1, 7), True),
                         ((4, 5, 3), True)]:
        h, n, k = args
        name = f"pixelcnn({h}, {n}, {k}) on a {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} image"
        cases.append(Case(name, args, judge=_stack_judge, hidden=hidden, hint=hint, seed=0,
                          inputs=f"hidden_channels={h}, num_layers={n}, kernel_size={k}"))
    return cases


def check_pixelcnn(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``pixelcnn(hidden_channels, num_layers, kernel_size) -> nn.Module`` by its pixel dependencies."""
    result = run_checks(fn, pixelcnn_cases(), title="pixelcnn")
    return finish(result, strict)



# ---------------------------------------------------------------------------
# 5. the NLL of a batch under an autoregressive network
# ---------------------------------------------------------------------------
class _MADE(nn.Module):
    """A small seeded MADE ``(B, D) -> logits (B, D)`` in a given order (for the checks)."""

    def __init__(self, order: torch.Tensor, hidden: int, seed: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        from dgm.autoregressive import made_degrees, made_masks

        gen = torch.Generator().manual_seed(seed)
        d = len(order)
        in_degrees, hidden_degrees = made_degrees(order, [hidden], gen)
        first, last = made_masks(in_degrees, hidden_degrees)
        self.register_buffer("mask_in", first.to(dtype))
        self.register_buffer("mask_out", last.to(dtype))
        self.w1 = nn.Parameter(torch.randn(hidden, d, generator=gen, dtype=dtype))
        self.b1 = nn.Parameter(torch.randn(hidden, generator=gen, dtype=dtype))
        self.w2 = nn.Parameter(torch.randn(d, hidden, generator=gen, dtype=dtype) / hidden**0.5)
        self.b2 = nn.Parameter(torch.randn(d, generator=gen, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ (self.w1 * self.mask_in).T + self.b1)
        return h @ (self.w2 * self.mask_out).T + self.b2


def reference_nll(net: Callable, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-log p(x) = sum_i BCE(logit_i, x_i)``, nats per example, a scalar tensor."""
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(net(x), x, reduction="none").sum(1).mean()


def _bce(logits, x):
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(logits, x, reduction="none")


NLL_MISTAKES = (
    Mistake("averaged over the pixels too (nats per pixel)", lambda net, x: _bce(net(x), x).mean(),
            "log p(x) = sum_i log p(x_i | x_<i): SUM over the pixels (.sum(1)), then average over the batch."),
    Mistake("summed over the batch", lambda net, x: _bce(net(x), x).sum(),
            "average over the batch (.mean() after .sum(1)): nats per example, whatever the batch size."),
    Mistake("the log-likelihood (wrong sign)", lambda net, x: -_bce(net(x), x).sum(1).mean(),
            "return the NEGATIVE log-likelihood, sum_i BCE(logit_i, x_i), a positive number to minimise."),
    Mistake("the network run on zeros, not on the data", lambda net, x: _bce(net(torch.zeros_like(x)), x).sum(1).mean(),
            "the conditionals p(x_i | x_<i) need the data: one pass net(x) gives all of them at once "
            "(the masks keep x_i and later pixels out of logit i)."),
    Mistake("the logits read as probabilities",
            lambda net, x: -(x * net(x).clamp(1e-6, 1 - 1e-6).log()
                             + (1 - x) * (1 - net(x).clamp(1e-6, 1 - 1e-6)).log()).sum(1).mean(),
            "the network returns LOGITS: use F.binary_cross_entropy_with_logits(logits, x), not log(logits)."),
)


def _nll_case(name: str, batch: int, d: int, seed: int, hidden: bool, dtype: torch.dtype = torch.float32,
              scale: float = 1.0) -> Case:
    def build() -> tuple:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(d, generator=gen)
        net = _MADE(order, 16, seed + 1, dtype)
        with torch.no_grad():
            net.w2.mul_(scale)
        x = (torch.rand(batch, d, generator=gen) < 0.4).to(dtype)
        return net, x

    return Case(name, build, reference=reference_nll, hidden=hidden, mistakes=NLL_MISTAKES,
                inputs=f"net: a small MADE on D={d} binary pixels (random order); x: ({batch}, {d}) {str(dtype)[6:]}",
                hint="F.binary_cross_entropy_with_logits(net(x), x, reduction='none').sum(1).mean()")


def _nll_gradient_probe(fn: Callable) -> str | None:
    return parameter_gradient_problem(fn, reference_nll, _nll_case("", 12, 6, 77, True).build_args, what="the NLL",
                                      atol=1e-5, rtol=1e-4)


def _nll_scalar(got: Any, args: tuple) -> str | None:
    return scalar_loss_problem(got, "the NLL (the mean over the batch)")


def check_autoregressive_nll(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``autoregressive_nll(net, x) -> scalar``: mean over the batch of the summed per-pixel BCE."""
    cases = [
        _nll_case("a MADE on 6 pixels, batch 5", 5, 6, 10, False),
        _nll_case("hidden: 64 pixels, batch 30", 30, 64, 20, True),
        _nll_case("hidden: 3 pixels, batch 1", 1, 3, 30, True),
        _nll_case("hidden: very confident network (logits up to +-200)", 8, 10, 40, True, scale=60.0),
        _nll_case("hidden: 12 pixels, batch 7, float64", 7, 12, 50, True, dtype=torch.float64),
        probe_case("hidden: the NLL sends the network's parameters the right gradient", _nll_gradient_probe),
    ]
    result = run_checks(fn, cases, title="autoregressive_nll", arg_names=("net", "x"), validate=_nll_scalar)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 6. ancestral sampling
# ---------------------------------------------------------------------------
class _ChainNet(nn.Module):
    """An autoregressive "network" whose joint is a known Markov chain along ``order``.

    ``p(x_first = 1) = sigmoid(start)``; every later variable copies the one before it in ``order``
    with logit ``stay`` towards it: ``logit = base + stay * (2 x_prev - 1)``.
    """

    def __init__(self, order: torch.Tensor, start: float, base: float, stay: float) -> None:
        super().__init__()
        self.register_buffer("order", order.clone())
        self.start, self.base, self.stay = start, base, stay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full_like(x, self.base)
        previous = x[:, self.order[:-1]]
        logits[:, self.order[1:]] = self.base + self.stay * (2 * previous - 1)
        logits[:, self.order[0]] = self.start
        return logits


def _sample_judge(n: int, order: torch.Tensor, net: _ChainNet) -> Callable[[Any], str | None]:
    import math

    def judge(samples: Any) -> str | None:
        d = len(order)
        if not isinstance(samples, torch.Tensor) or tuple(samples.shape) != (n, d):
            return f"should return a tensor of shape ({n}, {d}), one row per sample, got {summarize_value(samples)}"
        values = samples.detach().double()
        if not bool(((values == 0) | (values == 1)).all()):
            return ("the samples should be 0s and 1s: draw each pixel with torch.bernoulli(torch.sigmoid(logit)), "
                    "not the probability itself")
        if bool((values == values[:1]).all()):
            return ("every sample is the same: the pixels are chosen deterministically (argmax, > 0.5) instead of "
                    "DRAWN from p(x_i | x_<i) with torch.bernoulli")
        sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        first = values[:, order[0]]
        prev, nxt = values[:, order[:-1]].flatten(), values[:, order[1:]].flatten()
        checks = [("p(first pixel in the order = 1)", first, sig(net.start)),
                  ("p(x_i = 1 | previous pixel 1)", nxt[prev == 1], sig(net.base + net.stay)),
                  ("p(x_i = 1 | previous pixel 0)", nxt[prev == 0], sig(net.base - net.stay))]
        for label, draws, want in checks:
            if len(draws) < 30:
                continue
            freq = float(draws.mean())
            se = math.sqrt(want * (1 - want) / len(draws))
            if abs(freq - want) > 5 * se + 1e-3:
                hint = ""
                if label.endswith("0)") or label.endswith("1)"):
                    hint = (": each pixel must be drawn from the logits of a pass over the pixels drawn SO FAR, "
                            "one pixel at a time in the given order (x[:, i] = bernoulli(sigmoid(net(x)[:, i]))); "
                            "drawing them all from one pass, or in another order, loses the dependence")
                return f"{label} is {freq:.3f} in your samples, but the model says {want:.3f}{hint}"
        return None

    return judge


def _sampling_case(name: str, n: int, d: int, seed: int, start: float, base: float, stay: float,
                   hidden: bool) -> Case:
    def probe(fn: Callable) -> str | None:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(d, generator=gen)
        net = _ChainNet(order, start, base, stay)
        samples = fn(net, n, order.clone(), torch.Generator().manual_seed(seed + 1))
        return _sample_judge(n, order, net)(samples)

    return probe_case(name, probe, hidden=hidden,
                      inputs=f"{n} samples of {d} pixels from a known Markov chain along a random order",
                      hint="x = zeros(n, D); for i in order: x[:, i] = torch.bernoulli(torch.sigmoid(net(x)[:, i]), "
                           "generator=generator)")


def _sampling_generator_probe(fn: Callable) -> str | None:
    order = torch.tensor([2, 0, 3, 1])
    net = _ChainNet(order, 0.3, 0.0, 1.0)
    return generator_problem(lambda gen: fn(net, 50, order.clone(), gen), what="samples")


def check_sample_autoregressive(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``sample_autoregressive(net, n, order, generator) -> (n, D)`` 0/1 samples, drawn pixel by pixel."""
    cases = [
        _sampling_case("4000 samples of 5 pixels from a chain that mostly copies", 4000, 5, 1, 1.0, 0.0, 2.0, False),
        _sampling_case("hidden: 3000 samples of 12 pixels, a chain that mostly flips", 3000, 12, 2, -1.0, 0.5, -1.5, True),
        _sampling_case("hidden: 2000 samples of 2 pixels", 2000, 2, 3, 0.0, -0.5, 1.0, True),
        probe_case("hidden: the samples follow the generator argument", _sampling_generator_probe),
    ]
    result = run_checks(fn, cases, title="sample_autoregressive")
    return finish(result, strict)
