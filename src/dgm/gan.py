"""Chapter 4's models: generative adversarial networks.

A GAN has no density at all. A generator ``G`` maps latent noise
``z ~ N(0, I)`` to data space; a discriminator ``D`` is a binary classifier
that says how likely a point is to be real. The two are trained against each
other with two optimizers (``configure_optimizers`` / ``training_step``, run
by the shared trainer :func:`dgm.train.fit`):

* ``D`` step: lower the classification loss on a real batch and a fake batch;
* ``G`` step: change ``G`` so that ``D`` mistakes its fakes for real data.

``D`` returns a **logit** ``l`` (``D(x) = sigmoid(l)``), so every loss below is
written with ``softplus`` and stays finite when ``D`` is very sure:
``-log D = softplus(-l)`` and ``-log(1 - D) = softplus(l)``.

Generator objectives (``loss=``, see :data:`GENERATOR_LOSSES`):

* ``"classification"``  the classification-error game ``max_G min_D
  1/2 E[1 - D(x)] + 1/2 E[D(G(z))]``: D minimises its error, G maximises it;
* ``"saturating"``      the log minimax game: G minimises ``E log(1 - D(G(z)))``;
* ``"nonsaturating"``   G minimises ``-E log D(G(z))`` (same fixed point,
  strong gradients early on);
* ``"feature_matching"``  G matches the mean of D's last hidden features on
  real and fake batches (Salimans et al. 2016);
* ``"denoising"``       non-saturating loss plus denoising feature matching
  (Warde-Farley & Bengio 2017, simplified): a small denoising autoencoder
  learns where real features lie, and G is pulled towards its output.

Remedies for mode collapse that combine with any of them: ``pack=m``
(PacGAN: D judges ``m`` samples at once, so a batch of near-copies looks
fake), ``r1=gamma`` (a gradient penalty ``gamma/2 E||grad D(x)||^2`` on
real data, Mescheder et al. 2018), ``latent_components=K`` (a learned mixture
of latent Gaussians, DeLiGAN, with ``latent_lr`` its own learning-rate factor)
and ``ema=beta`` (sample from a moving average
of G's weights, Yazici et al. 2019).

Classes: :class:`GAN` (MLPs, 2-D points), :class:`DCGAN` (convolutions,
28x28 MNIST-5k), :class:`ConditionalGAN` (one-hot labels into both
networks) and :class:`CycleGAN` (two generators, cycle consistency).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .base import DataSpec, GenerativeModel, WeightAverage, check_lr_schedule, check_positive_int, mlp

GENERATOR_LOSSES = ("classification", "saturating", "nonsaturating", "feature_matching", "denoising")


# ---------------------------------------------------------------------------
# the losses, on discriminator logits
# ---------------------------------------------------------------------------
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, game: str = "log") -> torch.Tensor:
    """The discriminator's loss on a real and a fake batch of logits ``(B,)``.

    ``game="log"``: binary cross-entropy, ``-E log D(x) - E log(1 - D(G(z)))``.
    ``game="classification"``: the expected error ``1/2 E[1 - D(x)] + 1/2 E[D(G(z))]``.
    """
    if game == "log":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if game == "classification":
        return 0.5 * (1 - torch.sigmoid(real_logits)).mean() + 0.5 * torch.sigmoid(fake_logits).mean()
    raise ValueError(f"game must be 'log' or 'classification', got {game!r}")


def generator_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's adversarial loss on the logits ``(B,)`` D gave its fakes.

    ``"saturating"``: ``E log(1 - D(G(z)))`` (minimised by G; flat when D rejects fakes).
    ``"nonsaturating"``: ``-E log D(G(z))``.
    ``"classification"``: ``-1/2 E D(G(z))`` (G raises D's error).
    """
    if kind == "saturating":
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind == "classification":
        return -0.5 * torch.sigmoid(fake_logits).mean()
    raise ValueError(f"kind must be 'saturating', 'nonsaturating' or 'classification', got {kind!r}")


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """``|| E f(x) - E f(G(z)) ||^2`` over a batch of features ``(B, F)``; real side is a target."""
    return (real_features.detach().mean(0) - fake_features.mean(0)).pow(2).sum()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """``E ||grad_x D(x)||^2`` on real data (multiply by ``gamma / 2``)."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@contextlib.contextmanager
def frozen(params: Iterable[torch.Tensor]) -> Iterator[None]:
    """Inside, ``params`` take no gradients (the graph still passes gradients through them to the
    inputs): the G step needs D's input gradients, not its weights' (the MLP GAN's step is about 13 %
    faster without them)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ---------------------------------------------------------------------------
