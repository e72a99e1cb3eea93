"""Chapter 7's flow matching: a velocity field learned by regression, sampled by an ODE solver.

Time convention (Lipman et al. 2023; the same everywhere in this module): ``t`` runs from 0 to 1;
``x0 ~ N(0, I)`` is noise at ``t = 0`` and ``x1`` is data at ``t = 1``. A conditional path joins one
noise draw to one data point,

    x_t = alpha_t x1 + sigma_t x0,        u_t = alpha'_t x1 + sigma'_t x0  (its velocity d x_t / dt),

with ``alpha_0 = 0, sigma_0 = 1`` and ``alpha_1 = 1, sigma_1 = 0`` (:func:`path_coefficients`):

* ``"linear"``: ``alpha_t = t, sigma_t = 1 - t``, so ``u_t = x1 - x0`` (rectified flow, Liu et al. 2023;
  Lipman et al.'s optimal-transport path with sigma_min = 0);
* ``"vp"``: ``alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2)``: chapter 6's cosine schedule
  ``abar = cos^2(pi s / 2)`` (its offset set to 0) read backwards in time, ``s = 1 - t``; variance
  preserving, ``alpha_t^2 + sigma_t^2 = 1``.

The conditional flow-matching loss (Lipman et al. eq. 9) regresses a network ``v_theta(x_t, t)`` onto
``u_t``; its minimiser is the marginal field ``v(x, t) = E[u_t | x_t = x]`` (their Theorem 2), whose ODE
``dx/dt = v(x, t)`` carries ``N(0, I)`` at ``t = 0`` to the data distribution at ``t = 1``. Pieces:

* paths and loss: :func:`path_coefficients`, :func:`conditional_path`, :func:`cfm_loss`, :func:`drop_labels`;
* the analytic marginal field of a Gaussian mixture, :func:`mixture_velocity` (tests and the chapter);
* ODE solvers :func:`euler`, :func:`heun` (:func:`ode_solve`), which also return the number of
  network evaluations;
* likelihood by the instantaneous change of variables (Chen et al. 2018; Grathwohl et al. 2019,
  FFJORD): :func:`divergence_exact`, :func:`divergence_hutchinson`, :func:`cnf_log_prob`;
* classifier-free guidance (Ho & Salimans 2022): :func:`guided_velocity`;
* models: :class:`FlowMatching` (points, digits, MNIST-5k; optionally class-conditional) and
  :class:`LatentFlowMatching` (the same on a chapter-3 autoencoder's codes: Rombach et al. 2022's idea).

Shapes: ``x`` is ``(B, *data_shape)``; ``t`` a float tensor ``(B,)``; a velocity field is a callable
``field(x, t) -> (B, *data_shape)``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .base import (AveragedNetworkModel, DataSpec, GenerativeModel, WeightAverage, check_levels,
                   check_lr_schedule, check_positive_int, standardize_points)
from .diffusion import MLPDenoiser, UNet, check_shape_and_kind

PATHS = ("linear", "vp")
SAMPLERS = ("euler", "heun")
DIVERGENCES = ("exact", "hutchinson")
#: networks embed ``t * TIME_SCALE``: chapter 6's sinusoidal features were made for step indices 0..999
TIME_SCALE = 1000.0
_LOG_2PI = math.log(2 * math.pi)

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------
# conditional paths and the regression loss
# ---------------------------------------------------------------------------
def _check_path(path: str) -> str:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS} ('linear': x_t = (1-t) x0 + t x1), got {path!r}")
    return path


def _check_times(t: torch.Tensor, batch: int) -> torch.Tensor:
    if not torch.is_tensor(t) or not t.is_floating_point() or t.shape != (batch,):
        got = f"shape {tuple(t.shape)} {t.dtype}" if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"t must be a float tensor shaped (batch,) = ({batch},) of times in [0, 1], got {got}")
    if len(t) and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"t must lie in [0, 1] (0: noise, 1: data), got {float(t.min()):.4g}..{float(t.max()):.4g}")
    return t


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)``, to broadcast against ``like``."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def path_coefficients(path: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t, alpha'_t, sigma'_t)`` of ``x_t = alpha_t x1 + sigma_t x0``, each shaped like ``t``."""
    _check_path(path)
    if path == "linear":
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)
    angle = 0.5 * math.pi * t
    return angle.sin(), angle.cos(), 0.5 * math.pi * angle.cos(), -0.5 * math.pi * angle.sin()


