"""A small digit classifier: the book's yardstick for sample quality.

Image GANs are usually scored with the Inception network's features (FID),
but those weights would have to be downloaded. The book ships its own small
CNN, trained on each image set's train split, and uses it two ways:

* its 128 penultimate features give the Fréchet distance between samples and
  test images (:func:`dgm.metrics.frechet_distance`), and
* its predicted labels give a conditional model's class accuracy and any
  model's class balance (:func:`dgm.run.score_samples`).

The shipped checkpoints are made by::

    python -m dgm classifier --data digits --out data/checkpoints
    python -m dgm classifier --data mnist5k --out data/checkpoints

and ``data/checkpoints/manifest.json`` records each command, its measured
accuracy and the file's SHA-256 (checked on load).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "data" / "checkpoints"
# full MNIST has the same 28x28 format as the subset, so it shares its classifier
SUPPORTED = {"digits": "digits", "mnist5k": "mnist5k", "mnist5k-bin": "mnist5k", "mnist": "mnist5k"}


class DigitClassifier(nn.Module):
    """Three 3x3 convolutions and a 128-unit feature layer, for 8x8 or 28x28 digits.

    Args:
        size: image side (8 for ``digits``, 28 for ``mnist5k``).
        num_levels: grey levels of integer input (17 for digits: 0..16 is divided
            by 16), or ``None`` for inputs already in ``[0, 1]``.
        feature_dim: width of the penultimate layer whose activations are the
            features of the Fréchet distance.
    """

    def __init__(self, size: int, num_levels: int | None = None, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        if size not in (8, 28):
            raise ValueError(f"size must be 8 (digits) or 28 (MNIST), got {size!r}")
        self.config: dict[str, Any] = {"size": size, "num_levels": num_levels,
                                       "feature_dim": feature_dim, "num_classes": num_classes}
        self.size, self.num_levels = size, num_levels
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2) if size >= 16 else nn.Identity(),  # 28 -> 14; 8x8 keeps its detail
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
            nn.Flatten(),
            nn.Linear(64 * 9, feature_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the data's own format -> floats in [0, 1], shape (N, 1, size, size)."""
        if not torch.is_tensor(x):
            raise ValueError(f"expected a torch tensor of images, got {type(x).__name__}")
        if x.ndim == 3:
            x = x[:, None]
        if tuple(x.shape[1:]) != (1, self.size, self.size):
            raise ValueError(f"expected images shaped (N, 1, {self.size}, {self.size}), got {tuple(x.shape)}")
        x = x.float()
        if self.num_levels is not None:
            x = x / (self.num_levels - 1)
        return x.clamp(0, 1).to(self.head.weight.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` images -> ``(N, 10)`` class logits."""
        return self.head(self.dropout(self.body(self._prepare(x))))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """``(N, 1, H, W)`` images -> ``(N, feature_dim)`` penultimate activations (eval mode)."""
        was_training = self.training
        self.eval()
        out = torch.cat([self.body(self._prepare(chunk)) for chunk in torch.split(x, batch_size)])
        self.train(was_training)
        return out.cpu()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """``(N, 1, H, W)`` images -> ``(N,)`` predicted digits (eval mode)."""
        was_training = self.training
        self.eval()
        out = torch.cat([self.logits(chunk).argmax(1) for chunk in torch.split(x, batch_size)])
        self.train(was_training)
        return out.cpu()


def _augment(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill): the classifier
    must not depend on exact placement, since generated digits wander."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(n, h, w)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols][:, None]


def accuracy(classifier: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((classifier.predict(x) == y).double().mean())


def train_classifier(data_name: str, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train the classifier on ``data_name``'s train split; keep the best validation epoch.

    Returns ``(classifier, metrics)`` with ``val_accuracy``, ``test_accuracy``,
    ``fd_train_vs_test`` (the Fréchet distance between real train and test
    images: the floor a perfect sampler would score, up to sample-size bias),
    ``train_seconds``.
    """
    from . import data as data_module
    from .metrics import frechet_distance
    from .train import seed_everything

    if data_name not in SUPPORTED:
        raise ValueError(f"no classifier for {data_name!r}; choose one of {sorted(SUPPORTED)}")
    base = SUPPORTED[data_name]
    train, val, test = (data_module.load(base, split) for split in ("train", "val", "test"))
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    classifier = DigitClassifier(size=train.shape[-1], num_levels=train.num_levels)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    x_train = train.x.float()
    best = (-1.0, None)
    start = time.perf_counter()
    for _ in range(epochs):
        classifier.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(batch_size):
            batch = _augment(x_train[idx], 1 if classifier.size == 8 else 2, gen)
            loss = F.cross_entropy(classifier.logits(batch), train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
        val_acc = accuracy(classifier, val.x, val.y)
        if val_acc > best[0]:
            best = (val_acc, {k: v.clone() for k, v in classifier.state_dict().items()})
    seconds = time.perf_counter() - start
    classifier.load_state_dict(best[1])
    classifier.eval()
    metrics = {
        "data": base,
        "val_accuracy": best[0],
        "test_accuracy": accuracy(classifier, test.x, test.y),
        "fd_train_vs_test": frechet_distance(classifier.features(train.x), classifier.features(test.x)),
        "train_seconds": round(seconds, 1),
        "epochs": epochs,
        "seed": seed,
        "params": sum(p.numel() for p in classifier.parameters()),
    }
    return classifier, metrics


def save_classifier(classifier: DigitClassifier, metrics: dict[str, Any], out_dir: str | Path,
                    command: str) -> Path:
    """Write ``classifier_<data>.pt`` and record it in ``manifest.json`` beside it."""
    from .checkpoints import record_in_manifest, save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"classifier_{metrics['data']}.pt"
    save({"model": "classifier", "data": metrics["data"], "config": classifier.config,
          "state_dict": classifier.state_dict(), "metrics": metrics}, path)
    record_in_manifest(path, command, metrics)
    return path


_CACHE: dict[str, DigitClassifier] = {}


def load_classifier(data_name: str, directory: str | Path | None = None) -> DigitClassifier:
    """The shipped classifier for ``data_name`` (``digits``, ``mnist5k`` or ``mnist5k-bin``), in eval mode.

    Verifies the file against ``manifest.json`` so every reader scores samples
    with exactly the same network.
    """
    from .checkpoints import file_sha256, load

    if data_name not in SUPPORTED:
        raise ValueError(f"no digit classifier for {data_name!r}; sample-quality metrics exist for {sorted(SUPPORTED)}")
    base = SUPPORTED[data_name]
    directory = Path(directory) if directory is not None else CHECKPOINT_DIR
    key = f"{directory}:{base}"
    if key in _CACHE:
        return _CACHE[key]
    path = directory / f"classifier_{base}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; make it with `python -m dgm classifier --data {base} "
                                f"--out {directory}`")
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        expected = json.loads(manifest_path.read_text()).get(path.name, {}).get("sha256")
        if expected is not None and expected != file_sha256(path):
            raise ValueError(f"{path} does not match the SHA-256 in {manifest_path}; restore it with git "
                             f"or remake it with `python -m dgm classifier --data {base}`")
    ckpt = load(path)
    classifier = DigitClassifier(**ckpt["config"])
    classifier.load_state_dict(ckpt["state_dict"])
    classifier.eval()
    _CACHE[key] = classifier
    return classifier
