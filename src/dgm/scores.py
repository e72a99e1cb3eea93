"""Chapter 7's energies and scores: an energy-based model and a noise-conditional score network.

An energy ``E(x)`` defines a density only up to its normaliser,

    p(x) = exp(-E(x)) / Z,        Z = integral of exp(-E(x)) dx,

and ``Z`` is what blocks maximum likelihood in more than a few dimensions. The *score*
``grad_x log p(x) = -grad_x E(x)`` does not involve ``Z`` at all, and Langevin dynamics needs only the
score to sample. Pieces, each small enough to read next to its paper:

* samplers: :func:`langevin` (unadjusted Langevin, Welling & Teh 2011) and :func:`annealed_langevin`
  over a ladder of noise levels (Song & Ermon 2019, Algorithm 1), with :func:`annealed_step_sizes`
  and :func:`geometric_sigmas`;
* :func:`mixture_score`: the analytic score of an isotropic Gaussian mixture (the toy sets of
  :mod:`dgm.data`), noised or not, so the chapter can sample ``ring-sharp`` with no network at all;
* :func:`denoising_score_matching_loss` (Vincent 2011; weighted over noise levels as Song & Ermon 2019);
* :func:`grid_log_normalizer`: ``log Z`` by quadrature on a grid, possible in one or two dimensions only;
* models: :class:`EBM` (contrastive divergence with short-run Langevin from a replay buffer, Du &
  Mordatch 2019 and Nijkamp et al. 2019) and :class:`NCSN` (denoising score matching at ``L`` noise
  levels, annealed Langevin sampling, Song & Ermon 2019).

Shapes: points ``x`` are ``(B, D)``. A score function is a callable ``score_fn(x) -> (B, D)``
(:func:`langevin`) or, noise-conditional, ``score_fn(x, sigma) -> (B, D)`` with ``sigma`` a ``(B,)``
tensor of noise standard deviations (:func:`annealed_langevin`, :func:`denoising_score_matching_loss`).
Randomness is drawn from ``generator`` when given, else from torch's global generator (which the
trainer seeds), so a seed repeats every chain exactly.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .base import (AveragedNetworkModel, DataSpec, GenerativeModel, WeightAverage, check_lr_schedule,
                   check_positive_int, mlp, standardize_points)
from .diffusion import MLPDenoiser

Score = Callable[[torch.Tensor], torch.Tensor]
NoiseScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: the sinusoidal features of :func:`dgm.diffusion.timestep_embedding` were made for indices 0..999:
#: the NCSN embeds ``log sigma`` mapped linearly onto that range (``sigma_min`` -> 0, ``sigma_max`` -> 1000)
TIME_SCALE = 1000.0
#: the most grid points per axis :func:`grid_log_normalizer` accepts (the grid holds ``points ** D`` energies)
MAX_GRID = 4000


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------
def _check_points(name: str, x: object) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim != 2 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor of points shaped (B, D), got {got}")
    return x


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A standard normal draw shaped like ``like``, from ``generator`` or the global generator."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------
# Langevin dynamics
# ---------------------------------------------------------------------------
def langevin(score_fn: Score, x: torch.Tensor, step_size: float, steps: int,
             generator: torch.Generator | None = None,
             return_chain: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Unadjusted Langevin dynamics (Welling & Teh 2011, without the minibatch noise of the gradient):

        x_{k+1} = x_k + (eps / 2) * score(x_k) + sqrt(eps) * z_k,     z_k ~ N(0, I).

    As ``eps -> 0`` and ``steps -> infinity`` the chain's law tends to the density whose score it
    follows; at a finite ``eps`` it is biased (no Metropolis correction): keep ``sqrt(eps)`` well below
    the smallest length scale of the density.

    Args:
        score_fn: ``x (B, D) -> grad_x log p(x) (B, D)``.
        x: starting points ``(B, D)``; step_size: ``eps > 0``; steps: how many updates (>= 1).
        generator: where the noise comes from (default: torch's global generator).
        return_chain: also return every state, ``(steps + 1, B, D)`` with the start first.

    Returns:
        the last state ``(B, D)`` (and the chain).
    """
    x = _check_points("x", x)
    eps = _check_positive("step_size", step_size)
    check_positive_int("steps", steps)
    chain = [x.detach()] if return_chain else None
    for _ in range(steps):
        x = (x + 0.5 * eps * score_fn(x) + math.sqrt(eps) * _noise(x, generator)).detach()
        if chain is not None:
            chain.append(x)
    return (x, torch.stack(chain)) if chain is not None else x


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """``n`` noise levels from ``sigma_max`` down to ``sigma_min`` in a geometric sequence (a constant ratio
    between neighbours, Song & Ermon 2019 sec. 4.2); float64 ``(n,)``. ``n = 1`` gives ``[sigma_min]``."""
    sigma_max, sigma_min = _check_positive("sigma_max", sigma_max), _check_positive("sigma_min", sigma_min)
    check_positive_int("n", n)
    if sigma_min > sigma_max:
        raise ValueError(f"need sigma_min <= sigma_max, got sigma_min={sigma_min} and sigma_max={sigma_max}")
    if n == 1:
        return torch.tensor([sigma_min], dtype=torch.float64)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n, dtype=torch.float64)