def conditional_path(path: str, x0: torch.Tensor, x1: torch.Tensor,
                     t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A point on the path from noise ``x0`` to data ``x1`` at time ``t``, and the path's velocity there.

    Args: ``x0`` (noise) and ``x1`` (data), both ``(B, ...)``; ``t`` ``(B,)`` in ``[0, 1]``.
    Returns ``(x_t, u_t)``, both ``(B, ...)``: ``x_t = alpha_t x1 + sigma_t x0`` and
    ``u_t = alpha'_t x1 + sigma'_t x0`` (Lipman et al. eq. 20-21 for the linear path).
    """
    if x0.shape != x1.shape:
        raise ValueError(f"noise x0 {tuple(x0.shape)} and data x1 {tuple(x1.shape)} must have the same shape")
    t = _check_times(t, len(x1))
    alpha, sigma, d_alpha, d_sigma = (_per_example(c, x1) for c in path_coefficients(path, t))
    return alpha * x1 + sigma * x0, d_alpha * x1 + d_sigma * x0


def cfm_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The conditional flow-matching loss: mean squared error of the predicted velocity, a scalar.

    ``E |v_theta(x_t, t) - u_t|^2`` (Lipman et al. eq. 9), averaged over the batch and the dimensions.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"predicted velocity {tuple(predicted.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")
    return (predicted - target).pow(2).mean()


def drop_labels(labels: torch.Tensor, probability: float, null_label: int) -> torch.Tensor:
    """Classifier-free guidance's label dropout: each label becomes ``null_label`` with ``probability``.

    One network then learns both ``v(x | y)`` and the unconditional ``v(x) = v(x | null)``. ``(B,)`` -> ``(B,)``.
    """
    if not 0 <= probability < 1:
        raise ValueError(f"the label dropout probability must be in [0, 1), e.g. 0.1; got {probability}")
    drop = torch.rand(labels.shape, device=labels.device) < probability
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def guided_velocity(conditional: torch.Tensor, unconditional: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 for velocities): ``(1 + w) v(x|y) - w v(x)``.

    ``w = 0`` is the conditional field, ``w = -1`` the unconditional one, ``w > 0`` pushes away from the
    unconditional field towards the class (sharper, less diverse samples).
    """
    if conditional.shape != unconditional.shape:
        raise ValueError(f"the conditional {tuple(conditional.shape)} and unconditional "
                         f"{tuple(unconditional.shape)} velocities must have the same shape")
    return (1 + weight) * conditional - weight * unconditional


def mixture_velocity(x: torch.Tensor, t: torch.Tensor, means: torch.Tensor, std: float,
                     weights: torch.Tensor | None = None, path: str = "linear") -> torch.Tensor:
    """The exact marginal field ``E[u_t | x_t = x]`` when the data is a Gaussian mixture.

    Data ``x1 ~ sum_k pi_k N(m_k, std^2 I)``, noise ``x0 ~ N(0, I)``. Within component ``k``, ``x_t`` is
    Gaussian with mean ``alpha_t m_k`` and variance ``V = alpha_t^2 std^2 + sigma_t^2``, and

        E[x1 | x_t, k] = m_k + alpha_t std^2 / V (x_t - alpha_t m_k),   E[x0 | x_t, k] = sigma_t / V (x_t - alpha_t m_k);

    ``u_k = alpha'_t E[x1 | x_t, k] + sigma'_t E[x0 | x_t, k]``, weighted by the posterior of ``k`` given ``x_t``.
    ``std = 0`` (point masses) is allowed for ``t < 1``. ``x``: ``(B, D)``; ``means``: ``(K, D)``.
    """
    if x.ndim != 2 or means.ndim != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"x must be (B, D) and means (K, D) with the same D, got {tuple(x.shape)} and "
                         f"{tuple(means.shape)}")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    k = len(means)
    weights = torch.full((k,), 1.0 / k, dtype=x.dtype) if weights is None else weights.to(x.dtype)
    alpha, sigma, d_alpha, d_sigma = (c[:, None, None] for c in path_coefficients(path, t.to(x.dtype)))
    variance = alpha**2 * std**2 + sigma**2                                   # (B, 1, 1)
    offset = x[:, None, :] - alpha * means[None].to(x.dtype)                  # (B, K, D)
    log_post = torch.log(weights)[None] - 0.5 * (offset.pow(2).sum(2) / variance[:, :, 0]
                                                 + x.shape[1] * torch.log(variance[:, :, 0]))
    post = torch.softmax(log_post, dim=1)[:, :, None]                         # (B, K, 1)
    mean_x1 = means[None].to(x.dtype) + alpha * std**2 / variance * offset
    mean_x0 = sigma / variance * offset
    return (post * (d_alpha * mean_x1 + d_sigma * mean_x0)).sum(1)


