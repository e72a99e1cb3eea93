"""The small API every model family in the book speaks.

A model is a :class:`GenerativeModel` (a ``torch.nn.Module``) with

* ``loss(x) -> scalar``       what gradient descent minimises on a batch;
* ``sample(n) -> tensor``     ``n`` new data points, shaped like the data;
* ``log_prob(x) -> (batch,)`` the exact log-density in nats, where the family
  has one (independent pixels, mixtures, autoregressive models, flows), or
* ``elbo(x) -> (batch,)``     a lower bound on it, where the family has a bound
  (VAEs, diffusion models).

The trainer (:func:`dgm.train.fit`) never calls ``loss`` directly: it calls
``training_step(batch, optimizers)``, whose default does one optimizer step on
``loss``. A family whose training is not one loss (a GAN: two optimizers,
alternating updates) overrides ``configure_optimizers`` and ``training_step``;
everything else (budget, seeding, validation, early stopping, NaN checks) stays
shared.

``evaluate(x)`` returns the family's test metrics as a dict of floats with the
key names the CLI's JSON uses (without the ``test_`` prefix):
``nll_nats``/``bpd`` for exact likelihoods, ``neg_elbo_nats`` for bounds.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import numbers
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class DataSpec:
    """What a model accepts at its door: one example's ``shape`` and the kind of values.

    ``kind``: ``"levels"`` (integers ``0..num_levels-1``, as int64 or as floats that hold integers),
    ``"binary"`` (0/1), ``"unit"`` (grey values in ``[0, 1]``), ``"dequantized"`` (levels plus uniform
    noise: reals in ``[0, num_levels]``) or ``"real"`` (any finite numbers, the 2-D points).
    ``labels``: the number of classes of a conditional model, whose batches are pairs ``(x, y)``;
    ``None`` for unconditional models.
    """

    shape: tuple[int, ...]
    kind: str
    num_levels: int | None = None
    labels: int | None = None

    def describe(self) -> str:
        batch = f"(N, {', '.join(map(str, self.shape))})"
        values = {"levels": f"integer levels 0..{(self.num_levels or 0) - 1}", "binary": "0/1 pixels",
                  "unit": "grey values in [0, 1]", "real": "finite real numbers",
                  "dequantized": f"dequantized levels in [0, {self.num_levels}]"}[self.kind]
        return f"a batch shaped {batch} of {values}"


# the usual way to get each kind of value right, named in the messages
_FIXES = {"levels": "use the levels of dgm.data.load(...) (e.g. 'digits': 0..16), not grey values",
          "binary": "binarize first, e.g. (x > 0.5).float(), or use dgm.data.load('mnist5k-bin')",
          "unit": "divide 0..255 images by 255, or use dgm.data.load('mnist5k')",
          "dequantized": "add uniform noise to integer levels, x + torch.rand_like(x)",
          "real": "check the data pipeline"}
_CONTINUOUS = ("real", "unit", "dequantized")

#: the public methods whose first argument is checked against :meth:`GenerativeModel.data_spec`
CHECKED_METHODS = ("loss", "log_prob", "elbo", "evaluate", "translate", "training_step")


def check_batch(x: Any, spec: DataSpec, who: str, dtype: torch.dtype = torch.float32) -> Any:
    """Check one batch against ``spec``; return it unchanged, or raise ``ValueError`` saying what is wrong
    and the usual fix. A continuous batch in another float type comes back as ``dtype`` (the model's)."""
    if spec.labels is not None:
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(f"{who} is conditional: it takes (images, labels) pairs, e.g. (split.x, split.y); "
                             f"got {type(x).__name__}")
        images, labels = x
        images = check_batch(images, DataSpec(spec.shape, spec.kind, spec.num_levels), who, dtype)
        if not torch.is_tensor(labels) or labels.shape != (len(images),) or labels.is_floating_point():
            got = f"shape {tuple(labels.shape)} {labels.dtype}" if torch.is_tensor(labels) else type(labels).__name__
            raise ValueError(f"{who} needs one integer label per image, shaped ({len(images)},); got {got}")
        if labels.min() < 0 or labels.max() >= spec.labels:
            raise ValueError(f"{who}: labels must lie in 0..{spec.labels - 1}, "
                             f"got min {int(labels.min())} and max {int(labels.max())}")
        return (images, labels)
    if not torch.is_tensor(x):
        raise ValueError(f"{who} expects a torch tensor, {spec.describe()}; got {type(x).__name__} "
                         "(convert with torch.as_tensor)")
    if tuple(x.shape[1:]) != spec.shape:
        hint = ("; add a batch dimension with x[None]" if tuple(x.shape) == spec.shape
                else "; a 2-D point set is shaped (N, 2), an image batch (N, 1, H, W)")
        noun = "points" if len(spec.shape) == 1 else "examples"
        raise ValueError(f"{who} expects {noun} of shape {spec.shape} ({spec.describe()}); "
                         f"got shape {tuple(x.shape)}{hint}")
    if len(x) == 0:
        raise ValueError(f"{who} got an empty batch (0 examples); pass at least one example")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{who} expects {spec.describe()}, got dtype {x.dtype}; convert with x.float()")
    if x.is_floating_point():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{who} got {bad} NaN or infinite value(s) in a batch of {len(x)}; "
                             "find where they come from in the data pipeline")
    elif spec.kind in _CONTINUOUS:
        raise ValueError(f"{who} expects floating-point {spec.describe()}, got {x.dtype}; "
                         + ("convert with x.float()" if spec.kind == "real" else _FIXES[spec.kind]))
    low, high = float(x.min()), float(x.max())
    if spec.kind in ("levels", "binary"):
        top = 1 if spec.kind == "binary" else spec.num_levels - 1
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError(f"{who} needs integer pixel levels ({spec.describe()}), got non-integer values; "
                             f"{_FIXES[spec.kind]}")
        if low < 0 or high > top:
            raise ValueError(f"{who}: pixel levels must lie in 0..{top} ({spec.describe()}), got min {low:g} "
                             f"and max {high:g}; {_FIXES[spec.kind]}")
    elif spec.kind in ("unit", "dequantized"):
        top = 1 if spec.kind == "unit" else spec.num_levels
        if low < 0 or high > top:
            raise ValueError(f"{who} expects {spec.describe()}, got values from {low:.4g} to {high:.4g}; "
                             f"{_FIXES[spec.kind]}")
    if spec.kind in _CONTINUOUS and x.dtype != dtype:
        x = x.to(dtype)
    return x


