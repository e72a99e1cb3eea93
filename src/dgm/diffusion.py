"""Chapter 6's models: denoising diffusion (DDPM) and its fast sampler (DDIM).

The forward process is a fixed Markov chain that adds a little Gaussian noise
at every step,

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),

so after enough steps ``x_T`` is (almost exactly) ``N(0, I)``, and its
``t``-step marginal has a closed form (:func:`q_sample`),

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s).

A network ``eps_theta(x_t, t)`` learns to predict the noise that was added;
from it the reverse chain ``p_theta(x_{t-1} | x_t)`` is a Gaussian whose mean
comes from the forward posterior ``q(x_{t-1} | x_t, x_0)``
(:func:`posterior_mean_variance`) with ``x_0`` replaced by the network's guess.

Index convention (the one Hugging Face ``diffusers`` uses): ``t = 0 .. T-1``
indexes ``betas[t]`` and ``alphas_cumprod[t]``; the paper's step ``t = 1 .. T``
is our ``t - 1``. So ``x_t`` at index ``t`` has been noised ``t + 1`` times,
and "one step back" from index 0 lands on the data.

Pieces, each small enough to read next to the paper:

* schedules :func:`linear_betas`, :func:`cosine_betas`, and :class:`Schedule`
  (every derived coefficient as a float64 tensor);
* :func:`q_sample`, :func:`posterior_mean_variance`, :func:`predict_x0`;
* reverse steps :func:`ddpm_step` (ancestral) and :func:`ddim_step` (any eta,
  any earlier target step), the loop :func:`sample_loop` and
  :func:`ddim_timesteps`;
* the bound: :func:`~dgm.base.gaussian_kl`, :func:`discretized_gaussian_log_likelihood`,
  and :meth:`DDPM.bound_terms` (L_T, L_{t-1}, L_0 in nats);
* networks: :class:`MLPDenoiser` (2-D points) and :class:`UNet` (images),
  both conditioned on ``t`` through :func:`timestep_embedding`;
* editing: :meth:`DDPM.inpaint` and :meth:`DDPM.sdedit`.

Shapes: ``x`` is ``(B, *data_shape)``; ``t`` is a long tensor ``(B,)``;
schedule coefficients are gathered per example and broadcast over the data
dimensions (:func:`_at`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import (AveragedNetworkModel, DataSpec, GenerativeModel, WeightAverage, check_levels,
                   check_lr_schedule, check_positive_int, gaussian_kl, standardize_points)

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
KINDS = ("points", "categorical", "grey")
MAX_TIMESTEPS = 100_000


# ---------------------------------------------------------------------------
# noise schedules
# ---------------------------------------------------------------------------
def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s schedule: ``beta_t`` evenly spaced from ``beta_start`` to ``beta_end``; float64 ``(T,)``."""
    check_positive_int("timesteps", timesteps)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's schedule: ``abar(t) = cos^2((t/T + s)/(1 + s) * pi/2)``; float64 ``(T,)``.

    ``beta_t = 1 - abar(t+1)/abar(t)``, capped at ``max_beta`` so the last
    step does not divide by (almost) zero. ``diffusers`` calls it
    ``"squaredcos_cap_v2"``.
    """
    check_positive_int("timesteps", timesteps)
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


class Schedule:
    """A variance schedule and every coefficient derived from it (float64, ``(T,)`` each).

    Attributes:
        betas: ``beta_t``; alphas: ``1 - beta_t``;
        alphas_cumprod: ``abar_t = prod_{s<=t} alpha_s``;
        alphas_cumprod_prev: ``abar_{t-1}`` with ``abar_{-1} = 1`` (one step before index 0 is the data);
        posterior_variance: ``beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)``, the variance of
            ``q(x_{t-1} | x_t, x_0)`` (0 at index 0).
    """

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if (betas <= 0).any() or (betas >= 1).any():
            raise ValueError("every beta_t must lie strictly between 0 and 1")
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @classmethod
    def make(cls, name: str, timesteps: int) -> "Schedule":
        """``Schedule.make("linear" | "cosine", T)``."""
        if name == "linear":
            return cls(linear_betas(timesteps))
        if name == "cosine":
            return cls(cosine_betas(timesteps))
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    def __repr__(self) -> str:
        return f"Schedule(T={self.timesteps}, beta {float(self.betas[0]):.2e}..{float(self.betas[-1]):.3g})"


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` per example, shaped ``(B, 1, ..., 1)`` to broadcast against ``like`` (its dtype/device)."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.view(-1, *([1] * (like.ndim - 1)))


def _timesteps(t: int | torch.Tensor, batch: int, timesteps: int) -> torch.Tensor:
    """``t`` as a long tensor ``(batch,)``, checked to lie in ``0..T-1``."""
    t = torch.as_tensor(t)
    if t.is_floating_point():
        raise ValueError(f"t must hold integer step indices 0..{timesteps - 1}, got floats")
    t = t.long().expand(batch) if t.ndim == 0 else t.long()
    if t.shape != (batch,):
        raise ValueError(f"t must be an int or a (batch,) = ({batch},) tensor, got shape {tuple(t.shape)}")
    if len(t) and (t.min() < 0 or t.max() >= timesteps):
        raise ValueError(f"t must lie in 0..{timesteps - 1} (index t is the paper's step t+1), "
                         f"got {int(t.min())}..{int(t.max())}")
    return t


# ---------------------------------------------------------------------------
# the forward process and its posterior
# ---------------------------------------------------------------------------
def q_sample(x0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Draw ``x_t ~ q(x_t | x_0)`` in one go: ``sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``.

    Args:
        x0: clean data ``(B, ...)``; noise: standard normal, same shape;
        t: step index ``0..T-1``, an int or ``(B,)``.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    t = _timesteps(t, len(x0), schedule.timesteps)
    abar = _at(schedule.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def predict_x0(x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Invert :func:`q_sample` given the noise: ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    abar = _at(schedule.alphas_cumprod, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def posterior_mean_variance(x0: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor,
                            schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. eq. 6-7).

    mean = ``beta_t sqrt(abar_{t-1}) / (1 - abar_t) * x_0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) * x_t``;
    variance = ``beta~_t`` (broadcastable ``(B, 1, ..., 1)``).
    """
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
    t = _timesteps(t, len(x_t), schedule.timesteps)
    beta, alpha = _at(schedule.betas, t, x_t), _at(schedule.alphas, t, x_t)
    abar, abar_prev = _at(schedule.alphas_cumprod, t, x_t), _at(schedule.alphas_cumprod_prev, t, x_t)
    mean = beta * abar_prev.sqrt() / (1 - abar) * x0 + (1 - abar_prev) * alpha.sqrt() / (1 - abar) * x_t
    return mean, _at(schedule.posterior_variance, t, x_t)