# ---------------------------------------------------------------------------
# ODE solvers
# ---------------------------------------------------------------------------
def ode_solve(field: Field, x: torch.Tensor, steps: int, method: str = "euler", t_start: float = 0.0,
              t_end: float = 1.0) -> tuple[torch.Tensor, int]:
    """Integrate ``dx/dt = field(x, t)`` from ``t_start`` to ``t_end`` in ``steps`` equal steps.

    ``method="euler"``: ``x += h v(x, t)`` (one evaluation per step, error O(h));
    ``"heun"``: the explicit trapezoid rule ``x += h/2 (v(x, t) + v(x + h v(x, t), t + h))``
    (two evaluations per step, error O(h^2)). ``t_end < t_start`` integrates backwards.
    Returns ``(x at t_end, the number of evaluations of field)``.
    """
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
    check_positive_int("steps", steps)
    h = (t_end - t_start) / steps
    for i in range(steps):
        t = torch.full((len(x),), t_start + i * h, dtype=x.dtype, device=x.device)
        k1 = field(x, t)
        if method == "euler":
            x = x + h * k1
        else:
            t_next = torch.full_like(t, t_start + (i + 1) * h)  # exact grid times, no drift from adding h
            x = x + 0.5 * h * (k1 + field(x + h * k1, t_next))
    return x, steps * (1 if method == "euler" else 2)


def euler(field: Field, x: torch.Tensor, steps: int, t_start: float = 0.0,
          t_end: float = 1.0) -> tuple[torch.Tensor, int]:
    """:func:`ode_solve` with Euler's method: ``steps`` network evaluations."""
    return ode_solve(field, x, steps, "euler", t_start, t_end)


def heun(field: Field, x: torch.Tensor, steps: int, t_start: float = 0.0,
         t_end: float = 1.0) -> tuple[torch.Tensor, int]:
    """:func:`ode_solve` with Heun's method: ``2 * steps`` network evaluations."""
    return ode_solve(field, x, steps, "heun", t_start, t_end)


