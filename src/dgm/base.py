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

import itertools
import math
from typing import Any

import torch
from torch import nn


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
        self.config: dict[str, Any] = {}

    # ---- the API --------------------------------------------------------
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Training loss on a batch ``x`` (data shape with a leading batch dim).

        The default is the mean negative log-likelihood in nats per example,
        so families with ``log_prob`` need not write it.
        """
        return -self.log_prob(x).mean()

    def sample(self, n: int) -> torch.Tensor:
        """Draw ``n`` samples, shaped ``(n, *data_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample(n)")

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

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Optimizers the trainer steps; one Adam over all parameters by default."""
        return [torch.optim.Adam(self.parameters(), lr=lr)]

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
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        # the first tensor found, without listing them all: samplers ask on every step
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")


def set_learning_rate_factor(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    """One step of a learning-rate schedule: every parameter group's rate becomes ``factor`` times
    the rate it had the first time this was called (remembered as ``start_lr`` in the group).

    Models whose defaults include a schedule call this at the start of ``training_step`` with the
    factor for the current step, so the trainer stays schedule-free.
    """
    if not factor >= 0:
        raise ValueError(f"a learning-rate factor must be >= 0, got {factor}")
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("start_lr", group["lr"])
            group["lr"] = group["start_lr"] * factor


def half_cosine_factor(step: int, total_steps: int) -> float:
    """The factor ``(1 + cos(pi * min(step / total_steps, 1))) / 2`` of a half-cosine schedule:
    1 at step 0, 0 from ``total_steps`` on (use with :func:`set_learning_rate_factor`)."""
    if total_steps <= 0:
        raise ValueError(f"a half-cosine schedule needs total_steps > 0, got {total_steps}")
    return 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))


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