def _captures_config(init: Callable) -> Callable:
    """Wrap a family's constructor so that ``self.config`` holds the arguments of the outermost call
    (defaults filled in, as plain values): what checkpoints store and ``cls(**config)`` rebuilds.
    Written once here instead of in each constructor; it is set before the constructor body runs too."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def constructor(self, *args: Any, **kwargs: Any) -> None:
        outermost = not self.__dict__.get("_constructing", False)
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = {name: _plain(value) for name, value in list(bound.arguments.items())[1:]}
            self.__dict__["_constructing"] = True
            self.__dict__["config"] = config
        try:
            init(self, *args, **kwargs)
        finally:
            if outermost:
                del self.__dict__["_constructing"]
        if outermost:
            self.config = config

    return constructor


def _plain(value: Any) -> Any:
    """A constructor argument as a value a ``weights_only`` checkpoint can hold (sequences become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple, torch.Size)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    raise TypeError(f"a model setting must be a plain value (number, string, list), got {type(value).__name__}")


def _at_the_door(method: Callable) -> Callable:
    """Check the first argument of a public model method against the model's :class:`DataSpec`.

    Only the outermost call checks: ``loss`` calling ``log_prob`` on the same batch pays once.
    """
    if getattr(method, "_checks_input", False):
        return method

    first = list(inspect.signature(method).parameters)[1]  # the batch's name, for keyword calls

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        depth = self.__dict__.get("_door_depth", 0)
        if depth == 0 and (args or first in kwargs):
            spec = self.data_spec(method.__name__)
            if spec is not None:
                who = f"{type(self).__name__}.{method.__name__}"
                if args:
                    args = (check_batch(args[0], spec, who, self.float_dtype), *args[1:])
                else:
                    kwargs[first] = check_batch(kwargs[first], spec, who, self.float_dtype)
        self.__dict__["_door_depth"] = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self.__dict__["_door_depth"] = depth

    checked._checks_input = True
    return checked