# ---------------------------------------------------------------------------
# divergence and the instantaneous change of variables
# ---------------------------------------------------------------------------
def divergence_exact(field: Field, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The velocity and its exact divergence ``tr(dv/dx)``, one backward pass per dimension.

    Affordable for low-dimensional data (2-D points). Returns ``(v (B, ...), div (B,))``, detached.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = field(x, t)
        flat = v.flatten(1)
        div = torch.zeros(len(x), dtype=v.dtype, device=v.device)
        for i in range(flat.shape[1]):
            (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
            div = div + grad.flatten(1)[:, i]
    return v.detach(), div.detach()


def rademacher_like(x: torch.Tensor) -> torch.Tensor:
    """Random signs ``+-1`` shaped like ``x``: Hutchinson's usual probe (lower variance than Gaussian)."""
    return torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1


def divergence_hutchinson(field: Field, x: torch.Tensor, t: torch.Tensor,
                          probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The velocity and Hutchinson's estimate ``e^T (dv/dx) e`` of its divergence, one backward pass.

    Unbiased when ``E[e e^T] = I`` (Rademacher or standard normal ``probe``, shaped like ``x``; Hutchinson
    1990, used by FFJORD). Returns ``(v (B, ...), estimate (B,))``, detached.
    """
    if probe.shape != x.shape:
        raise ValueError(f"the probe must be shaped like x {tuple(x.shape)}, got {tuple(probe.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = field(x, t)
        (vjp,) = torch.autograd.grad(v, x, probe)  # e^T dv/dx, without forming the Jacobian
    return v.detach(), (vjp * probe).flatten(1).sum(1).detach()


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over all but the batch dimension: ``(B, ...)`` -> ``(B,)``."""
    return -0.5 * (z.pow(2) + _LOG_2PI).flatten(1).sum(1)


def cnf_log_prob(field: Field, x: torch.Tensor, steps: int, method: str = "heun", divergence: str = "exact",
                 probes: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log p_1(x)`` of the flow ``dx/dt = field(x, t)`` started from ``N(0, I)`` at ``t = 0``.

    The instantaneous change of variables (Chen et al. 2018, Theorem 1): along a trajectory,
    ``d log p_t(x_t) / dt = -div v(x_t, t)``. So we integrate the state and the divergence jointly
    *backwards*, from the data at ``t = 1`` to noise at ``t = 0`` (``l(1) = 0``, ``dl/dt = div v``):

        log p_1(x) = log N(x_0; 0, I) + l(0)      (l(0) = -int_0^1 div v dt).

    ``divergence="exact"`` (:func:`divergence_exact`) or ``"hutchinson"`` (:func:`divergence_hutchinson`,
    one Rademacher probe per trajectory, held fixed along it as in FFJORD, so each trajectory's estimate
    is unbiased up to the ODE discretisation). With ``probes`` > 1 each example is integrated that many
    times with independent probes. Returns ``(log_prob (B,), se)``: the mean over probes, and with
    Hutchinson and ``probes >= 2`` the standard error of each example's mean (``(B,)``), else ``None``.
    The fixed-step solver's discretisation error is not in ``se`` (more ``steps`` shrink it).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    check_positive_int("probes", probes)
    if divergence == "exact" and probes != 1:
        raise ValueError("the exact divergence has no probes: use probes=1 (or divergence='hutchinson')")
    batch, shape = len(x), x.shape[1:]
    xs = x.repeat(probes, *([1] * len(shape)))  # copy j of every example is rows j*B .. (j+1)*B - 1
    probe = rademacher_like(xs) if divergence == "hutchinson" else None

    def joint(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        point = state[:, :-1].view(-1, *shape)
        v, div = (divergence_exact(field, point, t) if probe is None
                  else divergence_hutchinson(field, point, t, probe))
        return torch.cat([v.flatten(1), div[:, None]], 1)

    state = torch.cat([xs.flatten(1), xs.new_zeros(len(xs), 1)], 1)
    state, _ = ode_solve(joint, state, steps, method, t_start=1.0, t_end=0.0)
    log_p = (standard_normal_log_prob(state[:, :-1]) + state[:, -1]).view(probes, batch)
    return mean_and_se(log_p)


def mean_and_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(repeats, B)`` independent estimates -> their mean ``(B,)`` and its standard error (``None`` for 1)."""
    if len(values) < 2:
        return values[0], None
    return values.mean(0), values.std(0, unbiased=True) / math.sqrt(len(values))


# ---------------------------------------------------------------------------
# the models
# ---------------------------------------------------------------------------
class FlowMatching(AveragedNetworkModel):
    """Conditional flow matching (Lipman et al. 2023) with an ODE sampler and an exact-likelihood evaluation.

    Data: ``kind="points"`` (``(N, D)`` floats, standardised inside to standard deviation ``point_std``
    with statistics taken in :meth:`initialize`), ``"categorical"`` (integer levels ``0..K-1``, digits) or
    ``"grey"`` (values ``k/255``, MNIST-5k: 256 levels). Images are *dequantised* in training, as the
    flows of chapter 5: ``y = levels + u`` with ``u ~ U[0, 1)``, mapped to ``[-1, 1]`` by
    ``v = 2 y / K - 1``, so the model is a density on continuous values and the reported
    ``nll_bound_nats`` (nats per image) is an upper bound on the discrete NLL, comparable to chapter 5's.
    Samples are ``floor`` ed back to levels.

    Args:
        shape, kind, num_levels: one example's shape; the data's kind; ``K`` for ``"categorical"``.
        path: ``"linear"`` or ``"vp"`` (:func:`path_coefficients`).
        sampler, sample_steps: :meth:`sample`'s ODE solver and its steps (``"heun"`` evaluates the
            network twice per step).
        hidden, num_layers: the :class:`~dgm.diffusion.MLPDenoiser` (points);
        channels: the :class:`~dgm.diffusion.UNet` (images); both get ``t * 1000`` as their time input.
        point_std: the points' standard deviation inside the model (noise has 1).
        ema_decay: the weights' moving average (:class:`~dgm.base.WeightAverage`), used in eval mode.
        lr_schedule: see :func:`dgm.base.lr_schedule_factor`.
        num_classes: ``None`` (unconditional) or the number of classes for classifier-free guidance;
            training batches are then ``(x, y)`` pairs and labels are dropped to a null token with
            ``label_dropout``. ``guidance``: the weight ``w`` :meth:`sample` uses by default;
            ``guidance_sweep``: the weights the run's sample scores also measure
            (``class_accuracy_w{w}``, ``fd_w{w}``; :meth:`score_guidance`).
        eval_steps, eval_probes: the likelihood ODE (Heun, ``eval_steps`` steps: ``2 * eval_steps``
            evaluations) and, for images, the number of Hutchinson probes (each with its own
            dequantisation draw) per test image; points use the exact divergence.
    """

    family = "flow matching (continuous-time flow, exact likelihood)"

    def __init__(self, shape: Sequence[int], kind: str = "points", num_levels: int | None = None,
                 path: str = "linear", sampler: str = "heun", sample_steps: int = 10, hidden: int = 256,
                 num_layers: int = 4, channels: int = 16, point_std: float = 1.0, ema_decay: float = 0.999,
                 lr_schedule: str = "constant", num_classes: int | None = None, label_dropout: float = 0.1,
                 guidance: float = 0.0, guidance_sweep: Sequence[float] = (), eval_steps: int = 32,
                 eval_probes: int = 2) -> None:
        super().__init__()
        shape = check_shape_and_kind(shape, kind, num_levels)
        _check_path(path)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        check_positive_int("sample_steps", sample_steps)
        check_positive_int("eval_steps", eval_steps)
        check_positive_int("eval_probes", eval_probes)
        if not point_std > 0:
            raise ValueError(f"point_std must be positive, got {point_std}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns the average off), got {ema_decay}")
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        if not 0 <= label_dropout < 1 or (num_classes is not None and label_dropout == 0):
            raise ValueError(f"label_dropout must be in (0, 1) for a conditional model (e.g. 0.1: the "
                             f"unconditional branch guidance needs), got {label_dropout}")
        if num_classes is None and (guidance != 0 or len(guidance_sweep)):
            raise ValueError("guidance needs a class-conditional model: set num_classes (e.g. 10 for digits)")
        self.shape, self.kind, self.path = shape, kind, path
        self.num_levels = 256 if kind == "grey" else num_levels
        self.sampler, self.sample_steps = sampler, sample_steps
        self.point_std, self.ema_decay = float(point_std), float(ema_decay)
        self.lr_schedule = check_lr_schedule(lr_schedule)
        self.num_classes, self.label_dropout = num_classes, float(label_dropout)
        self.guidance, self.guidance_sweep = float(guidance), tuple(float(w) for w in guidance_sweep)
        self.eval_steps, self.eval_probes = eval_steps, eval_probes
        if kind == "points":
            self.network: nn.Module = MLPDenoiser(shape[0], hidden, num_layers, num_classes=num_classes)
        else:
            self.network = UNet(shape[0], channels, num_classes=num_classes)
        self.ema = WeightAverage(self.network, self.ema_decay)
        # points' standardisation (set by initialize); images use the fixed map to [-1, 1]
        self.register_buffer("data_mean", torch.zeros(shape if kind == "points" else (1,)))
        self.register_buffer("data_scale", torch.ones(()))

    # ---- data <-> model space ---------------------------------------------------
    def data_spec(self, method: str = "loss") -> DataSpec:
        """Points; images as levels (``"grey"``: values in [0, 1]); ``loss``/``training_step``/``log_prob``
        of a conditional model take ``(x, y)`` pairs (``evaluate`` takes the images alone)."""
        labels = self.num_classes if method in ("loss", "training_step", "log_prob") else None
        if self.kind == "points":
            return DataSpec(self.shape, "real", labels=labels)
        if self.kind == "grey":
            return DataSpec(self.shape, "unit", labels=labels)
        return DataSpec(self.shape, "levels", self.num_levels, labels=labels)

    def levels_of(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the data's format -> integer levels ``0..K-1`` (int64), same shape."""
        if self.kind == "grey":
            return (x.float() * (self.num_levels - 1)).round().long()
        return check_levels(x, self.shape, self.num_levels, type(self).__name__)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Points -> standardised; dequantised image values ``y`` in ``[0, K]`` -> ``2 y / K - 1``."""
        if self.kind == "points":
            return (x.float() - self.data_mean) / self.data_scale
        return x.float() * (2.0 / self.num_levels) - 1

    def log_det_to_model_space(self) -> float:
        """``log |d model / d data|`` per example: the change of variables back to the data's units."""
        dims = math.prod(self.shape)
        if self.kind == "points":
            return -dims * math.log(float(self.data_scale))
        return dims * math.log(2.0 / self.num_levels)

    def from_model_space(self, v: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_model_space`; images are floored to their levels (the bin ``u`` filled)."""
        if self.kind == "points":
            return v * self.data_scale + self.data_mean
        levels = ((v + 1) * (self.num_levels / 2)).floor().clamp(0, self.num_levels - 1)
        return levels.long() if self.kind == "categorical" else levels / (self.num_levels - 1)

    def _model_batch(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch in model space: images dequantised with a fresh uniform draw."""
        if self.kind == "points":
            return self.to_model_space(x)
        levels = self.levels_of(x)
        return self.to_model_space(levels + torch.rand(levels.shape, device=levels.device))

    def _split(self, x) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.num_classes is not None:
            images, labels = x
            return images, labels
        return x, None

    @torch.no_grad()
    def initialize(self, x_train) -> None:
        """Points: centre with the training mean and scale to standard deviation ``point_std``."""
        x_train, _ = self._split(x_train) if isinstance(x_train, (tuple, list)) else (x_train, None)
        if self.kind == "points":
            standardize_points(self, x_train, self.point_std)

    # ---- the velocity field ------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``v_theta(x, t | y)`` in model space; ``labels`` ``None`` is the unconditional field.

        In training mode the network being trained; in eval mode its moving average.
        """
        net = self.network if self.training else self.ema.module
        return net(x, t * TIME_SCALE, labels)

    def field(self, labels: torch.Tensor | None = None, guidance: float = 0.0) -> Field:
        """The velocity field ``(x, t) -> v`` the samplers integrate: guided (:func:`guided_velocity`)
        when ``labels`` are given and ``guidance != 0``, one batched pass for both branches."""
        if labels is None or guidance == 0:
            return lambda x, t: self.velocity(x, t, labels)
        null = torch.full_like(labels, self.num_classes)

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            both = self.velocity(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
            return guided_velocity(*both.chunk(2), guidance)

        return guided

    # ---- training -------------------------------------------------------------------
    def loss(self, x) -> torch.Tensor:
        """The conditional flow-matching loss at a uniform random time, one noise draw per example."""
        x, labels = self._split(x)
        x1 = self._model_batch(x)
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1), device=x1.device)
        x_t, u_t = conditional_path(self.path, x0, x1, t)
        if labels is not None:
            labels = drop_labels(labels, self.label_dropout, self.num_classes)
        return cfm_loss(self.velocity(x_t, t, labels), u_t)

    @torch.no_grad()
    def validation_score(self, x) -> float:
        """The loss with a fixed seed, so scores of different steps compare the same draws."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return float(self.loss(x))

    # ---- sampling -------------------------------------------------------------------
    def evaluations(self, sampler: str | None = None, steps: int | None = None) -> int:
        """Sequential network evaluations of one :meth:`sample` call (a guided one batches its two
        branches into each evaluation)."""
        sampler, steps = sampler or self.sampler, steps or self.sample_steps
        return steps * (2 if sampler == "heun" else 1)

    @property
    def network_evaluations(self) -> int:
        return self.evaluations()

    def sampling_passes(self) -> int:
        return self.network_evaluations

    @property
    def sample_info(self) -> dict:
        """The sampler :meth:`sample` uses, for reports."""
        info = {"sampler": self.sampler, "sample_steps": self.sample_steps,
                "network_evaluations": self.network_evaluations}
        if self.num_classes is not None:
            info["guidance"] = self.guidance
        return info

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, guidance: float | None = None,
               sampler: str | None = None, steps: int | None = None,
               return_model_space: bool = False) -> torch.Tensor:
        """``n`` samples in the data's format, by integrating the (guided) field from noise at ``t = 0``.

        ``labels`` ``(n,)`` (conditional models; default: cycle through the classes) with guidance weight
        ``guidance`` (default: the model's; ``-1`` samples the unconditional field). ``sampler``/``steps``
        override the configured solver for this call. Seed with ``torch.manual_seed`` first.
        """
        sampler, steps = sampler or self.sampler, steps or self.sample_steps
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        check_positive_int("steps", steps)
        guidance = self.guidance if guidance is None else float(guidance)
        if self.num_classes is None:
            if labels is not None or guidance != 0:
                raise ValueError("this model is unconditional (num_classes=None): sample without labels or guidance")
        else:
            if labels is None:
                labels = torch.arange(n, device=self.device) % self.num_classes
            labels = torch.as_tensor(labels, device=self.device)
            if labels.shape != (n,) or labels.is_floating_point() or labels.min() < 0 \
                    or labels.max() >= self.num_classes:
                raise ValueError(f"labels must be {n} integers in 0..{self.num_classes - 1} (one per sample)")
        was_training = self.training
        self.eval()
        try:
            x0 = torch.randn(n, *self.shape, device=self.device)
            x1, _ = ode_solve(self.field(labels, guidance), x0, steps, sampler)
        finally:
            self.train(was_training)
        return x1 if return_model_space else self.from_model_space(x1)

    @torch.no_grad()
    def score_guidance(self, n: int, labels: torch.Tensor, score: Callable[[torch.Tensor], dict]) -> dict:
        """Sample scores at every weight of ``guidance_sweep``: ``score(samples)``'s keys suffixed ``_w{w}``.

        :func:`dgm.run.score_samples` calls it with the classifier's scores, so a guided model's JSON
        carries ``class_accuracy_w0``, ``fd_w0``, ``class_accuracy_w1``, ... (the trade-off curve).
        """
        out: dict[str, float] = {}
        for w in self.guidance_sweep:
            scores = score(self.sample(n, labels=labels, guidance=w))
            out.update({f"{key}_w{w:g}": value for key, value in scores.items()})
        return out

    # ---- likelihood ---------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` in nats, ``(B,)``: points exactly (exact divergence). Images (levels): a one-draw
        estimate of the dequantisation bound's integrand ``log p(levels + u)``, ``u ~ U[0, 1)^D``, with one
        Hutchinson probe (its mean over draws is a lower bound on ``log P(levels)``; ``evaluate`` averages
        it). A conditional model takes ``(x, y)`` and gives ``log p(x | y)``."""
        x, labels = self._split(x)
        if self.kind != "points":
            levels = self.levels_of(x)
            x = levels + torch.rand(levels.shape, device=levels.device)
        return self.log_density(x, labels)

    def log_density(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The continuous density ``log p(x)`` (nats, ``(B,)``) of points, or of dequantised image values
        ``y = levels + u`` in ``[0, K]^D`` (Hutchinson, one probe); ``labels``: ``log p(x | y)``."""
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"log_density takes continuous values shaped (N, {', '.join(map(str, self.shape))}) "
                             f"(images: levels + uniform noise in [0, {self.num_levels}]), got {got}")
        return self._log_prob_and_se(x, labels=labels)[0]

    def _log_prob_and_se(self, x: torch.Tensor, probes: int = 1,
                         labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        was_training = self.training
        self.eval()  # the average's weights, as sampling
        try:
            z = self.to_model_space(x)
            if labels is not None and probes > 1:
                raise ValueError("give labels with probes=1 (each copy of an example needs its label)")
            field = self.field(labels)
            if self.kind == "points":
                log_p, se = cnf_log_prob(field, z, self.eval_steps, "heun", "exact")
            else:
                log_p, se = cnf_log_prob(field, z, self.eval_steps, "heun", "hutchinson", probes)
        finally:
            self.train(was_training)
        return log_p + self.log_det_to_model_space(), se

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """Points: ``nll_nats``, ``bpd``. Images: the dequantisation bound ``nll_bound_nats`` and
        ``bpd_bound`` (as chapter 5), each test image integrated ``eval_probes`` times, each time with its
        own dequantisation draw and Rademacher probe, and ``nll_se``, the standard error of the bound's
        estimate from that noise. Also ``likelihood_evaluations``: network passes per likelihood. Seeded.
        A class-conditional model is scored by its unconditional branch (the null label): ``p(x)``, not ``p(x | y)``."""
        dims = math.prod(self.shape)
        out: dict[str, float] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if self.kind == "points":
                total = sum(float(-self._log_prob_and_se(chunk)[0].sum()) for chunk in torch.split(x, batch_size))
                out["nll_nats"] = total / len(x)
                out["bpd"] = out["nll_nats"] / (dims * math.log(2))
                evaluations = 2 * self.eval_steps * (1 + dims)  # forward + one backward per dimension
            else:
                k, total, variance = self.eval_probes, 0.0, 0.0
                for chunk in torch.split(x, max(1, batch_size // k)):
                    levels = self.levels_of(chunk)
                    copies = levels.repeat(k, *([1] * len(self.shape))).float()
                    copies = copies + torch.rand(copies.shape, device=copies.device)  # one draw of u per copy
                    log_p, _ = self._log_prob_and_se(copies)
                    mean, se = mean_and_se(log_p.view(k, len(chunk)))
                    total += float(-mean.sum())
                    variance += float(se.pow(2).sum()) if se is not None else 0.0
                out["nll_bound_nats"] = total / len(x)
                out["bpd_bound"] = out["nll_bound_nats"] / (dims * math.log(2))
                if k > 1:  # one probe per image gives no spread to estimate it from
                    out["nll_se"] = math.sqrt(variance) / len(x)
                evaluations = 2 * self.eval_steps * 2  # forward + one vector-Jacobian product
        out["likelihood_evaluations"] = float(evaluations)
        return out


class LatentFlowMatching(GenerativeModel):
    """Flow matching in an autoencoder's code space, decoded to images (latent generation, Rombach et al. 2022).

    The autoencoder is chapter 3's deterministic :class:`~dgm.vae.Autoencoder` (MLP encoder and decoder;
    a discretised logistic decoder for digits, a Gaussian one for grey MNIST-5k). :meth:`initialize`
    trains it first, ``ae_steps`` Adam steps on the training images with its own seeded generator, then
    freezes it; the codes of the training images are standardised (inside the :class:`FlowMatching` on
    ``kind="points"`` that models them, with ``point_std``). Sampling integrates the code flow and decodes
    with the decoder's mean (rounded to the levels): one decoder pass after the ODE. There is no
    likelihood of images here (a deterministic decoder has none): ``evaluate`` reports the autoencoder's
    reconstruction error on the test split, which bounds how good the decoded samples can be.

    The default sizes keep a checkpoint (autoencoder, code flow and its average) under the book's 2 MB.

    Args:
        shape, kind, num_levels: the images (``"categorical"`` digits or ``"grey"`` MNIST-5k).
        latent_dim, ae_hidden, ae_steps, ae_batch_size, ae_lr: the autoencoder and its training.
        path, sampler, sample_steps, hidden, num_layers, point_std, ema_decay, lr_schedule, eval_steps:
            the code-space :class:`FlowMatching`.
    """

    family = "latent flow matching (autoencoder + flow matching)"

    def __init__(self, shape: Sequence[int], kind: str = "categorical", num_levels: int | None = None,
                 latent_dim: int = 16, ae_hidden: Sequence[int] = (192,), ae_steps: int = 3000,
                 ae_batch_size: int = 128, ae_lr: float = 3e-3, path: str = "linear", sampler: str = "heun",
                 sample_steps: int = 10, hidden: int = 128, num_layers: int = 4, point_std: float = 1.0,
                 ema_decay: float = 0.999, lr_schedule: str = "constant", eval_steps: int = 16) -> None:
        super().__init__()
        from .vae import Autoencoder

        shape = tuple(int(s) for s in shape)
        if kind not in ("categorical", "grey"):
            raise ValueError(f"latent flow matching is for images: kind 'categorical' or 'grey', got {kind!r}")
        if kind == "categorical" and (num_levels is None or num_levels < 2):
            raise ValueError(f"categorical data needs num_levels >= 2, got {num_levels}")
        check_positive_int("latent_dim", latent_dim)
        check_positive_int("ae_steps", ae_steps)
        check_positive_int("ae_batch_size", ae_batch_size)
        if not ae_lr > 0:
            raise ValueError(f"ae_lr must be positive, got {ae_lr}")
        self.shape, self.kind = shape, kind
        self.num_levels = num_levels if kind == "categorical" else None
        self.ae_steps, self.ae_batch_size, self.ae_lr = ae_steps, ae_batch_size, float(ae_lr)
        self.autoencoder = Autoencoder(shape, "logistic" if kind == "categorical" else "gaussian",
                                       self.num_levels, latent_dim, tuple(ae_hidden))
        self.flow = FlowMatching((latent_dim,), "points", path=path, sampler=sampler, sample_steps=sample_steps,
                                 hidden=hidden, num_layers=num_layers, point_std=point_std, ema_decay=ema_decay,
                                 eval_steps=eval_steps)
        self.lr_schedule = check_lr_schedule(lr_schedule)
        self.register_buffer("ae_trained", torch.zeros((), dtype=torch.bool))

    def data_spec(self, method: str = "loss") -> DataSpec:
        if self.kind == "grey":
            return DataSpec(self.shape, "unit")
        return DataSpec(self.shape, "levels", self.num_levels)

    def train(self, mode: bool = True) -> "LatentFlowMatching":
        """As ``nn.Module.train``, but the frozen autoencoder always stays in eval mode (no dropout)."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def initialize(self, x_train: torch.Tensor) -> None:
        """Train the autoencoder (``ae_steps`` seeded Adam steps), freeze it, and standardise the codes."""
        self.autoencoder.initialize(x_train)
        generator = torch.Generator(device="cpu").manual_seed(0)
        optimizer = self.autoencoder.configure_optimizers(self.ae_lr)[0]
        self.autoencoder.requires_grad_(True)
        with torch.random.fork_rng(devices=[]):  # its own seeded draws (dropout): the run's stream is untouched
            torch.manual_seed(0)
            self.autoencoder.train()
            for _ in range(self.ae_steps):
                index = torch.randint(len(x_train), (min(self.ae_batch_size, len(x_train)),), generator=generator)
                optimizer.zero_grad(set_to_none=True)
                loss = self.autoencoder.loss(x_train[index.to(x_train.device)])
                loss.backward()
                optimizer.step()
        self.autoencoder.eval()
        self.autoencoder.requires_grad_(False)
        self.ae_trained.fill_(True)
        self.flow.initialize(self.encode(x_train))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> codes ``(N, latent_dim)`` with the frozen encoder."""
        was = self.autoencoder.training
        self.autoencoder.eval()
        try:
            return torch.cat([self.autoencoder.encode(chunk) for chunk in torch.split(x, 1000)])
        finally:
            self.autoencoder.train(was)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes -> images in the data's format (the decoder's mean, rounded to the levels)."""
        mean = self.autoencoder.decode_mean(z)
        if self.kind == "categorical":
            return mean.round().clamp(0, self.num_levels - 1).long()
        return (mean.clamp(0, 1) * 255).round() / 255

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The flow-matching loss on the (frozen) codes of ``x``."""
        return self.flow.loss(self.encode(x))

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        return self.flow.configure_optimizers(lr)

    def training_step(self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        losses = super().training_step(x, optimizers)
        self.flow.ema.update_parameters(self.flow.network)
        return losses

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        return self.flow.validation_score(self.encode(x))

    def sampling_passes(self) -> int:
        return self.flow.network_evaluations + 1  # the ODE on codes, then one decoder pass

    @property
    def sample_info(self) -> dict:
        return {**self.flow.sample_info, "decoder_passes": 1}

    @torch.no_grad()
    def sample(self, n: int, sampler: str | None = None, steps: int | None = None) -> torch.Tensor:
        """``n`` images: codes from the flow (``sampler``/``steps`` as :meth:`FlowMatching.sample`), decoded."""
        was_training = self.training
        self.eval()
        try:
            return self.decode(self.flow.sample(n, sampler=sampler, steps=steps))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """The autoencoder's reconstruction error on ``x`` (``recon_mse`` on the [0, 1] scale) and the
        code flow's NLL of the test codes (``code_nll_nats``, nats per code: not a likelihood of images)."""
        out = {"recon_mse": self.autoencoder.evaluate(x, batch_size)["recon_mse"]}
        out["code_nll_nats"] = self.flow.evaluate(self.encode(x), batch_size)["nll_nats"]
        return out