# networks for 2-D points
# ---------------------------------------------------------------------------
class MLPDiscriminator(nn.Module):
    """``(B, pack * dim) -> logits (B,)``; ``features`` gives the last hidden layer ``(B, hidden)``."""

    def __init__(self, in_dim: int, hidden: int, depth: int):
        super().__init__()
        self.body = mlp([in_dim] + [hidden] * depth, lambda: nn.LeakyReLU(0.2))
        self.body.append(nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


class AdversarialModel(GenerativeModel):
    """What every GAN here shares: two optimizers, the alternating step, no validation score (but see GAN).

    Subclasses provide ``self.generator``, ``self.discriminator``,
    ``generate(z)`` and ``training_step``; ``critic(x)`` gives D's logits.
    """

    family = "GAN"
    fused_adam = False  # one kernel for all of an optimizer's tensors (see GAN)

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        # beta1 = 0.5 (Radford et al. 2016): less momentum keeps the two players from overshooting
        betas = (0.5, 0.999)
        fused = self.fused_adam or None
        self._updates = 0  # a new fit counts its steps again (lazy R1 penalises every r1_every-th D step)
        return [torch.optim.Adam(self.discriminator_parameters(), lr=lr, betas=betas, fused=fused),
                torch.optim.Adam(self.generator_param_groups(lr), lr=lr, betas=betas, fused=fused)]

    def generator_param_groups(self, lr: float) -> list[dict]:
        """The parameter groups of G's optimizer: one, at rate ``lr``, unless a subclass says otherwise."""
        return [{"params": list(self.generator_parameters())}]

    def discriminator_parameters(self):
        return self.discriminator.parameters()

    def generator_parameters(self):
        return self.generator.parameters()

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float | None:
        # no held-out loss says "better" for images (GAN scores 2-D points by a Parzen window); the
        # trainer keeps the last weights
        return None

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss on ``x`` and as many fakes (for monitoring only)."""
        with torch.no_grad():
            fake = self.generate(self.latent(len(x)))
        return discriminator_loss(self.critic(x), self.critic(fake))

    def data_spec(self, method: str = "loss") -> DataSpec:
        """Points for the 2-D GAN; images: levels when ``num_levels`` is set, else grey values in [0, 1].
        A conditional GAN trains on (images, labels) pairs; ``evaluate`` takes the images alone."""
        if "dim" in self.config:
            return DataSpec((self.config["dim"],), "real")
        levels = self.config.get("num_levels")
        kind = "unit" if levels is None else "levels"
        labels = self.config.get("num_classes") if method in ("loss", "training_step") else None
        return DataSpec(tuple(self.config["shape"]), kind, levels, labels=labels)

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits ``(B,)`` on a batch of data."""
        return self.discriminator(x)

    def latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config["latent_dim"], device=self.device)


class _Sampler(nn.Module):
    """The part of a GAN that sampling uses: G, and the latent mixture's means and log-scales if it has one
    (shared with the GAN, not copies); what the GAN's weight average averages."""

    def __init__(self, generator: nn.Module, latent_means: nn.Parameter | None,
                 latent_log_scales: nn.Parameter | None) -> None:
        super().__init__()
        self.generator = generator
        if latent_means is not None:
            self.latent_means, self.latent_log_scales = latent_means, latent_log_scales


