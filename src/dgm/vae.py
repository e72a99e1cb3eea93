"""Chapter 3's models: a deterministic autoencoder and the variational autoencoder.

Both squeeze an image ``x`` through a small code ``z`` and back, with an
encoder and a decoder that are multilayer perceptrons. They differ in what
the code *is*:

* :class:`Autoencoder`  ``z = encoder(x)``, one point; trained to reconstruct
  ``x``. It learns a useful embedding (a manifold), but it has no
  distribution over codes, so "decode a random code" is not a generative
  model: most codes decode to nonsense.
* :class:`VAE`          ``q(z | x) = N(mu(x), diag(exp(logvar(x))))``, a
  distribution; the decoder defines ``p(x | z)`` and the prior is
  ``p(z) = N(0, I)``. Training maximises the evidence lower bound

      ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x),

  estimated with one reparameterised sample ``z = mu + sigma * eps``
  (:func:`reparameterize`) and the closed-form KL (:func:`kl_to_standard_normal`).
  :meth:`VAE.iwae_bound` tightens the bound with ``k`` importance samples and
  :meth:`VAE.log_prob` uses it (``k = 1000``) as the estimate of ``log p(x)``.

The decoder's output distribution (``likelihood``) matches the data:

========================  ===============================================  ==================
``likelihood``            ``p(x | z)`` per pixel                            data
========================  ===============================================  ==================
``"categorical"``         softmax over ``num_levels`` grey levels           ``digits`` (17)
``"bernoulli"``           one logit per pixel                               ``mnist5k-bin``
``"gaussian"``            ``N(mean, sigma^2)``, one learned sigma           ``mnist5k`` (blur)
``"logistic"``            logistic discretized to the ``num_levels``        ``digits`` (default),
                          levels (256 for grey values k / 255), per-pixel   ``mnist5k`` (sharp)
                          mean and scale (PixelCNN++'s likelihood)
========================  ===============================================  ==================

On digits the discretized logistic is the default: it uses the order of the
grey levels, and on 1000 training images it generalises much better than a
free softmax per pixel (validation -ELBO about 95 against about 101 nats in
our tuning runs).

Shapes: images ``(N, *shape)``, ``D = prod(shape)`` pixels; codes ``(N, latent_dim)``;
decoder outputs ``(N, D, P)`` with ``P`` numbers per pixel (``num_levels``
logits, or mean and log-scale). All log-probabilities are in nats per
example, shape ``(N,)``. The gaussian likelihood is a *density* on the
continuous pixel values (it accepts any real numbers), the others are
probabilities of discrete values.

The constructors' defaults are the settings tuned on the ``digits``
validation split (``python -m dgm train vae --data digits`` uses them).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import DataSpec, GenerativeModel, check_levels, check_positive_int, gaussian_kl, mlp

LIKELIHOODS = ("categorical", "bernoulli", "gaussian", "logistic")
#: grey images in [0, 1] are stored as k / 255: the discretized logistic has 256 bins
GREY_LEVELS = 256
#: smallest scale of the gaussian and logistic likelihoods, so a constant pixel
#: (the black border of MNIST) cannot drive the density to infinity
MIN_LOG_SCALE = math.log(1e-3)


# ---------------------------------------------------------------------------
# the three formulas of the chapter
# ---------------------------------------------------------------------------
def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """A sample of ``N(mu, diag(exp(logvar)))`` as a differentiable function of ``mu``, ``logvar``.

    ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``: the randomness
    sits in ``eps``, which does not depend on the parameters, so gradients flow
    from ``z`` back into the encoder. ``mu``, ``logvar``: ``(..., latent_dim)``.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` in nats, summed over the last dim.

    Closed form: ``1/2 * sum(mu^2 + exp(logvar) - logvar - 1)``, :func:`dgm.base.gaussian_kl` with the
    second Gaussian the prior. ``mu``, ``logvar``: ``(batch, latent_dim)`` -> ``(batch,)``.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last dim (broadcasting)."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


# ---------------------------------------------------------------------------
# decoder likelihoods p(x | z), one per kind of data
# ---------------------------------------------------------------------------
def _discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                   num_bins: int = GREY_LEVELS) -> torch.Tensor:
    """Elementwise log-probability of ``x = k / (num_bins - 1)`` under a logistic discretized to its bin.

    The edge bins take the tails, so the probabilities of the ``num_bins``
    values sum to one. Where a bin's probability is too small to subtract
    two CDFs accurately, the density at the centre times the bin width is used.
    """
    half_bin = 0.5 / (num_bins - 1)
    inv_scale = torch.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_scale
    lower = (x - mean - half_bin) * inv_scale
    log_cdf_upper = F.logsigmoid(upper)             # log P(X <= upper edge), for the lowest bin
    log_sf_lower = F.logsigmoid(-lower)             # log P(X > lower edge), for the highest bin
    prob = torch.sigmoid(upper) - torch.sigmoid(lower)
    centre = (x - mean) * inv_scale
    log_density_centre = centre - log_scale - 2.0 * F.softplus(centre) + math.log(2 * half_bin)
    middle = torch.where(prob > 1e-5, torch.log(prob.clamp_min(1e-12)), log_density_centre)
    return torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_sf_lower, middle))


class PixelLikelihood(nn.Module):
    """The decoder's output distribution ``p(x | z)``, independent across pixels.

    ``params`` (the decoder's output) is ``(N, D, P)``; ``x`` is data shaped
    ``(N, *shape)``. Holds the one learned parameter of the gaussian kind
    (``log_sigma``, shared by all pixels).
    """

    def __init__(self, kind: str, num_levels: int | None = None):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {kind!r}")
        if kind == "categorical" and (num_levels is None or num_levels < 2):
            raise ValueError("the categorical likelihood needs num_levels >= 2 (17 for digits)")
        self.kind = kind
        # the logistic models integer levels 0..num_levels-1 (digits), or grey values k / 255 when num_levels is None
        self.integer_data = kind in ("categorical", "bernoulli") or (kind == "logistic" and num_levels is not None)
        self.num_levels = {"categorical": num_levels, "bernoulli": 2, "logistic": num_levels or GREY_LEVELS}.get(kind)
        self.params_per_pixel = {"categorical": num_levels, "bernoulli": 1, "gaussian": 1, "logistic": 2}[kind]
        if kind == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(math.log(0.2)))

    @property
    def unit_scale(self) -> float:
        """What the data (and :meth:`mean`) are divided by to lie in [0, 1]: ``num_levels - 1`` for levels."""
        return self.num_levels - 1 if self.integer_data and self.kind != "bernoulli" else 1.0

    def check(self, x: torch.Tensor, shape: tuple[int, ...], who: str) -> torch.Tensor:
        """Validate a data batch; returns int64 levels (discrete kinds) or floats (gaussian, logistic)."""
        if self.integer_data:
            return check_levels(x, shape, self.num_levels, who)
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != tuple(shape):
            got = tuple(x.shape[1:]) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{who} expects a float tensor of examples shaped (N, {', '.join(map(str, shape))}), "
                             f"got {got}")
        if not x.is_floating_point():
            raise ValueError(f"{who} with the {self.kind} likelihood expects float pixel values, got {x.dtype}")
        if self.kind == "logistic" and x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("the discretized logistic expects grey values in [0, 1] (k / 255), "
                             f"got min {float(x.min()):.3g} and max {float(x.max()):.3g}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input: ``(N, D)`` floats, levels scaled to ``[0, 1]``."""
        flat = x.flatten(1)
        if self.integer_data:
            return flat.float() / (self.num_levels - 1)
        return flat

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` summed over pixels: params ``(..., D, P)``, x ``(..., D)`` -> ``(...)``."""
        x = x.expand(params.shape[:-1])  # several codes per example share one x
        if self.kind == "categorical":
            logp = torch.log_softmax(params, -1).gather(-1, x.long().unsqueeze(-1)).squeeze(-1)
        elif self.kind == "bernoulli":
            logp = -F.binary_cross_entropy_with_logits(params[..., 0], x.float(), reduction="none")
        elif self.kind == "gaussian":
            log_sigma = self.log_sigma.clamp_min(MIN_LOG_SCALE)
            logp = -0.5 * math.log(2 * math.pi) - log_sigma - 0.5 * ((x - params[..., 0]) * torch.exp(-log_sigma)).pow(2)
        else:
            mean, log_scale = params[..., 0], params[..., 1].clamp_min(MIN_LOG_SCALE)
            unit = x.float() / (self.num_levels - 1) if self.integer_data else x
            logp = _discretized_logistic_log_prob(unit, mean, log_scale, self.num_levels)
        return logp.sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """A typical value of each pixel ``(N, D)``: the mean (categorical, bernoulli, gaussian) or the
        median (logistic); in levels for integer data, on the [0, 1] scale otherwise."""
        if self.kind == "categorical":
            levels = torch.arange(self.num_levels, device=params.device, dtype=params.dtype)
            return torch.softmax(params, -1) @ levels
        if self.kind == "bernoulli":
            return torch.sigmoid(params[..., 0])
        if self.kind == "gaussian":
            return params[..., 0]
        # logistic: the centre clamped to the range, i.e. the median of the discretized distribution
        centre = params[..., 0].clamp(0, 1)
        return centre * (self.num_levels - 1) if self.integer_data else centre

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """Draw ``x ~ p(x | z)``: ``(N, D)``, int64 levels / 0-1 floats / grey floats."""
        if self.kind == "categorical":
            return torch.distributions.Categorical(logits=params).sample()
        if self.kind == "bernoulli":
            return torch.bernoulli(torch.sigmoid(params[..., 0]))
        if self.kind == "gaussian":
            sigma = self.log_sigma.clamp_min(MIN_LOG_SCALE).exp()
            return params[..., 0] + sigma * torch.randn_like(params[..., 0])
        mean, log_scale = params[..., 0], params[..., 1].clamp_min(MIN_LOG_SCALE)
        u = torch.rand_like(mean).clamp(1e-5, 1 - 1e-5)
        continuous = mean + log_scale.exp() * (torch.log(u) - torch.log1p(-u))  # inverse CDF of the logistic
        levels = (continuous.clamp(0, 1) * (self.num_levels - 1)).round()
        return levels.long() if self.integer_data else levels / (self.num_levels - 1)

    def initial_bias(self, x_train: torch.Tensor) -> torch.Tensor | None:
        """Decoder output bias ``(D, P)`` that makes every code decode to the independent-pixel fit.

        Starting there, the decoder only has to learn what the code adds.
        """
        flat = x_train.flatten(1)
        if self.kind == "categorical":
            counts = F.one_hot(flat.long(), self.num_levels).sum(0).float() + 1.0  # add-one smoothing
            return torch.log(counts / counts.sum(-1, keepdim=True))
        mean = self.features(x_train).mean(0).clamp(1e-3, 1 - 1e-3)
        if self.kind == "bernoulli":
            return torch.log(mean / (1 - mean)).unsqueeze(-1)
        if self.kind == "gaussian":
            return mean.unsqueeze(-1)
        return torch.stack([mean, torch.full_like(mean, math.log(0.1))], -1)


# ---------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------
def _check_config(shape: Sequence[int], likelihood: str, latent_dim: int, hidden: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be a tuple of positive sizes such as (1, 8, 8), got {shape}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    check_positive_int("latent_dim", latent_dim)
    for h in hidden:
        check_positive_int("each hidden size", h)
    return shape


class _EncoderDecoder(GenerativeModel):
    """What the autoencoder and the VAE share: an MLP encoder, an MLP decoder, a likelihood."""

    def __init__(self, shape: Sequence[int], likelihood: str, num_levels: int | None, latent_dim: int,
                 hidden: Sequence[int], code_outputs: int, dropout: float, weight_decay: float):
        super().__init__()
        self.shape = _check_config(shape, likelihood, latent_dim, hidden)
        self.dims = math.prod(self.shape)
        self.latent_dim = latent_dim
        self.likelihood = PixelLikelihood(likelihood, num_levels)
        hidden = tuple(int(h) for h in hidden)
        if not 0 <= dropout < 1 or not weight_decay >= 0:
            raise ValueError(f"need 0 <= dropout < 1 and weight_decay >= 0, got {dropout!r} and {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.encoder = mlp([self.dims, *hidden, code_outputs], dropout=dropout)
        self.decoder = mlp([latent_dim, *reversed(hidden), self.dims * self.likelihood.params_per_pixel], dropout=dropout)

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        # 1000 training images overfit fast: decoupled weight decay (AdamW) regularises
        return [torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=self.weight_decay)]

    def data_spec(self, method: str = "loss") -> DataSpec:
        if self.likelihood.kind == "bernoulli":
            return DataSpec(self.shape, "binary")
        if self.likelihood.integer_data:
            return DataSpec(self.shape, "levels", self.likelihood.num_levels)
        # a Gaussian decoder is a density on any real values; the continuous logistic needs [0, 1]
        return DataSpec(self.shape, "real" if self.likelihood.kind == "gaussian" else "unit")

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.check(x, self.shape, type(self).__name__)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output ``(..., D, P)``: the parameters of ``p(x | z)`` for codes ``z`` ``(..., latent_dim)``."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"codes must have latent_dim={self.latent_dim} entries in the last dim, "
                             f"got shape {tuple(z.shape)}")
        return self.decoder(z).unflatten(-1, (self.dims, self.likelihood.params_per_pixel))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The expected image for each code, shaped like the data ``(N, *shape)``
        (grey levels for categorical data, values in [0, 1] otherwise)."""
        return self.likelihood.mean(self.decode(z)).view(-1, *self.shape)

    def _as_data(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.view(-1, *self.shape)

    def initialize(self, x_train: torch.Tensor) -> None:
        bias = self.likelihood.initial_bias(self._check(x_train))
        with torch.no_grad():
            self.decoder[-1].bias.copy_(bias.flatten().to(self.decoder[-1].bias))


class Autoencoder(_EncoderDecoder):
    """A deterministic autoencoder: ``z = encoder(x)``, trained to reconstruct ``x``.

    The loss is the reconstruction's negative log-likelihood under the same
    decoder likelihoods as the VAE (cross-entropy for discrete pixels,
    squared error up to constants for the gaussian). ``sample(n)`` decodes
    codes drawn from ``N(0, I)``: there is no prior, so nothing says where the
    codes of real images lie; the chapter shows that this fails.
    """

    family = "autoencoder (not generative)"

    def __init__(self, shape: Sequence[int] = (1, 8, 8), likelihood: str = "logistic",
                 num_levels: int | None = 17, latent_dim: int = 16, hidden: Sequence[int] = (512,),
                 dropout: float = 0.3, weight_decay: float = 0.0):
        super().__init__(shape, likelihood, num_levels, latent_dim, hidden, latent_dim, dropout, weight_decay)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each image: ``(N, *shape) -> (N, latent_dim)``."""
        return self.encoder(self.likelihood.features(self._check(x)))

    def reconstruction_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | z = encoder(x))`` per example, ``(N,)``."""
        x = self._check(x)
        return self.likelihood.log_prob(self.decode(self.encode(x)), x.flatten(1))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self.reconstruction_log_prob(x).mean()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded mean of each image's code, shaped like ``x``."""
        return self.decode_mean(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        check_positive_int("n", n)
        z = torch.randn(n, self.latent_dim, device=self.device)
        return self._as_data(self.likelihood.sample(self.decode(z)))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
        """Reconstruction metrics only (an autoencoder has no likelihood):
        ``recon_nats`` (mean ``-log p(x | encoder(x))``) and ``recon_mse`` (on the [0, 1] scale)."""
        nats, sq = 0.0, 0.0
        scale = self.likelihood.unit_scale
        for chunk in torch.split(x, batch_size):
            nats += float(-self.reconstruction_log_prob(chunk).sum())
            sq += float(((self.reconstruct(chunk) - chunk.float()) / scale).pow(2).flatten(1).mean(1).sum())
        return {"recon_nats": nats / len(x), "recon_mse": sq / len(x)}


class VAE(_EncoderDecoder):
    """Variational autoencoder: Gaussian encoder ``q(z | x)``, prior ``N(0, I)``, decoder ``p(x | z)``.

    Args:
        shape: shape of one example, e.g. ``(1, 8, 8)``.
        likelihood: ``"categorical"``, ``"bernoulli"``, ``"gaussian"`` or ``"logistic"`` (see the module).
        num_levels: grey levels of categorical data (17 for digits).
        latent_dim: size of the code ``z``.
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        beta: weight of the KL term in the training loss (1 = the ELBO;
            ``beta > 1`` is the beta-VAE). Evaluation always uses ``beta = 1``.
    """

    family = "latent variable (VAE)"

    def __init__(self, shape: Sequence[int] = (1, 8, 8), likelihood: str = "logistic",
                 num_levels: int | None = 17, latent_dim: int = 16, hidden: Sequence[int] = (512,),
                 beta: float = 1.0, dropout: float = 0.3, weight_decay: float = 0.0):
        super().__init__(shape, likelihood, num_levels, latent_dim, hidden, 2 * latent_dim, dropout, weight_decay)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0 (1 for the ELBO), got {beta!r}")
        self.beta = float(beta)

    @property
    def has_exact_likelihood(self) -> bool:
        return False  # log_prob is an importance-sampled estimate

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | x)``: mean and log-variance, each ``(N, latent_dim)``."""
        mu, logvar = self.encoder(self.likelihood.features(self._check(x))).chunk(2, dim=-1)
        return mu, logvar

    def elbo(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ELBO and its two parts, each ``(N,)`` nats: ``(elbo, reconstruction, kl)``.

        ``reconstruction = E_q[log p(x | z)]`` (averaged over ``num_samples``
        reparameterised codes), ``kl = KL(q(z | x) || p(z))`` in closed form,
        ``elbo = reconstruction - kl``.
        """
        check_positive_int("num_samples", num_samples)
        x = self._check(x)
        mu, logvar = self.encode(x)
        z = reparameterize(mu.expand(num_samples, *mu.shape), logvar.expand(num_samples, *logvar.shape))
        reconstruction = self.likelihood.log_prob(self.decode(z), x.flatten(1)).mean(0)
        kl = kl_to_standard_normal(mu, logvar)
        return reconstruction - kl, reconstruction, kl

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``-(reconstruction - beta * kl)``."""
        _, reconstruction, kl = self.elbo(x)
        return -(reconstruction - self.beta * kl).mean()

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> float:
        """Mean ``-ELBO`` (beta = 1 whatever the training beta), from 4 samples per image."""
        return float(-self.elbo(x, num_samples=4)[0].mean())

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, k: int, proposal: str = "encoder",
                   max_elements: int = 2**24) -> torch.Tensor:
        """The importance-weighted bound ``log (1/k) sum_j p(x, z_j) / r(z_j)``, ``z_j ~ r``, per example ``(N,)``.

        ``proposal="encoder"``: ``r = q(z | x)`` (the IWAE bound; ``k = 1`` is
        the ELBO, and it rises towards ``log p(x)`` as ``k`` grows);
        ``"prior"``: ``r = p(z)``, plain Monte Carlo of ``p(x) = E_p(z)[p(x | z)]``.
        The ``k`` samples are drawn in chunks so that at most ``max_elements``
        decoder outputs are in memory at once.
        """
        check_positive_int("k", k)
        if proposal not in ("encoder", "prior"):
            raise ValueError(f"proposal must be 'encoder' or 'prior', got {proposal!r}")
        x = self._check(x)
        flat = x.flatten(1)
        mu, logvar = self.encode(x)
        if proposal == "prior":
            mu, logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
        per_sample = self.dims * self.likelihood.params_per_pixel
        chunk = max(1, min(k, max_elements // max(1, per_sample * len(x))))
        log_weights = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            z = reparameterize(mu.expand(m, *mu.shape), logvar.expand(m, *logvar.shape))  # (m, N, latent)
            log_px_z = self.likelihood.log_prob(self.decode(z), flat)
            log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
            log_weights.append(log_px_z + log_pz - log_normal(z, mu, logvar))
        return torch.logsumexp(torch.cat(log_weights), 0) - math.log(k)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, k: int = 1000, batch_size: int = 100) -> torch.Tensor:
        """Estimate of ``log p(x)`` per example ``(N,)``: the IWAE bound with ``k`` samples.

        A lower bound in expectation, tight as ``k -> infinity``; ``k`` up to a
        few thousand is fine (examples go ``batch_size`` at a time).
        """
        return torch.cat([self.iwae_bound(chunk, k) for chunk in torch.split(x, batch_size)])

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images ``x ~ p(x | z)``, ``z ~ N(0, I)`` (or the given codes ``(n, latent_dim)``), shaped like the data."""
        check_positive_int("n", n)
        if z is None:
            z = torch.randn(n, self.latent_dim, device=self.device)
        return self._as_data(self.likelihood.sample(self.decode(z)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded mean at the posterior mean of each image, shaped like ``x``."""
        return self.decode_mean(self.encode(x)[0])

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decoded means along the straight line between the posterior means of two images.

        ``x_a``, ``x_b``: single examples shaped like the data (no batch dim)
        -> ``(steps, *shape)``.
        """
        if steps < 2:
            raise ValueError(f"steps must be >= 2 (the two ends), got {steps}")
        mu, _ = self.encode(torch.stack([x_a, x_b]))
        t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(-1)
        return self.decode_mean((1 - t) * mu[0] + t * mu[1])

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 500, k: int = 1000,
                 elbo_samples: int = 10) -> dict[str, float]:
        """Test metrics in nats per example: ``neg_elbo_nats`` (with its ``recon_nats`` and
        ``kl_nats`` parts, ``elbo_samples`` codes per image), and ``nll_nats``, the
        IWAE estimate with ``k`` samples; ``bpd`` is ``nll_nats`` in bits per pixel."""
        total = {"neg_elbo_nats": 0.0, "recon_nats": 0.0, "kl_nats": 0.0, "nll_nats": 0.0}
        for chunk in torch.split(x, batch_size):
            elbo, reconstruction, kl = self.elbo(chunk, num_samples=elbo_samples)
            total["neg_elbo_nats"] += float(-elbo.sum())
            total["recon_nats"] += float(-reconstruction.sum())
            total["kl_nats"] += float(kl.sum())
        total["nll_nats"] = float(-self.log_prob(x, k=k).sum())
        out = {name: value / len(x) for name, value in total.items()}
        out["bpd"] = out["nll_nats"] / (self.dims * math.log(2))
        return out
