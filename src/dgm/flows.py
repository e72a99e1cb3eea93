"""Chapter 5's models: normalizing flows.

A flow is an invertible map ``f`` from data ``x`` to a latent ``z = f(x)``
with a simple base density ``p_Z`` (a standard normal, or a learned mixture of
Gaussians: :class:`GaussianMixtureBase`). The change of variables formula
gives the exact density of the data,

    log p(x) = log p_Z(f(x)) + log |det df/dx|,

and sampling runs the map backwards, ``x = f^{-1}(z)`` with ``z ~ p_Z``.
``f`` is a composition of layers, so the log-determinant is the sum of the
layers' log-determinants.

Every layer here is a :class:`FlowLayer` with

* ``forward(x) -> (z, logdet)``   data towards the base, ``logdet = log|det dz/dx|`` ``(B,)``;
* ``inverse(z) -> (x, logdet)``   base towards the data, ``logdet = log|det dx/dz|`` ``(B,)``.

Layers work on flat vectors ``(B, D)``:

* :class:`AffineCoupling`  RealNVP: half the variables (``mask == 1``) pass
  unchanged and set a scale and shift for the other half; both directions are
  one pass, the Jacobian is triangular;
* :class:`SplineCoupling`  the same with a monotone rational-quadratic spline
  instead of the affine map (a neural spline flow);
* :class:`ActNorm`, :class:`LULinear`, :class:`Permutation`  per-dimension
  normalisation, a learned invertible linear map, a fixed shuffle;
* :class:`MAFLayer` / :class:`IAFLayer`  the same affine map with a MADE
  conditioner: MAF's density is one pass and its sampling ``D`` passes; IAF
  is the mirror image;
* :class:`Planar`  a planar map (Rezende & Mohamed), for the 2-D intuition;
* :class:`MarginalCDF`, :class:`Logit`  elementwise maps from ``(0, 1)`` to
  the real line, to pre-process dequantised images.

The models (:class:`RealNVP`, with ``coupling="spline"`` the CLI's ``nsf``;
:class:`MAF`, :class:`IAF`) are
:class:`FlowModel` s: 2-D points get the exact ``log_prob``; integer images
(``digits``) are *dequantised*: uniform noise ``u`` in ``[0, 1)^D`` turns the
levels into continuous values, and ``E_u[log p(x + u)] <= log P(x)``, so the
reported ``nll_bound_nats`` is an upper bound on the discrete NLL.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .autoregressive import MaskedLinear, made_degrees, made_masks
from .base import DataSpec, GenerativeModel, check_levels, check_lr_schedule, check_positive_int, mlp

_LOG_2PI = math.log(2 * math.pi)


def bounded_log_scale(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """Squash a conditioner's raw output into a log-scale in ``(-bound, bound)``.

    ``bound * tanh(raw / bound)`` is the identity near 0 but never lets one
    layer multiply a variable by more than ``exp(bound)``, which keeps early
    training from blowing up.
    """
    return bound * torch.tanh(raw / bound)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` of each row of ``z`` ``(B, D)`` -> ``(B,)``."""
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * _LOG_2PI)