def _checks_sample_count(method: Callable) -> Callable:
    """``sample(n, ...)``: ``n`` must be a positive whole number (the same message for every family)."""
    if getattr(method, "_checks_input", False):
        return method

    @functools.wraps(method)
    def checked(self, n, *args, **kwargs):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise ValueError(f"{type(self).__name__}.sample(n): n must be a positive integer (how many samples), "
                             f"got {n!r}")
        return method(self, int(n), *args, **kwargs)

    checked._checks_input = True
    return checked


class GenerativeModel(nn.Module):
    """Base class of every model in :mod:`dgm`.

    Subclasses set ``self.config`` to the plain keyword arguments (ints, floats,
    strings, tuples) that rebuild them, so a checkpoint is ``state_dict`` plus
    ``config`` and loads with ``torch.load(weights_only=True)``.
    """

    #: a short family name shown by ``python -m dgm list``
    family: str = "generative model"

    def __init__(self) -> None:
        super().__init__()
        # the constructor's arguments, recorded before its body ran (_captures_config); readable from here on
        self.config: dict[str, Any] = self.__dict__.get("config", {})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # every family's own loss/log_prob/elbo/evaluate/... is checked at the door, in this one place
        for name in CHECKED_METHODS:
            if name in cls.__dict__ and callable(cls.__dict__[name]):
                setattr(cls, name, _at_the_door(cls.__dict__[name]))
        if "sample" in cls.__dict__ and callable(cls.__dict__["sample"]):
            cls.sample = _checks_sample_count(cls.__dict__["sample"])
        if "__init__" in cls.__dict__:
            cls.__init__ = _captures_config(cls.__dict__["__init__"])

    def data_spec(self, method: str = "loss") -> DataSpec | None:
        """What ``method`` (``loss``, ``log_prob``, ``elbo``, ``evaluate``, ...) accepts, as a
        :class:`DataSpec`; every family declares it. ``None`` checks nothing (models outside the registry)."""
        return None

    def check_input(self, x: Any, method: str = "loss") -> Any:
        """Check a batch as ``method`` does at its door; returns it (continuous data in the model's dtype)."""
        spec = self.data_spec(method)
        return x if spec is None else check_batch(x, spec, f"{type(self).__name__}.{method}", self.float_dtype)

    @property
    def float_dtype(self) -> torch.dtype:
        """The dtype of the model's floating-point weights (float32 unless converted)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    # ---- the API --------------------------------------------------------
    @_at_the_door
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Training loss on a batch ``x`` (data shape with a leading batch dim).

        The default is the mean negative log-likelihood in nats per example,
        so families with ``log_prob`` need not write it.
        """
        return -self.log_prob(x).mean()

    def sample(self, n: int) -> torch.Tensor:
        """Draw ``n`` samples, shaped ``(n, *data_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample(n)")

    @_at_the_door
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density (nats) of each example in ``x``: shape ``(batch,)``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no exact log_prob; use its bound (e.g. elbo) instead"
        )

    @property
    def has_exact_likelihood(self) -> bool:
        return type(self).log_prob is not GenerativeModel.log_prob

    # ---- training hooks used by dgm.train.fit ----------------------------
    def initialize(self, x_train: torch.Tensor) -> None:
        """Data-dependent initialisation, called once by the trainer before step 0.

        The default does nothing; e.g. a mixture places its means with k-means.
        Change parameters in place (``param.copy_``): the optimizers already hold them.
        """

    #: the learning-rate schedule over the run (:func:`lr_schedule_factor`); the trainer applies it to
    #: every optimizer, as fractions of the run, so it always ends where the run ends
    lr_schedule: str = "constant"

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Optimizers the trainer steps; one Adam over all parameters by default."""
        return [torch.optim.Adam(self.parameters(), lr=lr)]

    @_at_the_door
    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        """One update on batch ``x``; returns the losses to log (``"loss"`` first).

        Override for families that alternate several optimizers (GANs).
        """
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float | None:
        """Lower-is-better number for early stopping on a validation batch.

        Defaults to the mean loss; a family with no meaningful validation loss
        (the image GANs) returns ``None`` and the trainer then keeps the last weights.
        """
        return float(self.loss(x))

    # ---- evaluation ------------------------------------------------------
    @torch.no_grad()
    @_at_the_door
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """Test metrics in nats per example (and bits per dimension).

        ``x``: the whole split, shape ``(N, *data_shape)``.
        """
        if not self.has_exact_likelihood:
            return {}
        dims = math.prod(x.shape[1:])
        total = 0.0
        for chunk in torch.split(x, batch_size):
            total += float(-self.log_prob(chunk).sum())
        nll = total / len(x)
        return {"nll_nats": nll, "bpd": nll / (dims * math.log(2))}

    def sampling_passes(self) -> int:
        """Sequential network evaluations ``sample(n)`` needs (for any ``n``).

        1 for one-shot samplers (independent pixels, VAE decoders, GAN
        generators, coupling flows); ``D`` for autoregressive models; the
        number of denoising steps for diffusion models. The comparison chapter
        reports it beside the measured sampling time.
        """
        return 1

    def num_parameters(self) -> int:
        """Trained parameters: a weight average's copy (:class:`WeightAverage`) is not counted twice."""
        copies = {id(p) for m in self.modules() if isinstance(m, WeightAverage) for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in copies)

    @property
    def device(self) -> torch.device:
        # the first tensor found, without listing them all: samplers ask on every step
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")