def _check_sigmas(sigmas: object) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64) if not torch.is_tensor(sigmas) else sigmas
    if sigmas.ndim != 1 or len(sigmas) == 0 or not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise ValueError("sigmas must be a non-empty 1-D sequence of positive noise levels, largest first "
                         "(e.g. geometric_sigmas(3.0, 0.01, 10))")
    return sigmas


def annealed_step_sizes(sigmas: torch.Tensor | Sequence[float], eps: float) -> torch.Tensor:
    """Song & Ermon's step size at each level: ``alpha_i = eps * sigma_i^2 / sigma_L^2`` (``sigma_L`` the last,
    smallest level), so every level's step is the same fraction of its own noise variance. ``(L,)`` float64."""
    sigmas = _check_sigmas(sigmas).double()
    return _check_positive("eps", eps) * sigmas**2 / sigmas[-1] ** 2


def annealed_langevin(score_fn: NoiseScore, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
                      steps_per_level: int, eps: float, generator: torch.Generator | None = None,
                      denoise: bool = False,
                      return_chain: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    1. for each level ``i = 1..L`` (``sigmas`` largest first) set ``alpha_i = eps * sigma_i^2 / sigma_L^2``;
    2. run ``steps_per_level`` Langevin steps ``x <- x + alpha_i / 2 * s(x, sigma_i) + sqrt(alpha_i) z``;
    3. start the next level where this one ended.

    With ``denoise`` a last step ``x <- x + sigma_L^2 s(x, sigma_L)`` (Tweedie's formula: the mean of the
    clean point given the noisy one) removes the last level's noise (Jolicoeur-Martineau et al. 2021;
    Song & Ermon 2020); it costs one more network evaluation.

    Args:
        score_fn: ``(x (B, D), sigma (B,)) -> (B, D)``, the score of the data noised at level ``sigma``.
        x: starting points ``(B, D)`` (Song & Ermon: uniform noise; :class:`NCSN`: ``N(0, sigma_1^2 I)``).
        sigmas: the ladder ``(L,)``, largest first; steps_per_level: ``T``; eps: the last level's step.
        return_chain: also return the state after every level, ``(L + 1, B, D)`` (the start first).

    Returns:
        the final points ``(B, D)`` (and the chain).
    """
    x = _check_points("x", x)
    sigmas = _check_sigmas(sigmas)
    check_positive_int("steps_per_level", steps_per_level)
    alphas = annealed_step_sizes(sigmas, eps)
    chain = [x.detach()] if return_chain else None
    for sigma, alpha in zip(sigmas.tolist(), alphas.tolist()):
        level = torch.full((len(x),), sigma, dtype=x.dtype, device=x.device)
        for _ in range(steps_per_level):
            x = (x + 0.5 * alpha * score_fn(x, level) + math.sqrt(alpha) * _noise(x, generator)).detach()
        if chain is not None:
            chain.append(x)
    if denoise:
        last = torch.full((len(x),), float(sigmas[-1]), dtype=x.dtype, device=x.device)
        x = (x + float(sigmas[-1]) ** 2 * score_fn(x, last)).detach()
        if chain is not None:
            chain[-1] = x
    return (x, torch.stack(chain)) if chain is not None else x


# ---------------------------------------------------------------------------
# scores and losses
# ---------------------------------------------------------------------------
def mixture_score(x: torch.Tensor, means: torch.Tensor, std: float | torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """The analytic score ``grad_x log p(x)`` of ``p = sum_k w_k N(mu_k, std^2 I)``:

        grad_x log p(x) = sum_k r_k(x) (mu_k - x) / std^2,    r_k(x) = w_k N(x; mu_k, std^2 I) / p(x),

    the responsibilities ``r_k`` computed in log space (a softmax), so points far from every mean are exact.
    The mixture noised at level ``sigma`` is the same mixture with ``std -> sqrt(std^2 + sigma^2)``.

    Args:
        x: points ``(B, D)``; means: ``(K, D)`` (e.g. ``dgm.data.toy_density("ring").means``);
        std: the components' standard deviation, a number or a ``(B,)`` tensor (one per point);
        weights: ``(K,)`` mixture weights (normalised here), default equal.

    Returns:
        ``(B, D)`` in ``x``'s dtype.
    """
    x = _check_points("x", x)
    means = torch.as_tensor(means).to(x)
    if means.ndim != 2 or means.shape[1] != x.shape[1]:
        raise ValueError(f"means must be shaped (K, {x.shape[1]}) like the points' dimension, got {tuple(means.shape)}")
    std = torch.as_tensor(std).to(x)
    if std.ndim > 1 or (std.ndim == 1 and len(std) != len(x)) or bool((std <= 0).any()):
        raise ValueError(f"std must be a positive number or a ({len(x)},) tensor of positive numbers")
    var = (std**2).reshape(-1, 1)  # (1, 1) or (B, 1)
    log_w = torch.zeros(len(means)).to(x) if weights is None else torch.as_tensor(weights).to(x).log()
    if log_w.shape != (len(means),):
        raise ValueError(f"weights must be shaped ({len(means)},), one per mean, got {tuple(log_w.shape)}")
    diff = means[None] - x[:, None]                               # (B, K, D): mu_k - x
    logits = log_w - 0.5 * diff.pow(2).sum(-1) / var              # (B, K); the Gaussians' common factor cancels
    resp = torch.softmax(logits, dim=1)
    return (resp[..., None] * diff).sum(1) / var


def denoising_score_matching_loss(score_fn: NoiseScore, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
                                  generator: torch.Generator | None = None, levels: torch.Tensor | None = None,
                                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising score matching (Vincent 2011) over noise levels, weighted as Song & Ermon (2019, eq. 6).

    1. pick a level ``sigma`` per point (uniformly from ``sigmas``, or ``levels``);
    2. noise the point, ``x~ = x + sigma z``: the score of ``q(x~ | x)`` is ``-(x~ - x) / sigma^2 = -z / sigma``;
    3. regress ``s(x~, sigma)`` on it with weight ``lambda(sigma) = sigma^2``, which makes every level's
       term of the same size:

        loss = mean over points of  1/2 * sigma^2 * |s(x~, sigma) + z / sigma|^2 = 1/2 * |sigma s(x~, sigma) + z|^2.

    Its minimiser over all functions is the score of the noised data ``grad log q_sigma(x~)`` at each
    level (Vincent's identity): no normaliser and no data density is needed.

    Args:
        score_fn: ``(x (B, D), sigma (B,)) -> (B, D)``; x: clean points ``(B, D)``; sigmas: ``(L,)``.
        generator: for the level and noise draws; levels: optional ``(B,)`` indices into ``sigmas``;
        noise: optional ``(B, D)`` standard normal draws.

    Returns:
        the scalar loss (mean over the batch).
    """
    x = _check_points("x", x)
    sigmas = _check_sigmas(sigmas).to(x)
    if levels is None:
        levels = torch.randint(len(sigmas), (len(x),), generator=generator, device=x.device)
    if levels.shape != (len(x),) or levels.is_floating_point():
        raise ValueError(f"levels must be a ({len(x)},) integer tensor of indices into sigmas")
    noise = _noise(x, generator) if noise is None else noise
    if noise.shape != x.shape:
        raise ValueError(f"noise must have the points' shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    sigma = sigmas[levels]
    noised = x + sigma[:, None] * noise
    return 0.5 * (sigma[:, None] * score_fn(noised, sigma) + noise).pow(2).sum(1).mean()


def grid_log_normalizer(energy_fn: Callable[[torch.Tensor], torch.Tensor], low: Sequence[float] | torch.Tensor,
                        high: Sequence[float] | torch.Tensor, points: int = 400, chunk: int = 40_000) -> float:
    """``log Z = log integral exp(-E(x)) dx`` over the box ``[low, high]`` by the midpoint rule on a grid of
    ``points`` cells per axis (``points ** D`` energy evaluations, so only ``D <= 2`` is practical: this is
    why the normaliser blocks maximum likelihood in high dimension).

    Errors: the mass of ``exp(-E)`` outside the box is left out, and the midpoint rule is off by
    ``O(h^2 * curvature)`` for a cell width ``h``; a density whose modes are narrower than a few cells is
    integrated badly. Computed in float64 from ``energy_fn``'s float32 values, with ``logsumexp``.

    Args:
        energy_fn: ``(N, D) -> (N,)``; low, high: the box's corners, ``(D,)`` each (``D`` is 1 or 2).
        points: cells per axis; chunk: energies evaluated at once.
    """
    low = torch.as_tensor(low, dtype=torch.float64).flatten()
    high = torch.as_tensor(high, dtype=torch.float64).flatten()
    if low.shape != high.shape or len(low) not in (1, 2) or bool((high <= low).any()):
        raise ValueError("low and high must be the box's corners, (D,) each with D = 1 or 2 and high > low; "
                         "quadrature on a grid is only practical in one or two dimensions")
    check_positive_int("points", points)
    if points > MAX_GRID:
        raise ValueError(f"points must be at most {MAX_GRID} per axis (400 is plenty in 2-D), got {points}")
    width = (high - low) / points
    axes = [low[d] + width[d] * (torch.arange(points, dtype=torch.float64) + 0.5) for d in range(len(low))]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(low))
    with torch.no_grad():  # a number, not a graph: 160,000 energies would otherwise all be kept for backward
        log_terms = torch.cat([-energy_fn(part.float()).double().reshape(-1) for part in torch.split(grid, chunk)])
    return float(torch.logsumexp(log_terms, 0) + width.log().sum())


