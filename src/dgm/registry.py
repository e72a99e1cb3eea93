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
from typing import Any, Callable

import torch

from .base import GenerativeModel
from .baselines import GaussianMixture, IndependentPixels


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