class GAN(AdversarialModel):
    """A GAN of MLPs for 2-D points (the toy sets; PacGAN's ``ring-sharp``/``grid-sharp``).

    Args:
        dim: data dimension (2).
        latent_dim: size of ``z``.
        hidden, depth: width and number of hidden layers of both networks.
        loss: the generator's objective, one of :data:`GENERATOR_LOSSES`.
        pack: PacGAN degree: D sees ``pack`` samples concatenated (1 = plain GAN).
        r1: weight ``gamma`` of the R1 gradient penalty on real data (0 = off).
        r1_every: lazy R1 (Karras et al. 2020): the penalty is computed on every
            ``r1_every``-th D step only, weighted ``r1_every`` times as much. Its
            double backward costs a third of a step; at 4 the run is about a
            sixth faster and the average pull on D is unchanged.
        r1_follows_lr: the R1 weight falls with the learning rates (the same factor
            of ``lr_schedule``). R1 keeps D flat on the real
            points, which steadies the early game but leaves little force on fakes
            a few widths from a mode; fading it as the rates fall lets D sharpen
            around the modes in the last phase, and G's samples follow.
        d_steps: discriminator updates per generator update.
        latent_components: ``K > 0`` draws ``z`` from a learned mixture of
            ``K`` Gaussians (DeLiGAN, Gurumurthy et al. 2017) instead of one
            ``N(0, I)``: G no longer has to tear one connected blob of noise
            into separate modes, so fewer samples land between them.
        latent_lr: the mixture's means and scales learn at ``latent_lr`` times
            G's rate (their own optimizer group). Each component has to travel
            to a mode and shrink to its width while G's weights settle; at the
            same rate as G too many of them stay wide or between modes.
        lr_schedule: both learning rates over the run (the trainer applies it,
            :func:`dgm.base.lr_schedule_factor`): ``"cosine"`` falls to 0 at the
            run's end, as :class:`dgm.diffusion.DDPM` on points does; a long run
            at a high rate can end in a collapse, one that ends at rate 0 settles.
        ema: generator weight averaging (Yazici et al. 2019): ``0`` = off;
            ``beta`` in ``(0, 1)`` keeps an exponential moving average of G's
            weights (and the latent mixture's), ``avg <- beta avg + (1 - beta) w``
            after every G step, and ``sample`` uses the average. ``beta`` ramps up
            as ``min(ema, (1 + t) / (10 + t))`` after ``t`` updates
            (:class:`dgm.base.WeightAverage` with ``warmup``), so the random
            start is forgotten; over a run of a few thousand steps the ramp, not
            ``ema``, sets it, and the average weighs mostly the last fifth. The raw G
            jitters around the equilibrium as the two players chase each
            other; the average sits near its centre, so samples land on the
            modes instead of beside them.
    """

    # small MLPs: a step's time is mostly per-tensor overhead, and the fused update is 20 % faster
    fused_adam = True

    def __init__(self, dim: int = 2, latent_dim: int = 2, hidden: int = 256, depth: int = 3,
                 loss: str = "nonsaturating", pack: int = 2, r1: float = 0.0, d_steps: int = 1,
                 latent_components: int = 0, ema: float = 0.0, latent_scale: float = 0.2,
                 lr_schedule: str = "constant", latent_lr: float = 1.0, r1_every: int = 1,
                 r1_follows_lr: bool = False):
        super().__init__()
        for name, value in (("dim", dim), ("latent_dim", latent_dim), ("hidden", hidden), ("depth", depth),
                            ("pack", pack), ("d_steps", d_steps), ("r1_every", r1_every)):
            check_positive_int(name, value)
        if loss not in GENERATOR_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(GENERATOR_LOSSES)}, got {loss!r}")
        if r1 < 0:
            raise ValueError(f"r1 (gradient penalty weight) must be >= 0, got {r1}")
        self.lr_schedule = check_lr_schedule(lr_schedule)
        if not latent_scale > 0:
            raise ValueError(f"latent_scale (initial std of the latent mixture's components) must be > 0, got {latent_scale}")
        if not isinstance(r1_follows_lr, bool):
            raise ValueError(f"r1_follows_lr must be True or False, got {r1_follows_lr!r}")
        if not latent_lr > 0:
            raise ValueError(f"latent_lr (the latent mixture's learning rate, as a multiple of G's) must be > 0, got {latent_lr}")
        if not 0 <= ema < 1:
            raise ValueError(f"ema (weight-averaging decay) must be in [0, 1), e.g. 0.999; 0 = off; got {ema}")
        if isinstance(latent_components, bool) or not isinstance(latent_components, int) or latent_components < 0:
            raise ValueError(f"latent_components must be an integer >= 0 (0 = one Gaussian), got {latent_components!r}")
        if latent_components:
            # DeLiGAN's initialisation: means uniform in [-1, 1], scales latent_scale (0.2); both trained with G
            self.latent_means = nn.Parameter(torch.rand(latent_components, latent_dim) * 2 - 1)
            self.latent_log_scales = nn.Parameter(torch.full((latent_components, latent_dim), math.log(latent_scale)))
        self.generator = mlp([latent_dim] + [hidden] * depth + [dim])
        self.discriminator = MLPDiscriminator(dim * pack, hidden, depth)
        # both networks work in standardised units; initialize() sets these from the training data
        self.register_buffer("data_mean", torch.zeros(dim))
        self.register_buffer("data_scale", torch.ones(()))
        if loss == "denoising":
            # a denoising autoencoder on D's features: r(f + noise) ~ f
            self.denoiser = mlp([hidden, hidden, hidden])
        # what sampling uses: G and its latent mixture. A view, not a registered submodule (its weights are
        # saved once, as GAN's own); the weight average keeps a copy of it, and sample() reads that copy
        self.__dict__["sampler"] = _Sampler(self.generator, getattr(self, "latent_means", None),
                                            getattr(self, "latent_log_scales", None))
        if ema:
            self.ema = WeightAverage(self.sampler, ema, warmup=True)

    def generator_parameters(self):
        params = list(self.generator.parameters())
        if self.config["latent_components"]:
            params += [self.latent_means, self.latent_log_scales]
        return params

    def latent(self, n: int, sampler: "_Sampler | None" = None) -> torch.Tensor:
        """G's input ``(n, latent_dim)``: standard normal noise, or the learned mixture's."""
        sampler = sampler or self.sampler
        z = torch.randn(n, self.config["latent_dim"], device=self.device)
        if self.config["latent_components"]:
            k = torch.randint(self.config["latent_components"], (n,), device=self.device)
            z = sampler.latent_means[k] + sampler.latent_log_scales[k].exp() * z
        return z

    def generator_param_groups(self, lr: float) -> list[dict]:
        if not self.config["latent_components"]:
            return super().generator_param_groups(lr)
        # the mixture's own rate: its means and scales must travel to the modes and shrink while G's
        # weights settle (3x: data/tuning.md)
        return [{"params": list(self.generator.parameters())},
                {"params": [self.latent_means, self.latent_log_scales], "lr": lr * self.config["latent_lr"]}]

    # Parzen bandwidths tried, in units of the data's spread: factors of 2 from 1/256 to 1/2
    parzen_bandwidths = tuple(2.0 ** -k for k in range(8, 0, -1))
    parzen_samples = 1000

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        """NLL (nats per point) of held-out points ``(B, dim)`` under a Parzen window of ``sample``'s points.

        A GAN has no likelihood, but a kernel density estimate of its samples has one
        (Goodfellow et al. 2014 scored GANs this way; Theis et al. 2016 show why it misleads for
        images, not for 2-D points): a mode G dropped leaves its held-out points far from every
        sample, and samples between the modes take density away from them. The bandwidth is the
        best of :attr:`parzen_bandwidths` for these points, and the same latent draws are used at
        every evaluation (without touching training's random stream), so the trainer can keep the
        best weights of a run: a late collapse costs nothing.
        """
        if x.ndim != 2 or x.shape[1] != self.config["dim"]:
            raise ValueError(f"GAN expects points of shape (batch, {self.config['dim']}), got {tuple(x.shape)}")
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            samples = self.sample(self.parzen_samples)
        scale = self.data_scale
        sq_dist = torch.cdist((x - self.data_mean) / scale, (samples - self.data_mean) / scale).pow(2)  # (B, S)
        nearest = sq_dist.min(1, keepdim=True).values
        dim = x.shape[1]
        best = -math.inf
        for h in self.parzen_bandwidths:
            # log of the kernel average, by hand: relative to the nearest sample, exponents clamped at -80
            # (exp(-80) adds nothing to the sum; farther ones would be denormal floats, about 7x slower)
            log_kernels = ((nearest - sq_dist) / (2 * h * h)).clamp_(min=-80.0)
            log_density = (log_kernels.exp().sum(1).log() - nearest[:, 0] / (2 * h * h)
                           - math.log(len(samples)) - 0.5 * dim * math.log(2 * math.pi * h * h))  # (B,)
            best = max(best, float(log_density.mean()))
        return -best + dim * math.log(float(scale))  # standardised units back to the data's

    def discriminator_parameters(self):
        params = list(self.discriminator.parameters())
        if self.config["loss"] == "denoising":
            params += list(self.denoiser.parameters())
        return params

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Standardise: G's outputs and D's inputs are in units of the data's spread."""
        self.data_mean.copy_(x_train.mean(0))
        self.data_scale.copy_(x_train.std(0).mean())

    def generate(self, z: torch.Tensor, sampler: "_Sampler | None" = None) -> torch.Tensor:
        """``(n, latent_dim) -> (n, dim)`` in data units."""
        return (sampler or self.sampler).generator(z) * self.data_scale + self.data_mean

    @torch.no_grad()
    def sample(self, n: int, averaged: bool = True) -> torch.Tensor:
        """``n`` points ``(n, dim)``; with ``ema > 0`` from the averaged generator unless ``averaged=False``."""
        check_positive_int("n", n)
        sampler = self.ema.module if averaged and self.config["ema"] else self.sampler
        return self.generate(self.latent(n, sampler), sampler)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim) -> (B // pack, pack * dim)``: D's input (standardised), ``pack`` samples per row."""
        x = (x - self.data_mean) / self.data_scale
        pack = self.config["pack"]
        usable = len(x) - len(x) % pack
        return x[:usable].reshape(usable // pack, pack * x.shape[1])

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits on a batch of points ``(B, dim) -> (B // pack,)``."""
        return self.discriminator(self.packed(x))

    def training_step(self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        if x.ndim != 2 or x.shape[1] != self.config["dim"]:
            raise ValueError(f"GAN expects points of shape (batch, {self.config['dim']}), got {tuple(x.shape)}")
        if len(x) < 2 * self.config["pack"]:
            raise ValueError(f"batch of {len(x)} is too small for pack={self.config['pack']}; use a larger batch")
        opt_d, opt_g = optimizers
        step = getattr(self, "_updates", 0)
        self._updates = step + 1
        rate_factor = opt_d.param_groups[0].get("lr_factor", 1.0)  # the trainer's schedule, now
        r1 = self.config["r1"] * (rate_factor if self.config["r1_follows_lr"] else 1.0)
        loss_name = self.config["loss"]
        game = "classification" if loss_name == "classification" else "log"
        for d_step in range(self.config["d_steps"]):
            with torch.no_grad():  # the D step must not push gradients into G (and builds no graph for it)
                fake = self.generate(self.latent(len(x)))
            d_loss = discriminator_loss(self.critic(x), self.critic(fake), game)
            r1_every = self.config["r1_every"]
            if r1 > 0 and (step * self.config["d_steps"] + d_step) % r1_every == 0:
                # lazy regularisation (Karras et al. 2020): the penalty's double backward is a third of a
                # step's time; every r1_every-th D step, r1_every times as heavy, keeps its average pull
                penalty = r1_penalty(self.discriminator, self.packed(x))
                d_loss = d_loss + 0.5 * r1 * r1_every * penalty
            if loss_name == "denoising":
                real_feat = self.discriminator.features(self.packed(x)).detach()
                noisy = real_feat + torch.randn_like(real_feat)
                d_loss = d_loss + (self.denoiser(noisy) - real_feat).pow(2).sum(1).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

        with frozen(self.discriminator_parameters()):
            g_loss = self._generator_loss(x)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if self.config["ema"]:
            self.ema.update_parameters(self.sampler)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def _generator_loss(self, x: torch.Tensor) -> torch.Tensor:
        """G's loss on a fresh batch of fakes (against the real batch ``x`` for feature matching)."""
        loss_name = self.config["loss"]
        fake = self.generate(self.latent(len(x)))
        if loss_name == "feature_matching":
            g_loss = feature_matching_loss(self.discriminator.features(self.packed(x)),
                                           self.discriminator.features(self.packed(fake)))
        elif loss_name == "denoising":
            feat = self.discriminator.features(self.packed(fake))
            target = self.denoiser(feat).detach()  # where the denoiser says real features lie
            g_loss = (generator_loss(self.discriminator.head(feat).squeeze(-1), "nonsaturating")
                      + (feat - target).pow(2).sum(1).mean() / feat.shape[1])
        else:
            g_loss = generator_loss(self.critic(fake), loss_name)
        return g_loss


# ---------------------------------------------------------------------------
# images: DCGAN, conditional GAN
# ---------------------------------------------------------------------------
def _check_image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2] or shape[1] % 4:
        raise ValueError(f"expected one-channel square images with a side divisible by 4 "
                         f"(e.g. (1, 28, 28) or (1, 8, 8)), got shape {shape}")
    return shape  # type: ignore[return-value]


class ConvGenerator(nn.Module):
    """DCGAN generator: ``z (B, latent + extra) -> (B, 1, H, W)`` in ``[0, 1]``.

    A linear layer makes a ``(2C, H/4, W/4)`` map; two stride-2 transposed
    convolutions double it twice, with batch norm and ReLU between (Radford et al. 2016).
    """

    def __init__(self, in_dim: int, side: int, channels: int):
        super().__init__()
        self.start = side // 4
        self.project = nn.Sequential(nn.Linear(in_dim, 2 * channels * self.start**2),
                                     nn.BatchNorm1d(2 * channels * self.start**2), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(len(z), -1, self.start, self.start)
        return self.body(h)


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator: ``(B, 1 + extra, H, W) -> logits (B,)``; strided convolutions, LeakyReLU."""

    def __init__(self, in_channels: int, side: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


class DCGAN(AdversarialModel):
    """Convolutional GAN for one-channel images (MNIST-5k, or 8x8 digits).

    Args:
        shape: ``(1, H, W)`` with ``H`` divisible by 4.
        num_levels: ``None`` for grey images in ``[0, 1]``; ``L`` for integer
            levels ``0..L-1`` (digits): the networks see ``x / (L - 1)`` and
            ``sample`` rounds back to int64 levels.
        latent_dim: size of ``z``; channels: width of the networks.
        loss: the generator's objective (``"nonsaturating"`` or ``"saturating"``, ``"classification"``).
    """

    def __init__(self, shape: tuple[int, ...] = (1, 28, 28), num_levels: int | None = None,
                 latent_dim: int = 64, channels: int = 32, loss: str = "nonsaturating"):
        super().__init__()
        shape = _check_image_shape(shape)
        check_positive_int("latent_dim", latent_dim)
        check_positive_int("channels", channels)
        if loss not in ("classification", "saturating", "nonsaturating"):
            raise ValueError(f"loss must be 'nonsaturating', 'saturating' or 'classification', got {loss!r}")
        if num_levels is not None and num_levels < 2:
            raise ValueError(f"num_levels must be None (grey images) or >= 2, got {num_levels}")
        self.generator = ConvGenerator(latent_dim + self.label_dim, shape[1], channels)
        self.discriminator = ConvDiscriminator(1 + self.label_dim, shape[1], channels)

    label_dim = 0  # one-hot size fed to both networks (conditional subclass)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Data -> the networks' ``[0, 1]`` scale."""
        levels = self.config["num_levels"]
        return x.float() if levels is None else x.float() / (levels - 1)

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` -> the data's own format (levels are rounded)."""
        levels = self.config["num_levels"]
        return x if levels is None else torch.round(x * (levels - 1)).long()

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, latent_dim) -> (n, 1, H, W)`` on the ``[0, 1]`` scale."""
        return self.generator(z)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` images ``(n, 1, H, W)`` in the data's format (grey in [0, 1], or levels)."""
        check_positive_int("n", n)
        return self.sample_from(self.latent(n))

    @torch.no_grad()
    def sample_from(self, z: torch.Tensor) -> torch.Tensor:
        """Images for given latent vectors ``z (n, latent_dim)`` (e.g. a latent walk), in the data's format."""
        if z.ndim != 2 or z.shape[1] != self.config["latent_dim"]:
            raise ValueError(f"z must have shape (n, {self.config['latent_dim']}), got {tuple(z.shape)}")
        return self.from_unit(self.generate(z.to(self.device)))

    def check_batch(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.config["shape"]):
            raise ValueError(f"{type(self).__name__} expects images of shape (batch, {', '.join(map(str, self.config['shape']))}), "
                             f"got {tuple(x.shape)}")
        return self.to_unit(x)

    def adversarial_step(self, real: torch.Tensor, fake_fn, critic, optimizers,
                         auxiliary_loss=None, auxiliary_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """One D update and one G update; ``fake_fn()`` draws fakes, ``critic(images)`` gives logits.

        ``auxiliary_loss(images)``, if given, is a second loss both players minimise, each times
        ``auxiliary_weight`` (AC-GAN's classifier): D on real images only, so fakes cannot teach
        it their mistakes, G on its fakes. Its values are logged as ``aux_real`` and ``aux_fake``.
        """
        opt_d, opt_g = optimizers
        game = "classification" if self.config["loss"] == "classification" else "log"
        fake = fake_fn()
        logs = {}
        if auxiliary_loss is not None:
            logs["aux_real"] = auxiliary_loss(real)
        d_loss = discriminator_loss(critic(real), critic(fake.detach()), game)
        if auxiliary_loss is not None:
            d_loss = d_loss + auxiliary_weight * logs["aux_real"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # G's step needs D's input gradients, not its weights' (runs 7-11 % faster, bit-identical weights)
        with frozen(self.discriminator_parameters()):
            if auxiliary_loss is not None:
                logs["aux_fake"] = auxiliary_loss(fake)
            g_loss = generator_loss(critic(fake), self.config["loss"])
        if auxiliary_loss is not None:
            g_loss = g_loss + auxiliary_weight * logs["aux_fake"]
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **{k: v.detach() for k, v in logs.items()}}

    def training_step(self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        real = self.check_batch(x)
        return self.adversarial_step(real, lambda: self.generate(self.latent(len(real))), self.discriminator,
                                     optimizers)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        real = self.check_batch(x)
        with torch.no_grad():
            fake = self.generate(self.latent(len(x)))
        return discriminator_loss(self.discriminator(real), self.discriminator(fake))


class ConditionalGAN(DCGAN):
    """DCGAN with the class label as a one-hot vector into both networks (Mirza & Osindero 2014).

    G gets ``[z, onehot(y)]``; D gets the image plus ``num_classes`` constant
    channels holding ``onehot(y)``, so it judges "is this a real image *of
    digit y*". Train on ``(x, y)`` pairs; ``sample(n, labels)`` draws the
    requested digits (default: ``0, 1, ..., 9, 0, 1, ...``).

    ``aux_weight > 0`` adds the auxiliary classifier of AC-GAN (Odena et al.
    2017): a classifier on the discriminator's side learns the digit of real
    images (cross-entropy, weight ``aux_weight``), and G is also trained to
    make fakes that it classifies as the requested digit. The plain
    conditional D only has to notice a wrong label *somewhere* in the image;
    the auxiliary loss tells G directly which digit the image shows.
    """

    def __init__(self, shape: tuple[int, ...] = (1, 28, 28), num_levels: int | None = None,
                 latent_dim: int = 64, channels: int = 32, loss: str = "nonsaturating", num_classes: int = 10,
                 aux_weight: float = 0.0):
        check_positive_int("num_classes", num_classes)
        if not aux_weight >= 0:
            raise ValueError(f"aux_weight (AC-GAN classifier loss weight) must be >= 0 (0 = off), got {aux_weight}")
        self.label_dim = num_classes  # read by DCGAN.__init__ to size both networks
        super().__init__(shape, num_levels, latent_dim, channels, loss)
        if aux_weight:
            side = self.config["shape"][1]
            # the same architecture as D, but it sees the image only and outputs one logit per class
            self.auxiliary = ConvDiscriminator(1, side, channels)
            self.auxiliary.head = nn.Linear(self.auxiliary.head.in_features, num_classes)

    def discriminator_parameters(self):
        params = list(self.discriminator.parameters())
        if self.config["aux_weight"]:
            params += list(self.auxiliary.parameters())
        return params

    def class_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The auxiliary classifier: images ``(B, 1, H, W)`` in ``[0, 1]`` -> logits ``(B, num_classes)``."""
        if not self.config["aux_weight"]:
            raise ValueError("this ConditionalGAN has no auxiliary classifier: build it with aux_weight > 0")
        return self.auxiliary.head(self.auxiliary.features(images))

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    def onehot(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} and {labels.dtype}")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        return F.one_hot(labels.long(), self.num_classes).float()

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, latent_dim)``, labels ``(n,)`` -> images ``(n, 1, H, W)`` on the ``[0, 1]`` scale."""
        if labels is None:
            labels = torch.arange(len(z), device=z.device) % self.num_classes
        return self.generator(torch.cat([z, self.onehot(labels)], 1))

    def critic(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        side = images.shape[-1]
        planes = self.onehot(labels)[:, :, None, None].expand(-1, -1, side, side)
        return self.discriminator(torch.cat([images, planes], 1))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images of the requested ``labels`` ``(n,)``; default cycles through the classes."""
        check_positive_int("n", n)
        if labels is None:
            labels = torch.arange(n, device=self.device) % self.num_classes
        if len(labels) != n:
            raise ValueError(f"give one label per sample: n={n} but {len(labels)} labels")
        return self.from_unit(self.generate(self.latent(n), labels.to(self.device)))

    def training_step(self, batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        if not isinstance(batch, (tuple, list)):
            raise ValueError("ConditionalGAN trains on (images, labels) pairs: fit(model, (x, y), ...)")
        x, y = batch
        real = self.check_batch(x)
        # fakes get the real batch's labels, so D cannot tell them apart by the label histogram
        weight = self.config["aux_weight"]
        classifier_loss = (lambda images: F.cross_entropy(self.class_logits(images), y)) if weight else None
        return self.adversarial_step(real, lambda: self.generate(self.latent(len(real)), y),
                                     lambda images: self.critic(images, y), optimizers, classifier_loss, weight)

    def loss(self, batch) -> torch.Tensor:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if y is None:
            raise ValueError("ConditionalGAN.loss needs an (images, labels) pair")
        real = self.check_batch(x)
        with torch.no_grad():
            fake = self.generate(self.latent(len(x)), y)
        return discriminator_loss(self.critic(real, y), self.critic(fake, y))


# ---------------------------------------------------------------------------
# CycleGAN: unpaired translation between thin and bold digits
# ---------------------------------------------------------------------------
def embolden(x: torch.Tensor) -> torch.Tensor:
    """Domain B of the CycleGAN task: strokes thickened by a 3x3 max filter, ``(B, 1, H, W)``."""
    return F.max_pool2d(x, 3, stride=1, padding=1)


class Translator(nn.Module):
    """An image-to-image network ``(B, 1, H, W) -> (B, 1, H, W)`` in ``[0, 1]``: the input plus a learned
    change in ``[-1, 1]`` (size-preserving convolutions, tanh), clamped to ``[0, 1]``.

    Residual, like CycleGAN's ResNet generators: it starts near the identity, so the cycle loss
    starts small and each generator only learns the *difference* between the styles. A plain
    convolutional net ending in a sigmoid let ``G_BA`` collapse to all-black images (data/tuning.md),
    a state the cycle loss cannot leave because the saturated sigmoid passes no gradient.
    """

    def __init__(self, channels: int):
        super().__init__()
        check_positive_int("channels", channels)
        self.change = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 1, 3, padding=1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.change(x)).clamp(0, 1)


class CycleGAN(AdversarialModel):
    """CycleGAN (Zhu et al. 2017) on an unpaired task: thin MNIST-5k digits (A) <-> bold ones (B).

    Every training batch is split in two: the first half are A images, the
    second half are *other* images made bold (:func:`embolden`), so no pair
    ``(a, embolden(a))`` is ever shown. Two generators ``G_AB``, ``G_BA``
    and two discriminators are trained with the adversarial loss in each
    domain plus the cycle-consistency loss
    ``|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1`` (weight ``cycle_weight``).

    A CycleGAN has no noise input: :meth:`translate` is its real API.
    ``sample(n)`` returns the first ``n`` test digits (repeated past 500) made
    bold and translated back to thin by ``G_BA`` (the data's own format, so the book's image
    metrics apply); ``evaluate`` scores ``G_AB`` against the true bold images,
    which the model never saw paired.
    """

    def __init__(self, shape: tuple[int, ...] = (1, 28, 28), channels: int = 16, disc_channels: int = 16,
                 cycle_weight: float = 10.0):
        super().__init__()
        shape = _check_image_shape(shape)
        check_positive_int("channels", channels)
        check_positive_int("disc_channels", disc_channels)
        if cycle_weight < 0:
            raise ValueError(f"cycle_weight must be >= 0, got {cycle_weight}")
        self.generator = nn.ModuleDict({"ab": Translator(channels), "ba": Translator(channels)})
        self.discriminator = nn.ModuleDict({"a": ConvDiscriminator(1, shape[1], disc_channels),
                                            "b": ConvDiscriminator(1, shape[1], disc_channels)})

    def translate(self, x: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        """Map images ``(B, 1, H, W)`` from A to B (``"ab"``, thin -> bold) or back (``"ba"``)."""
        if direction not in ("ab", "ba"):
            raise ValueError(f"direction must be 'ab' (thin -> bold) or 'ba' (bold -> thin), got {direction!r}")
        return self.generator[direction](x)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        from . import data

        check_positive_int("n", n)
        test = data.load("mnist5k", "test").x
        images = test[torch.arange(n) % len(test)].to(self.device)  # cycles through the 500 test digits
        return self.translate(embolden(images), "ba")

    def training_step(self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        if tuple(x.shape[1:]) != tuple(self.config["shape"]) or len(x) < 2:
            raise ValueError(f"CycleGAN expects a batch of at least 2 images shaped (batch, {self.config['shape']}), "
                             f"got {tuple(x.shape)}")
        opt_d, opt_g = optimizers
        half = len(x) // 2
        real_a, real_b = x[:half], embolden(x[half: 2 * half])  # different images: unpaired
        fake_b, fake_a = self.translate(real_a, "ab"), self.translate(real_b, "ba")

        d_a, d_b = self.discriminator["a"], self.discriminator["b"]
        d_loss = (discriminator_loss(d_a(real_a), d_a(fake_a.detach()))
                  + discriminator_loss(d_b(real_b), d_b(fake_b.detach())))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        cycle = ((self.translate(fake_b, "ba") - real_a).abs().mean()
                 + (self.translate(fake_a, "ab") - real_b).abs().mean())
        with frozen(self.discriminator_parameters()):
            adversarial = generator_loss(d_b(fake_b)) + generator_loss(d_a(fake_a))
        g_loss = adversarial + self.config["cycle_weight"] * cycle
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.detach(), "g_loss": adversarial.detach(), "cycle_l1": cycle.detach()}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return (self.translate(self.translate(x, "ab"), "ba") - x).abs().mean()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """Mean absolute pixel errors on thin test images ``x (N, 1, H, W)``.

        ``translation_l1``: ``|G_AB(x) - embolden(x)|`` (the true bold version, never
        shown paired); ``identity_l1``: the same error for doing nothing (``|x - embolden(x)|``),
        the baseline to beat; ``cycle_l1``: ``|G_BA(G_AB(x)) - x|``.
        """
        bold = embolden(x)
        translated = self.translate(x, "ab")
        return {"translation_l1": float((translated - bold).abs().mean()),
                "identity_l1": float((x - bold).abs().mean()),
                "cycle_l1": float((self.translate(translated, "ba") - x).abs().mean())}