# ---------------------------------------------------------------------------
# shared: standardised points
# ---------------------------------------------------------------------------
class _Points(GenerativeModel):
    """Points standardised inside the model: ``z = (x - mean) / scale`` with statistics from ``initialize``
    (one scale for all axes, so the standardised data have standard deviation 1 on average per axis)."""

    def _setup_points(self, shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"{type(self).__name__} models points: shape must be (D,), e.g. (2,); got {shape}")
        self.shape = shape
        self.register_buffer("data_mean", torch.zeros(shape))
        self.register_buffer("data_scale", torch.ones(()))
        # the largest |coordinate| of the standardised training points (0 = not initialised)
        self.register_buffer("data_bound", torch.zeros(()))
        return shape

    def data_spec(self, method: str = "loss") -> DataSpec:
        return DataSpec(self.shape, "real")

    @torch.no_grad()
    def _standardise(self, x_train: torch.Tensor) -> None:
        standardize_points(self, x_train)
        self.data_bound.copy_(self.to_model_space(x_train.float()).abs().max())

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.data_mean) - self.data_mean) / self.data_scale

    def from_model_space(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.data_scale + self.data_mean


# ---------------------------------------------------------------------------
# the energy-based model
# ---------------------------------------------------------------------------
class EBM(_Points):
    """An energy-based model ``p(x) = exp(-E(x)) / Z`` on points, trained by contrastive divergence with
    short-run Langevin from a replay buffer (Du & Mordatch 2019; Nijkamp et al. 2019).

    The gradient of the log-likelihood is ``-grad E(x_data) + E_p[grad E(x)]``: the second term needs
    samples of the model itself. Each training step

    1. takes ``B`` chains from the replay buffer (persistent chains), restarting ``reinit_frac`` of them
       from uniform noise on the data's box (so new modes can still be found);
    2. runs ``langevin_steps`` of :func:`langevin` with the score ``-grad E`` and step ``langevin_step``;
    3. writes them back to the buffer and minimises
       ``mean E(x_data) - mean E(x_model) + energy_reg * mean(E(x_data)^2 + E(x_model)^2)``
       (the last term, Du & Mordatch's, keeps the energies near 0 so they cannot drift off together).

    The buffer is a registered buffer: checkpoints hold it, and a reloaded model continues the same chains.
    :meth:`sample` runs ``sample_steps`` Langevin steps from fresh uniform noise on the data's box (the
    buffer is not touched), so ``sampling_passes`` is ``sample_steps`` (each a forward and a backward pass).

    ``log_prob`` is exact up to quadrature: ``log Z`` by :func:`grid_log_normalizer` on a
    ``grid x grid`` midpoint grid over the standardised training data's box widened by ``grid_margin``;
    possible **only in one or two dimensions** (``grid ** D`` energies), which is the chapter's point.
    ``evaluate`` reports ``quadrature_error_nats``, the change of ``log Z`` between the grid and one of half
    its resolution: an estimate (generous, for the midpoint rule's ``h^2`` error) of the quadrature's error.

    What the defaults do (``data/scores_defaults.jsonl``, seeds 0-2): on ``ring`` the samples land on the
    eight modes (energy distance 0.003-0.014), yet the normalised density is flatter around the ring than
    the data (test NLL 2.55-2.59 nats against an entropy of 2.18): contrastive divergence with short chains learns
    an energy whose *samplers* look right long before its *density* is (Nijkamp et al. 2019); stronger
    energy regularisation (0.1) or a larger Langevin step (0.03) made it worse, and 20 chain steps per
    update no better than 10 (measured on seed 0, 1,500 steps). The Langevin step,
    ``sqrt(0.01) = 0.1`` data standard deviations, cannot resolve ``ring-sharp``'s modes (0.014 wide): there
    the defaults fail (0-3 of 8 modes; one seed never beats its initial weights on validation), and so did
    ``langevin_step=1e-4`` with ``grid=1000`` (seed 0) -- the score network (:class:`NCSN`) is the tool there.

    Args:
        shape: ``(D,)``; hidden, num_layers: the energy MLP (SiLU, smooth, so Langevin's gradients are too).
        langevin_steps, langevin_step: the short-run chains of training (in standardised units).
        buffer_size, reinit_frac: the replay buffer and the share of chains restarted from noise.
        energy_reg: the weight of the energies' squares. sample_steps: Langevin steps of :meth:`sample`.
        grid, grid_margin: the quadrature of ``log Z``. lr_schedule: see :func:`dgm.base.lr_schedule_factor`.
    """

    family = "energy-based (unnormalised, quadrature in 2-D)"

    def __init__(self, shape: Sequence[int] = (2,), hidden: int = 128, num_layers: int = 3, langevin_steps: int = 10,
                 langevin_step: float = 0.01, buffer_size: int = 10_000, reinit_frac: float = 0.05,
                 energy_reg: float = 0.001, sample_steps: int = 500, grid: int = 400, grid_margin: float = 1.0,
                 lr_schedule: str = "cosine") -> None:
        super().__init__()
        shape = self._setup_points(shape)
        for name, value in (("hidden", hidden), ("num_layers", num_layers), ("langevin_steps", langevin_steps),
                            ("buffer_size", buffer_size), ("sample_steps", sample_steps), ("grid", grid)):
            check_positive_int(name, value)
        self.langevin_step = _check_positive("langevin_step", langevin_step)
        if not 0 <= reinit_frac <= 1:
            raise ValueError(f"reinit_frac is the share of chains restarted from noise, in [0, 1]; got {reinit_frac}")
        if not (isinstance(energy_reg, (int, float)) and energy_reg >= 0):
            raise ValueError(f"energy_reg must be >= 0 (e.g. 0.001; 0 turns it off), got {energy_reg!r}")
        if grid > MAX_GRID:
            raise ValueError(f"grid must be at most {MAX_GRID} cells per axis (400 is plenty in 2-D), got {grid}")
        self.grid_margin = _check_positive("grid_margin", grid_margin)
        self.langevin_steps, self.sample_steps, self.grid = langevin_steps, sample_steps, grid
        self.reinit_frac, self.energy_reg = float(reinit_frac), float(energy_reg)
        self.lr_schedule = check_lr_schedule(lr_schedule)
        self.energy_net = mlp([shape[0], *[hidden] * num_layers, 1], nn.SiLU)
        # the replay buffer of persistent chains, in standardised units; initialize refills it on the data's box
        self.register_buffer("replay", (torch.rand(buffer_size, *shape) * 2 - 1) * 3)

    # ---- energies and scores --------------------------------------------------
    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """``E(z)`` of standardised points ``(B, D) -> (B,)``."""
        return self.energy_net(z).squeeze(-1)

    def energy_score(self, z: torch.Tensor) -> torch.Tensor:
        """``-grad_z E(z)`` (the model's score in standardised units), ``(B, D)``; works under ``no_grad``
        and leaves no gradient on the weights."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(z).sum(), z)
        return -grad

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad_x log p(x)`` in the data's units, ``(B, D)``: needs no normaliser."""
        return self.energy_score(self.to_model_space(_check_points("x", x))) / self.data_scale

    @property
    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardised box that fresh chains start on and the quadrature covers: ``+-(bound + margin)``."""
        bound = float(self.data_bound) if float(self.data_bound) > 0 else 3.0
        half = torch.full(self.shape, bound + self.grid_margin, device=self.device)
        return -half, half

    def _uniform(self, n: int) -> torch.Tensor:
        low, high = self.box
        return low + (high - low) * torch.rand(n, *self.shape, device=self.device)

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Standardise with the training points' statistics and fill the buffer with uniform noise on their box."""
        self._standardise(x_train)
        self.replay.copy_(self._uniform(len(self.replay)))

    # ---- training ---------------------------------------------------------------
    def negatives(self, n: int) -> torch.Tensor:
        """``n`` model samples for one contrastive-divergence step (standardised), from the replay buffer
        (steps 1-3 of the class docstring); the chains are written back."""
        n = min(check_positive_int("n", n), len(self.replay))
        index = torch.randperm(len(self.replay), device=self.device)[:n]  # no repeats: each chain moves once
        start = self.replay[index]
        fresh = torch.rand(n, device=self.device) < self.reinit_frac
        start = torch.where(fresh[:, None], self._uniform(n), start)
        chains = langevin(self.energy_score, start, self.langevin_step, self.langevin_steps)
        self.replay[index] = chains.detach()
        return chains

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The contrastive-divergence loss with the energy regulariser (draws negatives, moves the buffer)."""
        positive = self.energy(self.to_model_space(x))
        negative = self.energy(self.negatives(len(x)))
        return (positive.mean() - negative.mean()
                + self.energy_reg * (positive.pow(2).mean() + negative.pow(2).mean()))

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        """The quadrature NLL of the validation points (nats), so the trainer keeps the best weights."""
        return float(-self.log_prob(x, self.log_normalizer()).mean())

    # ---- likelihood ----------------------------------------------------------------
    @torch.no_grad()
    def log_normalizer(self, grid: int | None = None) -> float:
        """``log Z`` of ``exp(-E)`` in standardised units, by :func:`grid_log_normalizer` (``D <= 2`` only)."""
        if self.shape[0] > 2:
            raise ValueError(f"the normaliser by quadrature needs D <= 2 dimensions, these points have {self.shape[0]}")
        grid = grid or self.grid
        low, high = self.box
        return grid_log_normalizer(self.energy, low, high, grid)

    @property
    def has_exact_likelihood(self) -> bool:
        return self.shape[0] <= 2

    def log_prob(self, x: torch.Tensor, log_z: float | None = None) -> torch.Tensor:
        """``log p(x) = -E(z) - log Z - D log(scale)`` in nats in the data's units, ``(B,)``; ``log_z`` reuses
        a :meth:`log_normalizer` already computed."""
        log_z = self.log_normalizer() if log_z is None else log_z
        return -self.energy(self.to_model_space(x)) - log_z - self.shape[0] * torch.log(self.data_scale)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """``nll_nats``, ``bpd`` and ``quadrature_error_nats`` (see the class docstring); ``log Z`` once."""
        log_z = self.log_normalizer()
        total = sum(float(-self.log_prob(chunk, log_z).sum()) for chunk in torch.split(x, batch_size))
        nll = total / len(x)
        coarse = self.log_normalizer(max(1, self.grid // 2))
        return {"nll_nats": nll, "bpd": nll / (self.shape[0] * math.log(2)),
                "quadrature_error_nats": abs(coarse - log_z)}

    # ---- sampling ---------------------------------------------------------------------
    def sampling_passes(self) -> int:
        return self.sample_steps

    @property
    def sample_info(self) -> dict:
        return {"sampler": "langevin", "sample_steps": self.sample_steps, "network_evaluations": self.sample_steps}

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, return_model_space: bool = False) -> torch.Tensor:
        """``n`` points: ``steps`` (default ``sample_steps``) Langevin steps at ``langevin_step`` from uniform
        noise on the data's box. Seed with ``torch.manual_seed`` for repeatable draws."""
        steps = self.sample_steps if steps is None else check_positive_int("steps", steps)
        z = langevin(self.energy_score, self._uniform(n), self.langevin_step, steps)
        return z if return_model_space else self.from_model_space(z)


# ---------------------------------------------------------------------------
# the noise-conditional score network
# ---------------------------------------------------------------------------
class NCSN(AveragedNetworkModel, _Points):
    """A noise-conditional score network (Song & Ermon 2019) on points.

    The network is chapter 6's :class:`~dgm.diffusion.MLPDenoiser`; its time input is ``log sigma`` mapped
    linearly so that ``sigma_min -> 0`` and ``sigma_max -> 1000`` (any ``sigma`` in between or beyond works:
    the embedding is continuous). Parameterisation: the network predicts the noise, ``eps(x~, sigma)``, and

        s(x~, sigma) = -eps(x~, sigma) / sigma,

    which is Song & Ermon's technique of scaling the output by ``1 / sigma`` (Song & Ermon 2020) and makes
    the ``sigma^2``-weighted :func:`denoising_score_matching_loss` exactly chapter 6's noise-prediction
    loss ``1/2 |eps(x~, sigma) - z|^2``. Training draws a level uniformly from the geometric ladder
    ``sigma_max .. sigma_min`` (:func:`geometric_sigmas`, ``num_levels`` levels, in units of the data's
    standard deviation: points are standardised inside).

    :meth:`sample` runs :func:`annealed_langevin` from ``N(0, sigma_max^2 I)``, ``steps_per_level`` steps at
    each level with ``alpha_i = step_eps * sigma_i^2 / sigma_min^2`` (plus Tweedie's denoising step when
    ``denoise``): ``num_levels * steps_per_level (+ 1)`` network evaluations. The sampler and evaluation
    use an exponential moving average of the weights (``ema_decay``; 0 uses the trained weights).

    There is no likelihood (``has_exact_likelihood`` is False): ``evaluate`` reports ``dsm_loss``, the
    weighted denoising score-matching loss on the test points averaged over all levels (seeded).
    :meth:`score` evaluates the learned score at any ``sigma``: far below ``sigma_min`` or far from the
    data, where training never looked, it is unreliable (the chapter's point about low-density regions).
    """

    family = "score-based (noise-conditional, no likelihood)"

    def __init__(self, shape: Sequence[int] = (2,), hidden: int = 128, num_layers: int = 3, num_levels: int = 10,
                 sigma_max: float = 3.0, sigma_min: float = 0.01, steps_per_level: int = 50, step_eps: float = 1e-5,
                 denoise: bool = True, ema_decay: float = 0.999, lr_schedule: str = "cosine") -> None:
        super().__init__()
        shape = self._setup_points(shape)
        for name, value in (("hidden", hidden), ("num_layers", num_layers), ("num_levels", num_levels),
                            ("steps_per_level", steps_per_level)):
            check_positive_int(name, value)
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, num_levels).float())
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.steps_per_level, self.step_eps = steps_per_level, _check_positive("step_eps", step_eps)
        self.denoise = bool(denoise)
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns the average off), got {ema_decay}")
        self.lr_schedule = check_lr_schedule(lr_schedule)
        self.network = MLPDenoiser(shape[0], hidden, num_layers)
        self.ema = WeightAverage(self.network, float(ema_decay))

    def _sigma_time(self, sigma: torch.Tensor) -> torch.Tensor:
        """``log sigma`` on the embedding's scale: ``sigma_min -> 0``, ``sigma_max -> 1000``."""
        span = math.log(self.sigma_max / self.sigma_min) or 1.0
        return TIME_SCALE * (sigma.log() - math.log(self.sigma_min)) / span

    def model_score(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``s(z, sigma) = -eps(z, sigma) / sigma`` in standardised units; ``z`` ``(B, D)``, ``sigma`` ``(B,)``.
        Training mode uses the trained network, eval mode its moving average."""
        network = self.network if self.training else self.ema.module
        return -network(z, self._sigma_time(sigma)) / sigma[:, None]

    @torch.no_grad()
    def score(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The learned score of the data noised at ``sigma`` (both in the data's units), ``(B, D)``.

        ``sigma``: a positive number or a ``(B,)`` tensor. Uses the moving average (eval mode) or the
        trained weights (train mode), as the model is set."""
        x = _check_points("x", x)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(len(x))
        if sigma.shape != (len(x),) or bool((sigma <= 0).any()):
            raise ValueError(f"sigma must be a positive number or a ({len(x)},) tensor of positive numbers")
        scale = self.data_scale.to(x)
        return self.model_score(self.to_model_space(x), sigma / scale) / scale

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Standardise with the training points' statistics."""
        self._standardise(x_train)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`denoising_score_matching_loss` over the ladder, on standardised points."""
        return denoising_score_matching_loss(self.model_score, self.to_model_space(x), self.sigmas)

    def _all_levels_loss(self, x: torch.Tensor) -> float:
        """The loss at every level (the same noise draw at each), averaged: an estimate without level noise."""
        z = self.to_model_space(x)
        noise = torch.randn_like(z)
        total = 0.0
        for level in range(len(self.sigmas)):
            levels = torch.full((len(z),), level, dtype=torch.long, device=z.device)
            total += float(denoising_score_matching_loss(self.model_score, z, self.sigmas, levels=levels, noise=noise))
        return total / len(self.sigmas)

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        """The all-levels DSM loss with a fixed seed, so scores at different steps compare the same draws."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self._all_levels_loss(x)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """``dsm_loss`` on ``x`` (all levels, seeded) and the sampler's ``network_evaluations``; no likelihood."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            total = sum(self._all_levels_loss(chunk) * len(chunk) for chunk in torch.split(x, batch_size))
        return {"dsm_loss": total / len(x), "network_evaluations": float(self.network_evaluations)}

    # ---- sampling -------------------------------------------------------------------
    @property
    def network_evaluations(self) -> int:
        return len(self.sigmas) * self.steps_per_level + int(self.denoise)

    def sampling_passes(self) -> int:
        return self.network_evaluations

    @property
    def sample_info(self) -> dict:
        return {"sampler": "annealed_langevin", "num_levels": len(self.sigmas),
                "steps_per_level": self.steps_per_level, "network_evaluations": self.network_evaluations}

    @torch.no_grad()
    def sample(self, n: int, steps_per_level: int | None = None, step_eps: float | None = None,
               return_model_space: bool = False) -> torch.Tensor:
        """``n`` points by :func:`annealed_langevin` from ``N(0, sigma_max^2 I)`` (standardised units);
        ``steps_per_level``/``step_eps`` override the settings for this call."""
        steps = self.steps_per_level if steps_per_level is None else check_positive_int("steps_per_level",
                                                                                        steps_per_level)
        eps = self.step_eps if step_eps is None else _check_positive("step_eps", step_eps)
        was_training = self.training
        self.eval()
        try:
            start = self.sigma_max * torch.randn(n, *self.shape, device=self.device)
            z = annealed_langevin(self.model_score, start, self.sigmas, steps, eps, denoise=self.denoise)
        finally:
            self.train(was_training)
        return z if return_model_space else self.from_model_space(z)
