"""The models the command line knows, and how to rebuild one from a checkpoint.

Each entry is a :class:`ModelSpec`: the class, how to derive its constructor
arguments from the data (``config_for``), which kinds of data it accepts, and
its default training settings for :func:`dgm.train.fit`. Chapters add their
families with :func:`register`.

A checkpoint written by ``python -m dgm train`` is a plain dict (loadable with
``torch.load(path, weights_only=True)``)::

    {"model": "independent", "data": "digits", "config": {...constructor kwargs...},
     "state_dict": {...}, "train": {...fit settings...}, "metrics": {...the JSON...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from .autoregressive import FVSBN, MADE, NADE, PixelCNN, WaveNet
from .base import GenerativeModel
from .baselines import GaussianMixture, IndependentPixels

if TYPE_CHECKING:
    from .train import History


@dataclass
class ModelSpec:
    name: str
    cls: type[GenerativeModel]
    config_for: Callable[[dict], dict]
    data_kinds: tuple[str, ...]
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (and so to the CLI)."""
    if spec.name in MODELS:
        raise ValueError(f"model name {spec.name!r} is already registered")
    MODELS[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build(name: str, data_info: dict, **overrides: Any) -> GenerativeModel:
    """Build model ``name`` for data described by ``DataSplit.info()``."""
    spec = get(name)
    if data_info["kind"] not in spec.data_kinds:
        raise ValueError(
            f"model {name!r} needs data of kind {' or '.join(spec.data_kinds)}, "
            f"but {data_info['data']!r} is {data_info['kind']!r}"
        )
    config = {**spec.config_for(data_info), **overrides}
    return spec.cls(**config)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> tuple[GenerativeModel, dict]:
    """Rebuild the model saved at ``path``; returns ``(model, checkpoint dict)``."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    for key in ("model", "config", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{path} is not a dgm checkpoint (missing {key!r})")
    model = get(ckpt["model"]).cls(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def train(
    name: str,
    data_name: str,
    *,
    seed: int = 0,
    budget_seconds: float | None = None,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    binarize: str | None = None,
    device: str | torch.device | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool | str = "auto",
) -> tuple[GenerativeModel, "History", dict[str, Any]]:
    """Train model ``name`` on ``data_name`` exactly as ``python -m dgm train`` does.

    Chapters call this so the numbers in the book and the command line's JSON
    come from one code path. Unset arguments take the model's defaults
    (``MODELS[name].train``); ``overrides`` change constructor arguments.

    Returns:
        ``(model, history, result)``: the trained model (best validation
        weights), the :class:`~dgm.train.History`, and the result dict that the
        CLI prints (``model``, ``data``, ``seed``, ``train_seconds``, ``params``,
        ``test_*`` metrics, ``entropy_nats`` for toy sets, ...).
    """
    from . import data as data_module
    from .train import default_device, fit, seed_everything

    spec = get(name)
    train_split = data_module.load(data_name, "train", binarize=binarize)
    val_split = data_module.load(data_name, "val", binarize=binarize)
    seed_everything(seed)  # before building: the seed also fixes the random initial weights
    model = build(name, train_split.info(), **(overrides or {}))
    settings = dict(spec.train)
    for key, value in (("budget_seconds", budget_seconds), ("max_steps", steps), ("lr", lr),
                       ("batch_size", batch_size)):
        if value is not None:
            settings[key] = value
    device = torch.device(device) if device is not None else default_device()
    history = fit(model, train_split.x, val_split.x, seed=seed, device=device,
                  batch_transform=train_split.batch_transform, progress=progress, **settings)
    result: dict[str, Any] = {
        "model": name,
        "data": data_name,
        "seed": seed,
        "train_seconds": round(history.seconds, 3),
        "steps": history.steps,
        "stopped_because": history.stopped_because,
        "best_step": history.best_step,
        "val_score": history.best_val,
        "params": model.num_parameters(),
        "device": str(device),
        **test_metrics(model, data_name, binarize=binarize),
    }
    result["train_settings"] = {**settings, "seed": seed}
    return model, history, result


@torch.no_grad()
def test_metrics(model: GenerativeModel, data_name: str, binarize: str | None = None) -> dict[str, Any]:
    """The family's metrics on the test split, keys prefixed ``test_``.

    For toy sets also ``entropy_nats`` (the best reachable NLL, Monte Carlo,
    with ``entropy_se``) and ``test_true_nll_nats``: the true density's NLL on
    the same test points, so ``test_nll_nats - test_true_nll_nats`` estimates
    KL(p_data || model) without the test sample's own noise.
    """
    from . import data as data_module

    model.eval()
    test = data_module.load(data_name, "test", binarize=binarize)
    metrics: dict[str, Any] = {f"test_{k}": v for k, v in model.evaluate(test.x.to(model.device)).items()}
    if test.density is not None:
        entropy, se = test.density.entropy()
        metrics["entropy_nats"] = entropy
        metrics["entropy_se"] = se
        metrics["test_true_nll_nats"] = float(-test.density.log_prob(test.x.double()).mean())
    return metrics


# ---- chapter 1 -------------------------------------------------------------
register(ModelSpec(
    name="independent",
    cls=IndependentPixels,
    config_for=lambda info: {"shape": tuple(info["shape"]), "num_levels": info["num_levels"]},
    data_kinds=("categorical", "binary"),
    # the MLE is closed form (initialize); the trainer only scores it on val
    train={"max_steps": 0, "batch_size": 1000, "lr": 0.05},
    description="independent categorical pixels, closed-form MLE with add-alpha smoothing (ch. 1)",
))
register(ModelSpec(
    name="gmm",
    cls=GaussianMixture,
    config_for=lambda info: {"dim": info["shape"][0], "num_components": 8},
    data_kinds=("points",),
    train={"budget_seconds": 60, "batch_size": 1000, "lr": 3e-3, "eval_every": 100, "patience": 10},
    description="Gaussian mixture (8 full-covariance components) by maximum likelihood (ch. 1)",
))


# ---- chapter 2 -------------------------------------------------------------
# The constructors' defaults are the settings tuned on digits' validation split.
def _image_config(info: dict) -> dict:
    return {"shape": tuple(info["shape"]), "num_levels": info["num_levels"]}


register(ModelSpec(
    name="fvsbn",
    cls=FVSBN,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"budget_seconds": 60, "batch_size": 64, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="fully visible sigmoid belief net: a masked linear layer, softmax outputs (ch. 2)",
))
register(ModelSpec(
    name="nade",
    cls=NADE,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"budget_seconds": 60, "batch_size": 32, "lr": 2e-3, "eval_every": 50, "patience": 10},
    description="NADE: one shared sigmoid hidden layer, computed with cumulative sums (ch. 2)",
))
register(ModelSpec(
    name="made",
    cls=MADE,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"budget_seconds": 60, "batch_size": 32, "lr": 1e-3, "eval_every": 50, "patience": 10},
    description="MADE: masked MLP (500 hidden, dropout), natural order; --set num_masks=K for an ensemble (ch. 2)",
))
register(ModelSpec(
    name="pixelcnn",
    cls=PixelCNN,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"budget_seconds": 60, "batch_size": 64, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="gated PixelCNN (vertical + horizontal stacks, no blind spot); --set gated=False: plain (ch. 2)",
))
register(ModelSpec(
    name="wavenet",
    cls=WaveNet,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"budget_seconds": 60, "batch_size": 64, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="WaveNet: dilated causal gated 1-D convolutions over the raster sequence (ch. 2)",
))


# ---- chapter 3 (dgm.vae) ----------------------------------------------------

# ---- chapter 4 (dgm.gan) ----------------------------------------------------

# ---- chapter 5 (dgm.flows) --------------------------------------------------

# ---- chapter 6 (dgm.diffusion) ----------------------------------------------