class GaussianMixtureBase(nn.Module):
    """A learned base density ``p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))`` for a flow.

    A flow is a continuous bijection, so from one Gaussian it cannot make separate
    islands of mass: it leaves thin bridges between them. With a mixture as the
    base, each island can come from its own component and the layers only have to
    shape it. The means start at ``components`` training points mapped into
    ``z`` (:meth:`initialize_from`), the scales at 0.5, the weights equal.
    """

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        check_positive_int("components", components)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.zeros(components, dim))
        self.log_scales = nn.Parameter(torch.full((components, dim), math.log(0.5)))

    @torch.no_grad()
    def initialize_from(self, z: torch.Tensor) -> None:
        """Put the means on ``components`` rows of ``z`` ``(N, D)``, drawn with the global seed."""
        if len(z) < len(self.means):
            raise ValueError(f"need at least {len(self.means)} examples to place the mixture's means, got {len(z)}")
        self.means.copy_(z[torch.randperm(len(z))[: len(self.means)]])

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` of each row of ``z`` ``(B, D)`` -> ``(B,)``."""
        scaled = (z[:, None, :] - self.means) * torch.exp(-self.log_scales)  # (B, K, D)
        per_component = -0.5 * (scaled.pow(2) + _LOG_2PI).sum(2) - self.log_scales.sum(1)
        return torch.logsumexp(per_component + torch.log_softmax(self.logits, 0), dim=1)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws ``(n, D)``: a component by its weight, then its Gaussian."""
        k = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True)
        return self.means[k] + torch.exp(self.log_scales[k]) * torch.randn_like(self.means[k])


def _check_vectors(x: torch.Tensor, dim: int, who: str) -> None:
    if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != dim:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{who} expects a batch of vectors shaped (batch, {dim}), got {shape}; "
                         f"flatten images with x.flatten(1)")


# ---------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------
class FlowLayer(nn.Module):
    """One invertible map with a tractable log-determinant (both directions)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, D)`` data side -> ``(z (B, D), log|det dz/dx| (B,))``."""
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, D)`` base side -> ``(x (B, D), log|det dx/dz| (B,))``."""
        raise NotImplementedError


class AffineCoupling(FlowLayer):
    """RealNVP's affine coupling layer (Dinh et al. 2017).

    With a fixed 0/1 ``mask`` ``(D,)`` and a conditioner network ``net`` that
    reads only the kept half ``x * mask`` and returns ``(B, 2D)`` = shift ``t``
    and raw log-scale::

        z = mask * x + (1 - mask) * (x * exp(s) + t),   s = bounded_log_scale(raw)
        log|det dz/dx| = sum_i (1 - mask_i) s_i

    The inverse is ``x = mask * z + (1 - mask) * (z - t) * exp(-s)``, where
    ``s`` and ``t`` are computed from ``z * mask = x * mask``: one pass.
    """

    def __init__(self, mask: torch.Tensor, hidden_size: int = 64, num_hidden_layers: int = 2,
                 scale_bound: float = 2.0) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.ndim != 1 or not ((mask == 0) | (mask == 1)).all() or mask.sum() in (0, len(mask)):
            raise ValueError("mask must be a 1-D tensor of 0s and 1s with both values present "
                             f"(some variables kept, some transformed); got {mask.tolist()}")
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be > 0, got {scale_bound}")
        self.register_buffer("mask", mask)
        self.scale_bound = float(scale_bound)
        dim = len(mask)
        self.net = mlp([dim] + [hidden_size] * num_hidden_layers + [2 * dim], zero_last=True)

    def _shift_and_log_scale(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.net(kept).chunk(2, dim=1)
        free = 1 - self.mask  # only the transformed half gets a scale and shift
        return shift * free, bounded_log_scale(raw, self.scale_bound) * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_and_log_scale(x * self.mask)
        return x * log_scale.exp() + shift, log_scale.sum(1)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_and_log_scale(z * self.mask)
        return (z - shift) * (-log_scale).exp(), -log_scale.sum(1)


def rational_quadratic_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor,
                              derivatives: torch.Tensor, bound: float,
                              inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A monotone rational-quadratic spline on ``[-bound, bound]``, the identity outside
    (Durkan et al. 2019); elementwise.

    Args:
        x: inputs, any shape ``S``.
        widths, heights: ``S + (K,)`` unnormalised bin widths and heights
            (a softmax makes them sum to ``2 * bound``).
        derivatives: ``S + (K - 1,)`` unnormalised slopes at the inner knots
            (0 gives slope 1; the outer knots have slope 1, to meet the
            identity tails).
        inverse: apply the inverse map instead.

    Returns:
        ``(y, log|dy/dx|)`` elementwise, both shaped like ``x`` (for
        ``inverse=True``: ``(x, log|dx/dy|)``).
    """
    min_width, min_height, min_slope = 1e-3, 1e-3, 1e-3
    num_bins = widths.shape[-1]
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)

    def knots(raw: torch.Tensor, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
        size = minimum + (1 - minimum * num_bins) * raw.softmax(-1)
        edges = F.pad(size.cumsum(-1), (1, 0)) * 2 * bound - bound
        edges = torch.cat([edges[..., :-1], edges.new_full(edges[..., -1:].shape, bound)], -1)  # exact end
        return edges, edges[..., 1:] - edges[..., :-1]

    x_knots, bin_widths = knots(widths, min_width)
    y_knots, bin_heights = knots(heights, min_height)
    one = math.log(math.expm1(1 - min_slope))  # softplus(raw + one) + min_slope = 1 at raw = 0
    slopes = F.pad(min_slope + F.softplus(derivatives + one), (1, 1), value=1.0)

    search = y_knots if inverse else x_knots
    k = (torch.searchsorted(search[..., 1:-1].contiguous(), xc[..., None].contiguous()))  # bin index
    pick = lambda table: table.gather(-1, k)[..., 0]  # noqa: E731
    x_k, w_k, y_k, h_k = pick(x_knots), pick(bin_widths), pick(y_knots), pick(bin_heights)
    d_k, d_k1 = pick(slopes[..., :-1]), pick(slopes[..., 1:])
    delta = h_k / w_k
    if inverse:
        dy = xc - y_k
        a = h_k * (delta - d_k) + dy * (d_k1 + d_k - 2 * delta)
        b = h_k * d_k - dy * (d_k1 + d_k - 2 * delta)
        c = -delta * dy
        theta = (2 * c) / (-b - torch.sqrt((b.pow(2) - 4 * a * c).clamp(min=0)))
        out = theta * w_k + x_k
    else:
        theta = (xc - x_k) / w_k
        out = y_k + h_k * (delta * theta.pow(2) + d_k * theta * (1 - theta)) / (
            delta + (d_k1 + d_k - 2 * delta) * theta * (1 - theta))
    between = theta * (1 - theta)
    denominator = delta + (d_k1 + d_k - 2 * delta) * between
    log_slope = (2 * torch.log(delta) + torch.log(d_k1 * theta.pow(2) + 2 * delta * between
                                                 + d_k * (1 - theta).pow(2)) - 2 * torch.log(denominator))
    log_slope = -log_slope if inverse else log_slope
    return torch.where(inside, out, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))


class SplineCoupling(FlowLayer):
    """A coupling layer whose transform of the free half is a monotone rational-quadratic
    spline (neural spline flow, Durkan et al. 2019) instead of RealNVP's affine map.

    The conditioner reads ``x * mask`` and returns ``3K - 1`` numbers per
    dimension (bin widths, heights, inner slopes); the spline acts on
    ``[-tail_bound, tail_bound]`` and is the identity outside. Starts as the
    identity (zero-initialised last layer).
    """

    def __init__(self, mask: torch.Tensor, hidden_size: int = 64, num_hidden_layers: int = 2,
                 num_bins: int = 8, tail_bound: float = 4.0) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.ndim != 1 or not ((mask == 0) | (mask == 1)).all() or mask.sum() in (0, len(mask)):
            raise ValueError("mask must be a 1-D tensor of 0s and 1s with both values present "
                             f"(some variables kept, some transformed); got {mask.tolist()}")
        check_positive_int("num_bins", num_bins)
        if tail_bound <= 0:
            raise ValueError(f"tail_bound must be > 0, got {tail_bound}")
        self.register_buffer("mask", mask)
        self.num_bins, self.tail_bound = num_bins, float(tail_bound)
        dim = len(mask)
        self.net = mlp([dim] + [hidden_size] * num_hidden_layers + [dim * (3 * num_bins - 1)], zero_last=True)

    def _transform(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # float64 inside: in float32 the inverse (a quadratic's root) loses digits in narrow bins
        params = self.net(x * self.mask).view(len(x), len(self.mask), 3 * self.num_bins - 1).double()
        k = self.num_bins
        out, log_slope = rational_quadratic_spline(x.double(), params[..., :k], params[..., k:2 * k],
                                                   params[..., 2 * k:], self.tail_bound, inverse=inverse)
        free = self.mask == 0
        return torch.where(free, out.to(x.dtype), x), (log_slope * free).sum(1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(x, inverse=False)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(z, inverse=True)


class ActNorm(FlowLayer):
    """Per-dimension affine normalisation ``z = (x + bias) * exp(log_scale)`` (Glow).

    :meth:`initialize_from` sets it so that a batch comes out with zero mean
    and unit variance per dimension; :meth:`FlowModel.initialize` calls it
    with the training data before the first step.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize_from(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation from a batch ``(B, D)``, ``B >= 2``."""
        if len(x) < 2:
            raise ValueError("ActNorm needs a batch of at least 2 examples to estimate a scale")
        self.bias.copy_(-x.mean(0))
        self.log_scale.copy_(-x.std(0).clamp(min=1e-6).log())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x + self.bias) * self.log_scale.exp(), self.log_scale.sum().expand(len(x))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z * (-self.log_scale).exp() - self.bias, -self.log_scale.sum().expand(len(z))


class Permutation(FlowLayer):
    """A fixed shuffle of the dimensions (``reverse=True``: reverse them); log-det 0."""

    def __init__(self, dim: int, seed: int = 0, reverse: bool = False) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        perm = torch.arange(dim - 1, -1, -1) if reverse else torch.randperm(
            dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", perm.argsort())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, self.perm], x.new_zeros(len(x))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[:, self.inv_perm], z.new_zeros(len(z))


class LULinear(FlowLayer):
    """A learned invertible linear map ``z = x W^T`` with ``W = P L (U + diag(sign * exp(log_s)))``.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular and ``U``
    strictly upper-triangular (Glow's LU parametrisation), so
    ``log|det W| = sum(log_s)`` costs ``O(D)`` and the inverse is two
    triangular solves. Starts at a random rotation.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
        p, lower, upper = torch.linalg.lu(q)
        diag = upper.diagonal()
        self.register_buffer("perm", p)
        self.register_buffer("sign", diag.sign())
        self.lower = nn.Parameter(lower.tril(-1))
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(diag.abs().log())

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * self.log_s.exp())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """The ``(D, D)`` matrix ``W``."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight().T, self.log_s.sum().expand(len(x))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self._factors()
        # W x = z  <=>  L U x = P^T z: two triangular solves on columns
        y = torch.linalg.solve_triangular(lower, self.perm.T @ z.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True)
        return x.T, -self.log_s.sum().expand(len(z))


class MADEConditioner(nn.Module):
    """A MADE (chapter 2's masks) from ``D`` inputs to a shift and raw log-scale per input.

    Output ``i`` (both its shift and scale) depends only on inputs earlier
    than ``i`` in ``ordering``.
    """

    def __init__(self, dim: int, hidden_size: int, num_hidden_layers: int, ordering: torch.Tensor,
                 seed: int = 0) -> None:
        super().__init__()
        check_positive_int("num_hidden_layers", num_hidden_layers)
        gen = torch.Generator().manual_seed(seed)
        in_degrees, hidden_degrees = made_degrees(ordering, [hidden_size] * num_hidden_layers, gen)
        masks = made_masks(in_degrees, hidden_degrees, torch.cat([in_degrees, in_degrees]))
        sizes = [dim] + [hidden_size] * num_hidden_layers + [2 * dim]
        self.layers = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer, mask in zip(self.layers, masks):
            layer.set_mask(mask)
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)
        self.register_buffer("ordering", torch.as_tensor(ordering).clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        shift, raw = self.layers[-1](h).chunk(2, dim=1)
        return shift, raw


class MAFLayer(FlowLayer):
    """Masked autoregressive flow layer (Papamakarios et al. 2017).

    ``z_i = x_i * exp(s_i(x_<i)) + t_i(x_<i)``: the shifts and scales of every
    dimension come from the *data* in one MADE pass, so ``forward`` (the
    density) is fast; ``inverse`` (sampling) must rebuild ``x`` one dimension
    at a time, ``D`` MADE passes, because ``x_i`` needs ``x_<i`` first.
    """

    def __init__(self, dim: int, hidden_size: int = 64, num_hidden_layers: int = 2,
                 ordering: torch.Tensor | None = None, scale_bound: float = 2.0, seed: int = 0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        if dim < 2:
            raise ValueError("an autoregressive layer needs at least 2 dimensions")
        ordering = torch.arange(dim) if ordering is None else torch.as_tensor(ordering)
        self.made = MADEConditioner(dim, hidden_size, num_hidden_layers, ordering, seed)
        self.scale_bound = float(scale_bound)

    def _params(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.made(inputs)
        return shift, bounded_log_scale(raw, self.scale_bound)

    def _one_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The direction whose conditioner reads its own input: one MADE pass."""
        shift, log_scale = self._params(x)
        return x * log_scale.exp() + shift, log_scale.sum(1)

    def _sequential(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The other direction: dimension by dimension in the MADE's ordering, ``D`` passes."""
        x = torch.zeros_like(z)
        for i in self.made.ordering.tolist():
            shift, log_scale = self._params(x)  # entry i only reads x_<i, already final
            x = x.clone()
            x[:, i] = (z[:, i] - shift[:, i]) * (-log_scale[:, i]).exp()
        _, log_scale = self._params(x)
        return x, -log_scale.sum(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._one_pass(x)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sequential(z)


class IAFLayer(MAFLayer):
    """Inverse autoregressive flow layer (Kingma et al. 2016): MAF run backwards.

    ``x_i = z_i * exp(s_i(z_<i)) + t_i(z_<i)``: the shifts and scales come from
    the *noise*, so sampling (``inverse``) is one MADE pass, while the density
    of a given ``x`` (``forward``) must recover ``z`` one dimension at a time.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sequential(x)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._one_pass(z)


class Planar(FlowLayer):
    """A planar flow layer (Rezende & Mohamed 2015) on the generative side.

    ``inverse`` (base -> data) is ``x = z + u_hat * tanh(w . z + b)``, with
    ``log|det| = log|1 + tanh'(w . z + b) u_hat . w|``; ``u_hat`` is ``u``
    moved so that ``w . u_hat >= -1``, which makes the map invertible.
    There is no closed-form ``forward``: along ``w`` it is a 1-D monotone
    equation, solved here by bisection (so it is slow, but exact).
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim, generator=gen))
        self.u = nn.Parameter(torch.randn(dim, generator=gen))
        self.b = nn.Parameter(torch.randn(1, generator=gen))

    def u_hat(self) -> torch.Tensor:
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / self.w.pow(2).sum()

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.u_hat()
        a = z @ self.w + self.b
        x = z + u * torch.tanh(a)[:, None]
        slope = 1 - torch.tanh(a).pow(2)
        return x, torch.log((1 + slope * (u @ self.w)).abs())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.u_hat()
        wu = u @ self.w
        target = x @ self.w  # w.x = a - b + wu tanh(a), increasing in a = w.z + b
        lo = target + self.b - wu.abs() - 1
        hi = target + self.b + wu.abs() + 1
        with torch.no_grad():
            for _ in range(200 if x.dtype == torch.float64 else 60):
                mid = (lo + hi) / 2
                too_big = mid - self.b + wu * torch.tanh(mid) > target
                hi, lo = torch.where(too_big, mid, hi), torch.where(too_big, lo, mid)
        a = (lo + hi) / 2
        # one Newton step with gradients attached, so z is differentiable in x and the parameters
        g = a - self.b + wu * torch.tanh(a) - target
        a = a.detach() - g / (1 + wu * (1 - torch.tanh(a).pow(2)))
        z = x - u * torch.tanh(a)[:, None]
        return z, -torch.log((1 + (1 - torch.tanh(a).pow(2)) * wu).abs())


class Logit(FlowLayer):
    """Elementwise ``z = logit(alpha + (1 - 2 alpha) x)``: from ``(0, 1)`` to the real line.

    Used on dequantised images so the flow never has to model a hard edge at
    0 or 1; ``alpha`` keeps the values away from the edges.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.alpha + (1 - 2 * self.alpha) * x
        z = torch.log(y) - torch.log1p(-y)
        # dz/dx = (1 - 2 alpha) / (y (1 - y))
        logdet = (math.log(1 - 2 * self.alpha) - torch.log(y) - torch.log1p(-y)).sum(1)
        return z, logdet

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(z)
        x = (y - self.alpha) / (1 - 2 * self.alpha)
        logdet = (F.logsigmoid(z) + F.logsigmoid(-z) - math.log(1 - 2 * self.alpha)).sum(1)
        return x, logdet


class MarginalCDF(FlowLayer):
    """Elementwise ``z_i = Phi^{-1}(F_i(v_i))`` for ``v`` in ``[0, 1)^D``: each dimension's own
    piecewise-uniform density, turned into a standard normal variable.

    ``F_i`` is the CDF of a density that is constant on each of ``num_bins``
    equal bins of ``[0, 1)`` (probabilities ``softmax(logits[i])``), so
    ``log|dz_i/dv_i| = log(num_bins * p_ik) - log N(z_i; 0, 1)`` for ``v_i``
    in bin ``k``. With one bin per grey level this layer alone, on a
    standard normal base, *is* chapter 1's independent-pixel model of the
    dequantised image; :meth:`initialize_from` sets it to the training
    frequencies, so a flow starts from that baseline and its other layers
    learn the dependencies between pixels. Computed in float64 (the normal
    quantile needs it near 0 and 1).
    """

    def __init__(self, dim: int, num_bins: int) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_bins", num_bins)
        self.logits = nn.Parameter(torch.zeros(dim, num_bins))
        self.num_bins = num_bins

    @torch.no_grad()
    def initialize_from(self, v: torch.Tensor, smoothing: float = 1.0) -> None:
        """Bin probabilities = add-``smoothing`` frequencies of ``v`` ``(B, D)`` in ``[0, 1)``."""
        bins = (v * self.num_bins).floor().clamp(0, self.num_bins - 1).long()
        counts = F.one_hot(bins, self.num_bins).sum(0).to(self.logits.dtype) + smoothing
        self.logits.copy_(counts.log())

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.logits.double().softmax(-1)  # (D, K)
        starts = torch.cat([probs.new_zeros(len(probs), 1), probs.cumsum(-1)[:, :-1]], 1)
        return probs, starts

    def _logdet(self, probs_k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        log_normal = -0.5 * z.pow(2) - 0.5 * _LOG_2PI
        return (torch.log(probs_k * self.num_bins) - log_normal).sum(1)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, starts = self._tables()
        scaled = v.double() * self.num_bins
        k = scaled.detach().floor().clamp(0, self.num_bins - 1).long()  # (B, D)
        probs_k = torch.gather(probs.expand(len(v), -1, -1), 2, k[..., None])[..., 0]
        starts_k = torch.gather(starts.expand(len(v), -1, -1), 2, k[..., None])[..., 0]
        u = (starts_k + probs_k * (scaled - k)).clamp(1e-15, 1 - 1e-15)
        z = torch.special.ndtri(u)
        return z.to(v.dtype), self._logdet(probs_k, z).to(v.dtype)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, starts = self._tables()
        zd = z.double()
        u = torch.special.ndtr(zd)
        # bin k holds u in [starts_k, starts_k + p_k): count the bin starts at or below u
        k = (torch.searchsorted(starts.contiguous(), u.T.contiguous(), right=True).T - 1).clamp(0, self.num_bins - 1)
        probs_k = torch.gather(probs.expand(len(z), -1, -1), 2, k[..., None])[..., 0]
        starts_k = torch.gather(starts.expand(len(z), -1, -1), 2, k[..., None])[..., 0]
        v = (k + (u - starts_k) / probs_k) / self.num_bins
        return v.to(z.dtype), (-self._logdet(probs_k, zd)).to(z.dtype)


class Composition(FlowLayer):
    """Layers applied in order: ``forward`` runs them first to last, ``inverse`` last to first."""

    def __init__(self, layers: Sequence[FlowLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.new_zeros(len(x))
        for layer in self.layers:
            x, logdet = layer(x)
            total = total + logdet
        return x, total

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = z.new_zeros(len(z))
        for layer in reversed(self.layers):
            z, logdet = layer.inverse(z)
            total = total + logdet
        return z, total

    def trajectory(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x, after layer 1, after layer 2, ...]`` going towards the base (for figures)."""
        points = [x]
        for layer in self.layers:
            x, _ = layer(x)
            points.append(x)
        return points


def alternating_mask(shape: Sequence[int], flip: bool) -> torch.Tensor:
    """A coupling mask ``(D,)`` for data of ``shape``: a checkerboard for images, odd/even for vectors."""
    shape = tuple(shape)
    if len(shape) == 3:
        rows = torch.arange(shape[1])[:, None]
        cols = torch.arange(shape[2])[None, :]
        mask = ((rows + cols) % 2).expand(shape[0], -1, -1).flatten()
    else:
        mask = torch.arange(math.prod(shape)) % 2
    return (mask if flip else 1 - mask).float()


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------
class FlowModel(GenerativeModel):
    """A flow on points or on dequantised integer images.

    Subclasses build ``self.flow`` (a :class:`Composition`) in ``__init__``.

    * points ``(B, D)`` (``num_levels=None``): ``log_prob`` is the exact
      log-density;
    * images of integer levels (``num_levels=K``): a level ``x`` becomes
      ``v = (x + u) / K`` with ``u ~ U[0, 1)^D``, then :class:`MarginalCDF`
      (or :class:`Logit`), then the flow. ``p(x + u) = p_v(v) / K^D``, and by Jensen
      ``log P(x) = log E_u[p(x + u)] >= E_u[log p(x + u)]``
      (:meth:`dequantized_log_likelihood`), so the reported
      ``nll_bound_nats`` is a valid upper bound on the discrete NLL.
      ``log_prob`` is then the density of continuous values ``x + u`` in
      ``[0, K)^D``.
    """

    family = "normalizing flow (explicit, exact)"

    def __init__(self, shape: Sequence[int], num_levels: int | None, alpha: float, marginals: bool,
                 base_components: int = 0) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) <= 0:
            raise ValueError(f"shape must be positive ints, e.g. (2,) for points or (1, 8, 8); got {shape}")
        if num_levels is not None:
            check_positive_int("num_levels", num_levels)
        self.num_levels = num_levels
        self.dim = math.prod(self.shape)
        # images: (0, 1)^D -> R^D before the flow, by the pixels' own CDFs or by a logit
        self.prep: FlowLayer | None = None
        if num_levels is not None:
            self.prep = MarginalCDF(self.dim, num_levels) if marginals else Logit(alpha)
        # the base density: N(0, I), or a learned Gaussian mixture (base_components > 0)
        if base_components < 0:
            raise ValueError(f"base_components must be >= 0 (0: a standard normal base), got {base_components}")
        self.mixture = GaussianMixtureBase(self.dim, base_components) if base_components else None
        self.flow: Composition

    def data_spec(self, method: str = "loss") -> DataSpec:
        """Points; or integer levels, except ``log_prob``, the density of dequantised values ``x + u``."""
        if self.num_levels is None:
            return DataSpec(self.shape, "real")
        return DataSpec(self.shape, "dequantized" if method == "log_prob" else "levels", self.num_levels)

    # ---- continuous density ----------------------------------------------------
    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape[1:]) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects examples of shape {self.shape} "
                             f"(a batch shaped (N, {', '.join(map(str, self.shape))})), got {got}")
        return x.flatten(1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density ``(B,)`` of continuous ``x`` (for images: values ``x + u`` in ``[0, K)``)."""
        v = self._check(x).to(self._dtype())
        logdet = v.new_zeros(len(v))
        if self.prep is not None:
            v, logdet = self.prep(v / self.num_levels)
            logdet = logdet - self.dim * math.log(self.num_levels)  # density of v = y / K -> density of y
        z, flow_logdet = self.flow(v)
        return self.base_log_prob(z) + logdet + flow_logdet

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` of the base density, ``(B, D)`` -> ``(B,)``."""
        return standard_normal_log_prob(z) if self.mixture is None else self.mixture.log_prob(z)

    def base_sample(self, n: int) -> torch.Tensor:
        """``n`` draws ``(n, D)`` from the base density."""
        if self.mixture is None:
            return torch.randn(n, self.dim, device=self.device, dtype=self._dtype())
        return self.mixture.sample(n)

    def dequantized_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """One-draw estimate of ``E_u[log p(x + u)] <= log P(x)`` for integer levels ``x``: ``(B,)``."""
        if self.num_levels is None:
            raise ValueError("dequantisation is for integer images; this flow models points (num_levels=None)")
        levels = check_levels(x, self.shape, self.num_levels, type(self).__name__)
        return self.log_prob(levels.to(self._dtype()) + torch.rand(levels.shape, device=levels.device,
                                                                   dtype=self._dtype()))

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    # ---- the API --------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean NLL (points) or mean dequantised NLL bound (images), nats per example."""
        if self.num_levels is None:
            return -self.log_prob(x).mean()
        return -self.dequantized_log_likelihood(x).mean()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples: points ``(n, D)``, or int64 levels ``(n, *shape)`` for images."""
        check_positive_int("n", n)
        v, _ = self.flow.inverse(self.base_sample(n))
        if self.prep is None:
            return v.view(n, *self.shape)
        v, _ = self.prep.inverse(v)
        levels = (v * self.num_levels).floor().clamp(0, self.num_levels - 1).long()
        return levels.view(n, *self.shape)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000, draws: int = 10) -> dict[str, float]:
        """Test metrics: ``nll_nats``/``bpd`` for points; for images the dequantisation bound
        ``nll_bound_nats``/``bpd_bound`` (mean over ``draws`` noise draws per example, seeded)."""
        if self.num_levels is None:
            return super().evaluate(x, batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            total = 0.0
            for _ in range(draws):
                for chunk in torch.split(x, batch_size):
                    total += float(-self.dequantized_log_likelihood(chunk).sum())
        nll = total / (draws * len(x))
        return {"nll_bound_nats": nll, "bpd_bound": nll / (self.dim * math.log(2))}

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        """Mean NLL (bound) with a fixed noise draw, so early stopping compares like with like."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return float(self.loss(x))

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Data-dependent initialisation on (up to) 2000 training examples: the pixels'
        CDFs (:class:`MarginalCDF`) from their frequencies, then each ActNorm, then the
        mixture base's means (on examples mapped to ``z``)."""
        x = x_train[:2000]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if self.num_levels is None:
                h = self._check(x).to(self._dtype())
            else:
                levels = check_levels(x, self.shape, self.num_levels, type(self).__name__).to(self._dtype())
                v = (levels + torch.rand_like(levels)).flatten(1) / self.num_levels
                if isinstance(self.prep, MarginalCDF):
                    self.prep.initialize_from(v)
                h, _ = self.prep(v)
        for layer in self.flow.layers:
            if isinstance(layer, ActNorm):
                layer.initialize_from(h)
            h, _ = layer(h)
        if self.mixture is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.mixture.initialize_from(h)