class WeightAverage(torch.optim.swa_utils.AveragedModel):
    """An exponential moving average of ``module``'s parameters, the one every family that averages uses.

    ``update_parameters(module)`` after each optimizer step moves the average towards the current
    weights: ``avg <- decay * avg + (1 - decay) * w``. With ``warmup`` the decay after ``t`` updates is
    ``min(decay, (1 + t) / (10 + t))``, so a short run forgets the random start. The average starts at
    the module's initial weights (``n_averaged`` starts at 1, so the first update blends rather than
    copies); sampling and evaluation read ``.module``. Its buffers are saved in checkpoints.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"a weight average's decay must be in [0, 1), e.g. 0.999; got {decay}")
        super().__init__(module, multi_avg_fn=self._blend, use_buffers=False)
        self.module.requires_grad_(False)
        self.decay, self.warmup = float(decay), bool(warmup)
        self.n_averaged.fill_(1)

    def _blend(self, averages: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        t = int(n_averaged) - 1  # updates so far
        decay = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        torch._foreach_lerp_(averages, current, 1 - decay)  # one call for all tensors


class AveragedNetworkModel(GenerativeModel):
    """A model that trains one network, ``self.network``, with Adam, and samples and evaluates with
    ``self.ema``, a :class:`WeightAverage` of it (diffusion, flow matching, score networks)."""

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Adam on the trained network only (the moving average is not a parameter to optimise)."""
        return [torch.optim.Adam(self.network.parameters(), lr=lr)]

    def training_step(self, x: Any, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One Adam step on the loss, then move the average towards the new weights."""
        losses = super().training_step(x, optimizers)
        self.ema.update_parameters(self.network)
        return losses


def lr_schedule_factor(schedule: str, progress: float) -> float:
    """The learning-rate factor of ``schedule`` at ``progress`` (the fraction of the run done, 0..1).

    * ``"constant"``: 1 throughout;
    * ``"cosine"``: ``(1 + cos(pi * progress)) / 2``, from 1 at the start to 0 at the end of the run;
    * ``"halving:F"``: ``0.5 ** (progress / F)``, half the rate after every fraction ``F`` of the run.

    The trainer (:func:`dgm.train.fit`) applies it, so a schedule always spans the run it is in.
    """
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 0.5 ** (progress / _halving_fraction(schedule))


def check_lr_schedule(schedule: Any) -> str:
    """``schedule`` if it names a learning-rate schedule (see :func:`lr_schedule_factor`), else a ValueError."""
    if schedule in ("constant", "cosine"):
        return schedule
    if isinstance(schedule, str) and schedule.startswith("halving:"):
        _halving_fraction(schedule)
        return schedule
    raise ValueError(f"lr_schedule must be 'constant', 'cosine' or 'halving:F' (halve every fraction F of the "
                     f"run, e.g. 'halving:0.25'), got {schedule!r}")


def _halving_fraction(schedule: str) -> float:
    try:
        fraction = float(schedule.split(":", 1)[1])
    except ValueError:
        fraction = float("nan")
    if not (math.isfinite(fraction) and fraction > 0):
        raise ValueError(f"in lr_schedule 'halving:F', F is the fraction of the run after which the rate "
                         f"halves, a number > 0 such as 0.25; got {schedule!r}")
    return fraction


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module] = nn.ReLU, dropout: float = 0.0,
        zero_last: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...`` with ``activation()`` (then dropout, if any) between
    them and nothing after the last. ``zero_last`` starts the last layer at zero, so that a network
    predicting a change (a flow's coupling) begins as "no change"."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(fan_in, fan_out))
    if zero_last:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


@torch.no_grad()
def standardize_points(model: nn.Module, x_train: torch.Tensor, target_std: float = 1.0) -> None:
    """Set a points model's buffers ``data_mean`` ``(D,)`` and ``data_scale`` ``()`` from ``x_train`` ``(N, D)``,
    so that ``(x - data_mean) / data_scale`` has mean 0 and standard deviation ``target_std`` over all
    coordinates: one scale for every axis, which keeps the data's shape (a ring stays round)."""
    x_train = x_train.float()
    model.data_mean.copy_(x_train.mean(0))
    model.data_scale.copy_((x_train - model.data_mean).std() / target_std)


def gaussian_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
                logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats (arguments broadcast):

        1/2 * (logvar2 - logvar1 + (exp(logvar1) + (mean1 - mean2)^2) / exp(logvar2) - 1).

    Sum it over the dimensions for diagonal Gaussians. Chapter 3's KL to the prior N(0, I) and every
    term of chapter 6's diffusion bound are this one formula. Log-variances, not variances, so that a
    tiny variance (a confident encoder) cannot underflow to 0 and make the log infinite."""
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mean1 - mean2) ** 2) * torch.exp(-logvar2) - 1)


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise a helpful error."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_levels(x: torch.Tensor, shape: tuple[int, ...], num_levels: int, who: str) -> torch.Tensor:
    """Check a batch of discrete images and return it as int64 levels, same shape.

    ``x``: ``(batch, *shape)`` holding integers ``0..num_levels-1`` (floats that
    hold integers, such as binarized images, are accepted). ``who`` names the
    model in the error messages.
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{who} expects a torch tensor of pixel levels, got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"expected examples of shape {tuple(shape)} (a batch shaped (N, {', '.join(map(str, shape))})), "
                         f"got {tuple(x.shape[1:])}; add a batch dimension with x[None] for a single example")
    levels = x.long()
    if x.is_floating_point() and not torch.equal(levels.to(x.dtype), x):
        raise ValueError(f"{who} needs integer pixel levels; got non-integer values "
                         "(binarize grey images first, e.g. dgm.data.load('mnist5k-bin'))")
    if levels.numel() and (levels.min() < 0 or levels.max() >= num_levels):
        raise ValueError(f"pixel levels must lie in 0..{num_levels - 1}, "
                         f"got min {int(levels.min())} and max {int(levels.max())}")
    return levels


