"""Chapter 1's models, fitted by maximum likelihood: the baselines of the book.

* :class:`IndependentPixels` treats every pixel as its own categorical
  variable, ``p(x) = prod_i Cat(x_i; theta_i)``. Its maximum-likelihood
  estimate is the table of (smoothed) pixel-value frequencies, so
  ``initialize`` computes it in closed form; gradient descent on ``loss``
  reaches the same table.
* :class:`GaussianMixture` is a mixture of ``K`` full-covariance Gaussians for
  2-D points, placed by k-means and then trained by gradient descent on the
  negative log-likelihood.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import DataSpec, GenerativeModel, check_levels, check_positive_int


class IndependentPixels(GenerativeModel):
    """A categorical distribution per pixel, independent across pixels.

    Args:
        shape: shape of one example, e.g. ``(1, 8, 8)``.
        num_levels: number of values a pixel takes (17 for digits, 2 for
            binarized MNIST). Data must be integers ``0..num_levels-1``
            (floats holding integers, such as binarized images, are accepted).
        alpha: Laplace (add-alpha) smoothing used by the closed-form
            ``initialize``; without it a level never seen in training gets
            probability 0 and a test image containing it gets NLL = inf.
    """

    family = "independent pixels (explicit, exact)"

    def __init__(self, shape: tuple[int, ...], num_levels: int, alpha: float = 0.5) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        check_positive_int("num_levels", num_levels)
        if num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {num_levels}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.shape, self.num_levels, self.alpha = shape, num_levels, float(alpha)
        # uniform to start: every level equally likely, NLL = D log K
        self.logits = nn.Parameter(torch.zeros(math.prod(shape), num_levels))

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``x`` and return it flattened to ``(batch, D)`` int64 levels."""
        return check_levels(x, self.shape, self.num_levels, "IndependentPixels").flatten(1)

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Set the logits to the maximum-likelihood estimate with add-alpha smoothing."""
        levels = self._levels(x_train)
        counts = F.one_hot(levels, self.num_levels).sum(0).to(self.logits.dtype)  # (D, K)
        probs = (counts + self.alpha) / (counts + self.alpha).sum(-1, keepdim=True)
        self.logits.copy_(probs.log())

    def probs(self) -> torch.Tensor:
        """Per-pixel probabilities, ``(D, num_levels)``."""
        return self.logits.softmax(-1)

    def data_spec(self, method: str = "loss") -> DataSpec:
        return DataSpec(tuple(self.config["shape"]), "levels", self.config["num_levels"])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        levels = self._levels(x)  # (B, D)
        log_p = self.logits.log_softmax(-1)  # (D, K)
        return log_p.gather(1, levels.T).T.sum(1)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        check_positive_int("n", n)
        draws = torch.multinomial(self.probs(), n, replacement=True)  # (D, n)
        return draws.T.reshape(n, *self.shape)


class GaussianMixture(GenerativeModel):
    """Mixture of ``num_components`` full-covariance Gaussians in ``dim`` dimensions.

    Parameters: mixing logits ``(K,)``, means ``(K, dim)`` and Cholesky factors
    ``(K, dim, dim)`` whose diagonal passes through ``softplus`` to stay positive.
    """

    family = "Gaussian mixture (explicit, exact)"

    def __init__(self, dim: int = 2, num_components: int = 8) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_components", num_components)
        self.dim, self.num_components = dim, num_components
        self.mix_logits = nn.Parameter(torch.zeros(num_components))
        self.means = nn.Parameter(torch.randn(num_components, dim))
        # softplus(0.5413) = 1: unit covariances to start
        self.raw_tril = nn.Parameter(torch.diag_embed(torch.full((num_components, dim), 0.5413)))

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors ``(K, dim, dim)`` with a positive diagonal."""
        diag = F.softplus(torch.diagonal(self.raw_tril, dim1=-2, dim2=-1)) + 1e-5
        return torch.tril(self.raw_tril, -1) + torch.diag_embed(diag)

    def distribution(self) -> torch.distributions.MixtureSameFamily:
        components = torch.distributions.MultivariateNormal(self.means, scale_tril=self.scale_tril())
        return torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=self.mix_logits), components
        )

    def data_spec(self, method: str = "loss") -> DataSpec:
        return DataSpec((self.dim,), "real")

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (batch, {self.dim}), got {tuple(x.shape)}")

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor, restarts: int = 10) -> None:
        """k-means (best of ``restarts`` k-means++ seedings) for the means; per-cluster covariances.

        Several restarts matter: one unlucky seeding merges two modes into one
        component, a local optimum that gradient descent does not leave.
        """
        self._check(x_train)
        if self.num_components > len(x_train):
            raise ValueError(f"num_components={self.num_components} is more than the {len(x_train)} training points: "
                             "every component needs points of its own; use fewer components")
        x = x_train.float()
        best_inertia, centres = math.inf, None
        for _ in range(restarts):
            candidate = self._kmeans(x)
            inertia = float(torch.cdist(x, candidate).min(1).values.pow(2).sum())
            if inertia < best_inertia:
                best_inertia, centres = inertia, candidate
        k = self.num_components
        assign = torch.cdist(x, centres).argmin(1)
        eye = torch.eye(self.dim, device=x.device)
        trils, weights = [], []
        for j in range(k):
            members = x[assign == j]
            cov = torch.cov(members.T).reshape(self.dim, self.dim) if len(members) > self.dim else eye
            trils.append(torch.linalg.cholesky(cov + 1e-4 * eye))
            weights.append(max(len(members), 1))
        tril = torch.stack(trils)
        diag = torch.diagonal(tril, dim1=-2, dim2=-1).clamp(min=1e-4)
        raw_diag = diag + torch.log(-torch.expm1(-diag))  # inverse softplus
        self.means.copy_(centres)
        self.raw_tril.copy_(torch.tril(tril, -1) + torch.diag_embed(raw_diag))
        self.mix_logits.copy_(torch.tensor(weights, dtype=torch.float, device=x.device).log())

    def _kmeans(self, x: torch.Tensor, iterations: int = 20) -> torch.Tensor:
        """k-means++ seeding then Lloyd iterations; returns centres ``(K, dim)``."""
        k = self.num_components
        centres = x[torch.randint(len(x), (1,), device=x.device)]
        d2 = torch.cdist(x, centres).pow(2).min(1).values
        for _ in range(1, k):  # next centre with probability proportional to squared distance
            new = x[torch.multinomial(d2 / d2.sum(), 1)] if d2.sum() > 0 else x[torch.randint(len(x), (1,))]
            centres = torch.cat([centres, new])
            d2 = torch.minimum(d2, torch.cdist(x, new).pow(2)[:, 0])  # one new distance per point, not k
        for _ in range(iterations):  # Lloyd steps, every centre at once (a loop over centres is slow for large k)
            assign = torch.cdist(x, centres).argmin(1)
            counts = torch.bincount(assign, minlength=k).to(x.dtype)[:, None]
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        return centres

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.distribution().log_prob(x)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        check_positive_int("n", n)
        return self.distribution().sample((n,))