def _check_flow_sizes(num_blocks: int, hidden_size: int, num_hidden_layers: int) -> None:
    check_positive_int("num_blocks", num_blocks)
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("num_hidden_layers", num_hidden_layers)


class RealNVP(FlowModel):
    """RealNVP: ``num_blocks`` x (ActNorm, LU linear map, affine coupling with alternating masks).

    Args:
        shape: one example, ``(D,)`` for points or ``(C, H, W)`` for images.
        num_levels: ``None`` for points; the number of integer levels for images.
        num_blocks: coupling layers.
        hidden_size, num_hidden_layers: each coupling's conditioner MLP.
        scale_bound: the largest log-scale one coupling may apply.
        lu: put a learned invertible linear map before every coupling
            (``False``: a fixed reversal, as in the original RealNVP on vectors).
        marginals: images only: map each pixel through its own learned CDF
            (:class:`MarginalCDF`, starting at the independent-pixel model);
            ``False``: a :class:`Logit` with margin ``alpha``, as in RealNVP.
        alpha: the :class:`Logit` margin (with ``marginals=False``).
        coupling: ``"affine"`` (RealNVP) or ``"spline"``: :class:`SplineCoupling`
            with ``num_bins`` bins on ``[-tail_bound, tail_bound]`` (a neural
            spline flow; CLI name ``nsf``).
        lr_schedule: the learning rate over the run (:func:`dgm.base.lr_schedule_factor`),
            e.g. ``"halving:0.15"`` halves it after every 15 % of the run.
        base_components: 0 for the standard normal base; ``K > 0`` for a
            learned mixture of ``K`` Gaussians (:class:`GaussianMixtureBase`).
    """

    family = "normalizing flow: RealNVP (explicit, exact)"

    def __init__(self, shape: Sequence[int], num_levels: int | None = None, num_blocks: int = 8,
                 hidden_size: int = 128, num_hidden_layers: int = 2, scale_bound: float = 3.0,
                 lu: bool = True, marginals: bool = True, alpha: float = 0.05, coupling: str = "affine",
                 num_bins: int = 8, tail_bound: float = 4.0, lr_schedule: str = "constant",
                 base_components: int = 0) -> None:
        super().__init__(shape, num_levels, alpha, marginals, base_components)
        _check_flow_sizes(num_blocks, hidden_size, num_hidden_layers)
        if coupling not in ("affine", "spline"):
            raise ValueError(f"coupling must be 'affine' (RealNVP) or 'spline' (neural spline flow), got {coupling!r}")
        check_lr_schedule(lr_schedule)
        self.lr_schedule = lr_schedule
        layers: list[FlowLayer] = []
        for k in range(num_blocks):
            mask = alternating_mask(self.shape, flip=k % 2 == 1)
            layers.append(ActNorm(self.dim))
            layers.append(LULinear(self.dim, seed=k) if lu else Permutation(self.dim, reverse=True))
            if coupling == "affine":
                layers.append(AffineCoupling(mask, hidden_size, num_hidden_layers, scale_bound))
            else:
                layers.append(SplineCoupling(mask, hidden_size, num_hidden_layers, num_bins, tail_bound))
        self.flow = Composition(layers)