# ---------------------------------------------------------------------------
# reverse steps
# ---------------------------------------------------------------------------
def ddpm_step(eps: torch.Tensor, x_t: torch.Tensor, t: int, schedule: Schedule,
              noise: torch.Tensor | None = None, clip: float | None = None) -> torch.Tensor:
    """One ancestral step ``x_t -> x_{t-1}`` of DDPM with the fixed variance ``beta~_t``.

    The mean is the posterior mean with ``x_0`` replaced by the network's
    guess :func:`predict_x0`, clamped to ``[-clip, clip]`` when ``clip`` is
    given (the data's range); at ``t = 0`` no noise is added. ``noise``
    defaults to a fresh standard normal draw.
    """
    t_batch = _timesteps(t, len(x_t), schedule.timesteps)
    x0 = predict_x0(x_t, t_batch, eps, schedule)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    mean, variance = posterior_mean_variance(x0, x_t, t_batch, schedule)
    if int(t) == 0:
        return mean
    noise = torch.randn_like(x_t) if noise is None else noise
    return mean + variance.sqrt() * noise


def ddim_step(eps: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int, schedule: Schedule, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip: float | None = None) -> torch.Tensor:
    """One DDIM step from index ``t`` to an earlier index ``t_prev`` (``-1`` = the data) (Song et al. eq. 12).

    ``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
    ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``.
    ``eta = 0``: deterministic; ``eta = 1`` with ``t_prev = t - 1``: the DDPM step.
    With ``clip``, ``x0_hat`` is clamped to ``[-clip, clip]`` and ``eps`` recomputed
    from it, so a wild guess from an almost pure-noise ``x_t`` cannot be amplified.
    """
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must satisfy -1 <= t_prev < t, got t={t}, t_prev={t_prev}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    t_batch = _timesteps(t, len(x_t), schedule.timesteps)
    abar = _at(schedule.alphas_cumprod, t_batch, x_t)
    abar_prev = (_at(schedule.alphas_cumprod, torch.full_like(t_batch, t_prev), x_t) if t_prev >= 0
                 else torch.ones_like(abar))
    x0 = predict_x0(x_t, t_batch, eps, schedule)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        noise = torch.randn_like(x_t) if noise is None else noise
        x_prev = x_prev + sigma * noise
    return x_prev


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` indices from ``T - 1`` down, evenly spaced ("trailing" spacing); ``steps = T`` gives all."""
    check_positive_int("steps", steps)
    if steps > timesteps:
        raise ValueError(f"steps must be at most the model's {timesteps} timesteps, got {steps}")
    return [int(round(timesteps - i * timesteps / steps)) - 1 for i in range(steps)]


@torch.no_grad()
def sample_loop(eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_T: torch.Tensor,
                schedule: Schedule, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                callback: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
                clip: float | None = None) -> torch.Tensor:
    """Run the reverse chain from ``x_T`` (``(B, ...)``, usually standard normal) to ``x_0``.

    ``sampler="ddpm"``: :func:`ddpm_step` at every one of the ``T`` indices
    (``steps`` must be ``None`` or ``T``). ``sampler="ddim"``: :func:`ddim_step`
    over :func:`ddim_timesteps` ``(T, steps)`` with ``eta``. Uses one network
    evaluation per step. ``callback(t_prev, x)`` runs after each step and may
    return a replacement for ``x`` (inpainting uses it). ``clip``: see the steps.
    """
    T = schedule.timesteps
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "ddpm" and steps not in (None, T):
        raise ValueError(f"the DDPM sampler walks all {T} steps; use sampler='ddim' for steps={steps}")
    indices = list(range(T - 1, -1, -1)) if sampler == "ddpm" else ddim_timesteps(T, steps or T)
    x = x_T
    for i, t in enumerate(indices):
        eps = eps_model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        t_prev = indices[i + 1] if i + 1 < len(indices) else -1
        if sampler == "ddpm":
            x = ddpm_step(eps, x, t, schedule, clip=clip)
        else:
            x = ddim_step(eps, x, t, t_prev, schedule, eta, clip=clip)
        if callback is not None:
            replaced = callback(t_prev, x)
            x = x if replaced is None else replaced
    return x


# ---------------------------------------------------------------------------
# the bound
# ---------------------------------------------------------------------------
def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                                        num_levels: int) -> torch.Tensor:
    """Elementwise ``log P(x)`` when ``x`` is one of ``num_levels`` values evenly spaced in ``[-1, 1]``.

    The probability of a value is the Gaussian's mass on its bin (half width
    ``1 / (num_levels - 1)``); the two end bins stretch to minus/plus infinity,
    so the probabilities of all levels sum to 1 and the result is in nats
    (Ho et al.'s L_0 decoder).
    """
    half_width = 1.0 / (num_levels - 1)
    # float64: the mass of a narrow bin far from the mean is a difference of two numbers close to 1
    x, mean, std = x.double(), mean.double(), std.double()
    cdf_upper = torch.special.ndtr((x + half_width - mean) / std)
    cdf_lower = torch.special.ndtr((x - half_width - mean) / std)
    log_bin = torch.log((cdf_upper - cdf_lower).clamp(min=1e-12))
    log_first = torch.log(cdf_upper.clamp(min=1e-12))        # (-inf, -1 + half_width]
    log_last = torch.log((1 - cdf_lower).clamp(min=1e-12))   # [1 - half_width, inf)
    out = torch.where(x < -1 + 1e-6, log_first, torch.where(x > 1 - 1e-6, log_last, log_bin))
    return out.float()


# ---------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of the step index (as in the Transformer): ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _label_embedding(num_classes: int | None, width: int) -> nn.Embedding | None:
    """A label embedding with one extra row, index ``num_classes``, for "no label" (classifier-free
    guidance's unconditional branch); ``None`` for an unconditional network."""
    if num_classes is None:
        return None
    check_positive_int("num_classes", num_classes)
    return nn.Embedding(num_classes + 1, width)


def _with_labels(net: nn.Module, time: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The time embedding ``(B, width)`` plus the labels' embedding, if the network is conditional."""
    if labels is None:
        return time if net.label is None else time + net.label.weight[-1]  # no label given: the null token
    if net.label is None:
        raise ValueError("this network is unconditional (num_classes=None); call it without labels")
    return time + net.label(labels)


class MLPDenoiser(nn.Module):
    """``eps_theta(x_t, t)`` for points ``(B, D)``: an MLP whose every hidden layer also gets ``t``'s embedding.

    ``num_classes``: optional class conditioning (chapter 7's guidance): a learned embedding of the label
    ``y`` (index ``num_classes`` is the "no label" token) is added to the time embedding. Left at ``None``
    the network is built exactly as before (same random draws, same weights' names).
    """

    def __init__(self, dim: int, hidden: int = 128, num_layers: int = 3, time_dim: int = 64,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.input = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers - 1))
        self.output = nn.Linear(hidden, dim)
        self.label = _label_embedding(num_classes, hidden)  # built last: the layers above draw as before

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        time = _with_labels(self, self.time(timestep_embedding(t, self.time_dim)), labels)
        h = self.input(x) + time
        for layer in self.layers:
            h = h + layer(F.silu(h))  # residual: a deep MLP that still trains quickly
        return self.output(F.silu(h))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm, plus the time embedding added in between (a residual block)."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_channels, out_channels)
        self.norm2 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(time)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """A small U-Net ``eps_theta(x_t, t)`` for ``(B, C, H, W)`` images with even ``H``, ``W``.

    One resolution step down and back up: ``H x W`` with ``channels``, then
    ``H/2 x W/2`` with ``2 * channels``; the skip connection concatenates the
    full-resolution features into the upward path.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, time_dim: int = 64,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.time_dim = time_dim
        tc = 4 * channels
        self.time = nn.Sequential(nn.Linear(time_dim, tc), nn.SiLU(), nn.Linear(tc, tc))
        self.input = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down1 = ResBlock(channels, channels, tc)
        self.downsample = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * channels, 2 * channels, tc)
        self.mid2 = ResBlock(2 * channels, 2 * channels, tc)
        self.upsample = nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1)
        self.up1 = ResBlock(2 * channels, channels, tc)
        self.up2 = ResBlock(channels, channels, tc)
        self.output = nn.Sequential(nn.GroupNorm(min(8, channels), channels), nn.SiLU(),
                                    nn.Conv2d(channels, in_channels, 3, padding=1))
        self.label = _label_embedding(num_classes, tc)  # optional class conditioning, as in MLPDenoiser

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        time = _with_labels(self, self.time(timestep_embedding(t, self.time_dim)), labels)
        full = self.down1(self.input(x), time)
        half = self.mid2(self.mid1(self.downsample(full), time), time)
        h = self.up1(torch.cat([self.upsample(half), full], dim=1), time)
        return self.output(self.up2(h, time))


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------
def check_shape_and_kind(shape: Sequence[int], kind: str, num_levels: int | None) -> tuple[int, ...]:
    """The data a continuous-space model (diffusion, flow matching) accepts: ``kind`` one of :data:`KINDS`,
    points shaped ``(D,)``, images ``(C, H, W)`` with even sides (the U-Net halves them once), levels
    with ``num_levels >= 2``. Returns ``shape`` as a tuple of ints."""
    shape = tuple(int(s) for s in shape)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "points" and len(shape) != 1:
        raise ValueError(f"points need a shape (D,), got {shape}")
    if kind != "points" and (len(shape) != 3 or shape[1] % 2 or shape[2] % 2):
        raise ValueError(f"images need a shape (C, H, W) with even H and W, got {shape}")
    if kind == "categorical" and (num_levels is None or num_levels < 2):
        raise ValueError(f"categorical data needs num_levels >= 2, got {num_levels}")
    return shape


def _bound_steps(T: int, num_timesteps: int | None) -> list[tuple[int, float]]:
    """The code indices ``t`` (1..T-1) of the KL terms a bound estimate evaluates, each with its weight.

    All of them when ``num_timesteps`` is ``None`` or covers them; otherwise the ``e`` first and ``e``
    last exactly (weight 1), where the bound's weight on the network's error is largest, and one random
    step per stratum of the middle, weighted by the stratum's length.
    """
    if num_timesteps is None or num_timesteps >= T - 1:
        return [(t, 1.0) for t in range(1, T)]
    check_positive_int("num_timesteps", num_timesteps)
    e = min(10, num_timesteps // 4)
    ends = [(t, 1.0) for t in list(range(1, 1 + e)) + list(range(T - e, T))]
    m = num_timesteps - 2 * e
    edges = torch.linspace(1 + e, T - e, m + 1)
    middle = [int(lo + torch.rand(()) * (hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]
    return ends + [(t, (T - 1 - 2 * e) / m) for t in middle]


class DDPM(AveragedNetworkModel):
    """A denoising diffusion model (Ho et al. 2020) with DDPM and DDIM samplers.

    Trains with the simple loss ``E_{t, x_0, eps} |eps - eps_theta(x_t, t)|^2``
    (:meth:`loss`); reports the variational bound (:meth:`bound_terms`,
    ``evaluate`` -> ``neg_elbo_nats``). The reverse variance is fixed to
    ``beta~_t`` (at index 0, where ``beta~_0 = 0``, to ``beta~_1`` as in Ho
    et al.'s code).

    Data: ``kind="points"`` (``(N, D)`` floats; standardised inside with
    statistics taken in ``initialize``), ``"categorical"`` (integer levels
    ``0..num_levels-1`` mapped to ``[-1, 1]``; samples are levels) or
    ``"grey"`` (floats in ``[0, 1]`` that were 8-bit, treated as 256 levels).

    Args:
        shape: one example's shape, ``(D,)`` or ``(C, H, W)``.
        kind: see above; num_levels: for ``"categorical"``.
        timesteps: ``T``; schedule: ``"linear"`` or ``"cosine"``.
        hidden, num_layers: the :class:`MLPDenoiser` (points);
        channels: the :class:`UNet` (images).
        sampler, sample_steps, eta: what :meth:`sample` uses (``"ddpm"``
            walks all ``T`` steps; ``"ddim"`` walks ``sample_steps`` with ``eta``).
        eval_timesteps: timesteps in the Monte Carlo estimate of the bound
            that ``evaluate`` reports (``None``: all ``T``, exact in ``t``).
        point_std: the points' standard deviation inside the model: larger
            spreads fine detail (sharp modes) over more noise levels.
        clip_denoised: samplers clamp their guess of ``x_0`` to the data's
            range (``[-1, 1]`` for images, the training points' range).
        ema_decay: decay of the weights' moving average, which ``eval`` mode
            (sampling, the bound) uses; 0 uses the trained weights as they are.
        lr_schedule: the learning rate's schedule over the training run
            (:func:`dgm.base.lr_schedule_factor`; the trainer applies it):
            ``"cosine"`` falls from the start value to 0 at the run's end, which
            lets the last steps settle fine detail such as the sharp modes of
            ``ring-sharp``; ``"constant"`` keeps it.
    """

    family = "diffusion (latent-variable, bound)"

    def __init__(self, shape: Sequence[int], kind: str = "points", num_levels: int | None = None,
                 timesteps: int = 1000, schedule: str = "cosine", hidden: int = 128, num_layers: int = 3,
                 channels: int = 16, sampler: str = "ddpm", sample_steps: int | None = None, eta: float = 0.0,
                 eval_timesteps: int | None = 100, ema_decay: float = 0.999, point_std: float = 10.0,
                 clip_denoised: bool = True, lr_schedule: str = "constant") -> None:
        super().__init__()
        shape = check_shape_and_kind(shape, kind, num_levels)
        check_positive_int("timesteps", timesteps)
        if timesteps > MAX_TIMESTEPS:  # the schedule's tables and every sampling loop grow with T
            raise ValueError(f"timesteps must be at most {MAX_TIMESTEPS:,} (1,000 is the usual choice), got {timesteps:,}")
        self.schedule = Schedule.make(schedule, timesteps)
        self._check_sampler(sampler, sample_steps, eta, timesteps)
        if eval_timesteps is not None:
            check_positive_int("eval_timesteps", eval_timesteps)
        if not point_std > 0:
            raise ValueError(f"point_std must be positive, got {point_std}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns the average off), got {ema_decay}")
        self.shape, self.kind = shape, kind
        self.num_levels = 256 if kind == "grey" else num_levels
        self.sampler, self.sample_steps, self.eta = sampler, sample_steps, float(eta)
        self.eval_timesteps = eval_timesteps
        check_lr_schedule(lr_schedule)
        self.lr_schedule = lr_schedule
        if kind == "points":
            self.network: nn.Module = MLPDenoiser(shape[0], hidden, num_layers)
        else:
            self.network = UNet(shape[0], channels)
        # an exponential moving average of the weights: what evaluation and sampling use (Ho et al. too)
        self.ema_decay = float(ema_decay)
        self.point_std = float(point_std)
        self.clip_denoised = bool(clip_denoised)
        self.ema = WeightAverage(self.network, self.ema_decay)
        # standardisation of points (set by initialize); images use the fixed map to [-1, 1]
        self.register_buffer("data_mean", torch.zeros(shape if kind == "points" else (1,)))
        self.register_buffer("data_scale", torch.ones(()))
        # the largest |coordinate| of the training points in model space (0 = not set): the sampler's clip range
        self.register_buffer("data_bound", torch.zeros(()))

    @staticmethod
    def _check_sampler(sampler: str, steps: int | None, eta: float, timesteps: int) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if steps is not None:
            check_positive_int("sample_steps", steps)
            if steps > timesteps:
                raise ValueError(f"sample_steps must be at most timesteps={timesteps}, got {steps}")
            if sampler == "ddpm" and steps != timesteps:
                raise ValueError("the DDPM sampler walks all timesteps; set sampler='ddim' to use fewer steps")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")

    # ---- data <-> diffusion space ---------------------------------------------
    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data in its own format -> the continuous space the diffusion runs in (float32)."""
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape[1:]) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected a batch of examples shaped (N, {', '.join(map(str, self.shape))}), got {got}")
        if self.kind == "points":
            return (x.float() - self.data_mean) / self.data_scale
        if self.kind == "categorical":
            levels = check_levels(x, self.shape, self.num_levels, "DDPM")
            return levels.float() * (2.0 / (self.num_levels - 1)) - 1
        return x.float() * 2 - 1

    def from_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_model_space`; images are rounded to their levels."""
        if self.kind == "points":
            return x * self.data_scale + self.data_mean
        levels = ((x.clamp(-1, 1) + 1) * ((self.num_levels - 1) / 2)).round()
        return levels.long() if self.kind == "categorical" else levels / (self.num_levels - 1)

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Points: centre with the training mean and scale to standard deviation ``point_std`` (one scale for all axes)."""
        if self.kind == "points":
            standardize_points(self, x_train, self.point_std)
            self.data_bound.copy_(self.to_model_space(x_train).abs().max())

    @property
    def clip(self) -> float | None:
        """Where samplers clamp their guess of ``x_0``: ``[-1, 1]`` for images, the training range for points."""
        if not self.clip_denoised:
            return None
        if self.kind != "points":
            return 1.0
        return float(self.data_bound) if float(self.data_bound) > 0 else None

    # ---- training -------------------------------------------------------------
    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise prediction ``eps_theta(x_t, t)``, same shape as ``x_t``.

        In training mode the network being trained; in eval mode its moving average.
        """
        return self.network(x_t, t) if self.training else self.ema.module(x_t, t)

    def data_spec(self, method: str = "loss") -> DataSpec:
        kind = {"points": "real", "categorical": "levels", "grey": "unit"}[self.kind]
        return DataSpec(self.shape, kind, self.num_levels if kind == "levels" else None)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The simple loss: mean squared error of the predicted noise at a uniformly random step."""
        x0 = self.to_model_space(x)
        t = torch.randint(self.schedule.timesteps, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        return F.mse_loss(self.eps(q_sample(x0, t, noise, self.schedule), t), noise)

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        """The simple loss with a fixed seed, so scores of different steps compare the same draws."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return float(self.loss(x.to(self.device)))

    # ---- sampling -------------------------------------------------------------
    @property
    def network_evaluations(self) -> int:
        """Network passes per sample with the configured sampler."""
        return self.schedule.timesteps if self.sampler == "ddpm" else (self.sample_steps or self.schedule.timesteps)

    def sampling_passes(self) -> int:
        return self.network_evaluations

    @property
    def sample_info(self) -> dict:
        """The sampler :meth:`sample` uses, for reports: name, steps, eta, network evaluations."""
        return {"sampler": self.sampler, "sample_steps": self.network_evaluations,
                "eta": self.eta if self.sampler == "ddim" else 1.0, "network_evaluations": self.network_evaluations}

    @torch.no_grad()
    def sample(self, n: int, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
               return_model_space: bool = False) -> torch.Tensor:
        """``n`` samples in the data's format (levels for digits), from pure noise.

        ``sampler``, ``steps``, ``eta`` override the configured ones for this
        call. Seed with ``torch.manual_seed`` first for repeatable draws.
        """
        check_positive_int("n", n)
        sampler = sampler or self.sampler
        steps = steps if steps is not None else (self.sample_steps if sampler == self.sampler else None)
        eta = self.eta if eta is None else float(eta)
        self._check_sampler(sampler, steps, eta, self.schedule.timesteps)
        was_training = self.training
        self.eval()
        try:
            noise = torch.randn(n, *self.shape, device=self.device)
            x = sample_loop(self.eps, noise, self.schedule, sampler, steps, eta, clip=self.clip)
        finally:
            self.train(was_training)
        return x if return_model_space else self.from_model_space(x)

    # ---- editing ----------------------------------------------------------------
    @torch.no_grad()
    def inpaint(self, x: torch.Tensor, known: torch.Tensor, sampler: str = "ddpm", steps: int | None = None,
                eta: float = 1.0) -> torch.Tensor:
        """Fill in the unknown pixels of ``x`` so they fit the known ones.

        ``known``: bool, broadcastable to ``x``, True where the pixel is kept.
        After every reverse step the known pixels are replaced by the data
        noised to the same step with :func:`q_sample` (Lugmayr et al.'s
        RePaint without resampling), so the unknown part is always generated
        next to a consistent context. Returns data in its own format.
        """
        x0 = self.to_model_space(x.to(self.device))
        known = torch.as_tensor(known, device=self.device).bool().expand_as(x0)

        def keep_known(t_prev: int, x_t: torch.Tensor) -> torch.Tensor:
            context = x0 if t_prev < 0 else q_sample(x0, t_prev, torch.randn_like(x0), self.schedule)
            return torch.where(known, context, x_t)

        self.eval()
        start = torch.randn_like(x0)
        out = sample_loop(self.eps, start, self.schedule, sampler, steps, eta, callback=keep_known, clip=self.clip)
        return self.from_model_space(out)

    @torch.no_grad()
    def sdedit(self, x: torch.Tensor, strength: float, steps: int = 50, eta: float = 0.0) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): noise ``x`` part of the way, then denoise it with DDIM.

        ``strength`` in ``(0, 1]`` is the fraction of the ``T`` steps to go back:
        small keeps the input, 1 forgets it. Returns data in its own format.
        """
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        check_positive_int("steps", steps)
        T = self.schedule.timesteps
        start = max(0, min(T - 1, int(round(strength * T)) - 1))
        x0 = self.to_model_space(x.to(self.device))
        x_t = q_sample(x0, start, torch.randn_like(x0), self.schedule)
        indices = [t for t in ddim_timesteps(T, min(steps, T)) if t <= start]
        indices = [start] + [t for t in indices if t < start]
        self.eval()
        for i, t in enumerate(indices):
            eps = self.eps(x_t, torch.full((len(x_t),), t, dtype=torch.long, device=x_t.device))
            x_t = ddim_step(eps, x_t, t, indices[i + 1] if i + 1 < len(indices) else -1, self.schedule, eta,
                            clip=self.clip)
        return self.from_model_space(x_t)

    # ---- the bound ----------------------------------------------------------------
    def _reverse_variance(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The fixed reverse variance ``beta~_t``, with index 0 using ``beta~_1`` (clipped, as Ho et al.)."""
        variance = self.schedule.posterior_variance.clone()
        variance[0] = variance[1] if len(variance) > 1 else self.schedule.betas[0]
        return _at(variance, t, like)

    @torch.no_grad()
    def bound_terms(self, x: torch.Tensor, num_timesteps: int | None = None) -> dict[str, torch.Tensor]:
        """The negative ELBO split into its terms, in nats per example, each ``(B,)``.

        * ``prior`` (L_T): ``KL(q(x_T | x_0) || N(0, I))``, exact;
        * ``diffusion`` (sum of L_{t-1}, t = 2..T): each a KL between Gaussians
          at one draw of ``x_t``; with ``num_timesteps`` only that many steps
          are evaluated: the first and last ``min(10, num_timesteps // 4)``
          exactly (most of the bound sits there, chapter 8 measures it), the
          rest stratified at random over the middle and scaled up (an unbiased
          estimate that does not swing with whether a draw hits the last step);
        * ``decoder`` (L_0): ``-log p(x_0 | x_1)``: the discretised Gaussian for
          images, the Gaussian density for points (in the data's own units).

        ``total`` is their sum. Images are in nats per image of discrete levels.
        """
        x0 = self.to_model_space(x.to(self.device))
        B, T, dims = len(x0), self.schedule.timesteps, math.prod(self.shape)
        per_example = lambda v: v.flatten(1).sum(1)  # noqa: E731

        t_last = torch.full((B,), T - 1, dtype=torch.long, device=x0.device)
        abar_T = _at(self.schedule.alphas_cumprod, t_last, x0)
        prior = per_example(gaussian_kl(abar_T.sqrt() * x0, torch.log(1 - abar_T), torch.zeros_like(x0), torch.zeros_like(x0)))

        diffusion = torch.zeros(B, device=x0.device)
        for t, weight in _bound_steps(T, num_timesteps):
            t_batch = torch.full((B,), t, dtype=torch.long, device=x0.device)
            x_t = q_sample(x0, t_batch, torch.randn_like(x0), self.schedule)
            true_mean, true_var = posterior_mean_variance(x0, x_t, t_batch, self.schedule)
            model_mean, _ = posterior_mean_variance(predict_x0(x_t, t_batch, self.eps(x_t, t_batch), self.schedule),
                                                    x_t, t_batch, self.schedule)
            diffusion += weight * per_example(gaussian_kl(true_mean, true_var.log(), model_mean, true_var.log()))

        t_first = torch.zeros(B, dtype=torch.long, device=x0.device)
        x_1 = q_sample(x0, t_first, torch.randn_like(x0), self.schedule)
        mean = predict_x0(x_1, t_first, self.eps(x_1, t_first), self.schedule)  # the posterior mean at index 0
        variance = self._reverse_variance(t_first, x0)
        if self.kind == "points":
            log_p = torch.distributions.Normal(mean, variance.sqrt()).log_prob(x0)
            decoder = -per_example(log_p) + dims * torch.log(self.data_scale)  # back to the data's units
        else:
            decoder = -per_example(discretized_gaussian_log_likelihood(x0, mean, variance.sqrt(), self.num_levels))
        return {"prior": prior, "diffusion": diffusion, "decoder": decoder, "total": prior + diffusion + decoder}

    def elbo(self, x: torch.Tensor, num_timesteps: int | None = None) -> torch.Tensor:
        """The evidence lower bound on ``log p(x)`` in nats, ``(B,)`` (see :meth:`bound_terms`)."""
        return -self.bound_terms(x, num_timesteps)["total"]

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """``neg_elbo_nats`` (and ``bpd`` for images) on ``x``, plus the sampler's ``network_evaluations``.

        Seeded, so repeated evaluations of one model agree.
        """
        total = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for chunk in torch.split(x, batch_size):
                total += float(self.bound_terms(chunk, self.eval_timesteps)["total"].sum())
        out = {"neg_elbo_nats": total / len(x)}
        if self.kind != "points":
            out["bpd"] = out["neg_elbo_nats"] / (math.prod(self.shape) * math.log(2))
        out["network_evaluations"] = float(self.network_evaluations)
        return out