def settings_of(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``cls(...)`` takes: its constructor's settings, by name."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind in kinds}


def check_settings(cls: type, settings: dict[str, Any]) -> None:
    """Check constructor settings (e.g. ``--set KEY=VALUE``) against ``cls``'s signature and type hints.

    An unknown name lists the valid ones; a value of the wrong type names the expected one; numbers
    must be finite and not negative (each constructor checks its own finer ranges). Raises ``ValueError``.
    """
    known = settings_of(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  an unresolvable annotation: check names only
        hints = {}
    for name, value in settings.items():
        if name not in known:
            raise ValueError(f"{cls.__name__} has no setting {name!r}; valid settings: {', '.join(known)}")
        expected = hints.get(name)
        if expected is not None:
            problem = _type_problem(value, expected)
            if problem:
                raise ValueError(f"setting {name}={value!r}: {problem}")


def _type_problem(value: Any, expected: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``expected``, or ``None`` when it does."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if expected is bool:
        return None if isinstance(value, bool) else f"expected True or False, got {value!r}"
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number, got {value!r}"
        return None if value >= 0 else f"must not be negative, got {value}"
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        return None if value >= 0 else f"must not be negative, got {value}"
    if expected is str:
        return None if isinstance(value, str) else f"expected a string (a name), got {value!r}"
    if origin in (tuple, list, Sequence) or expected in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return f"expected a list such as (64, 64), got {value!r}"
        inner = [a for a in args if a is not Ellipsis]
        for item in value:
            problem = _type_problem(item, inner[0]) if inner else None
            if problem:
                return f"in {value!r}: {problem}"
        return None
    return None