class MAF(FlowModel):
    """MAF: ``num_blocks`` x (ActNorm, MAF layer), each in the reverse order of the one before.

    Density evaluation is one pass per block; sampling is ``D`` passes per block.
    """

    family = "normalizing flow: MAF (explicit, exact)"
    layer_class: type[MAFLayer] = MAFLayer

    def __init__(self, shape: Sequence[int], num_levels: int | None = None, num_blocks: int = 5,
                 hidden_size: int = 128, num_hidden_layers: int = 2, scale_bound: float = 3.0,
                 marginals: bool = True, alpha: float = 0.05) -> None:
        super().__init__(shape, num_levels, alpha, marginals)
        _check_flow_sizes(num_blocks, hidden_size, num_hidden_layers)
        layers: list[FlowLayer] = []
        for k in range(num_blocks):
            ordering = torch.arange(self.dim) if k % 2 == 0 else torch.arange(self.dim - 1, -1, -1)
            layers.append(ActNorm(self.dim))
            layers.append(self.layer_class(self.dim, hidden_size, num_hidden_layers, ordering, scale_bound, seed=k))
        self.flow = Composition(layers)


    def sampling_passes(self) -> int:
        """``D + 1`` passes through the stack: ``D`` to rebuild ``x`` one dimension at a time, one for the log-det."""
        return self.dim + 1


class IAF(MAF):
    """IAF: the same stack with :class:`IAFLayer`: sampling is one pass per block,
    density evaluation ``D`` passes per block (so training by maximum likelihood is slow)."""

    family = "normalizing flow: IAF (explicit, exact)"
    layer_class = IAFLayer

    def sampling_passes(self) -> int:
        return 1
