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

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .autoregressive import FVSBN, MADE, NADE, PixelCNN, Transformer, WaveNet
from .base import GenerativeModel, check_settings
from .baselines import GaussianMixture, IndependentPixels


@dataclass
class ModelSpec:
    name: str
    cls: type[GenerativeModel]
    config_for: Callable[[dict], dict]
    data_kinds: tuple[str, ...]
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: conditional models train on ``(x, y)`` pairs: the trainer batches the labels too
    labels: bool = False
    #: CPU threads a run uses by default: 1 for the small models, which gain little or nothing from a
    #: second core and lose several-fold when another process is busy on it; ``None`` (one per core)
    #: for convolutional ones on images. A function of ``DataSplit.info()`` where it depends on the data.
    #: Measured by ``data/threads_benchmark.py``; ``--threads N`` overrides it.
    threads: int | None | Callable[[dict], int | None] = 1
    #: training settings that differ by the kind of data (``DataSplit.info()["kind"]``), merged over
    #: ``train``: e.g. a diffusion model's MLP on points takes many cheap steps, its U-Net on images few costly ones
    train_for_kind: dict[str, dict[str, Any]] = field(default_factory=dict)

    def train_settings(self, info: dict) -> dict[str, Any]:
        """The default settings of :func:`dgm.train.fit` for data described by ``DataSplit.info()``."""
        return {**self.train, **self.train_for_kind.get(info["kind"], {})}


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
    check_settings(spec.cls, overrides)
    config = {**spec.config_for(data_info), **overrides}
    if overrides:
        _check_size(name, spec.cls, config, overrides)
    try:
        return spec.cls(**config)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001  e.g. a size too large to allocate: one clear line
        settings = " ".join(f"{k}={v!r}" for k, v in overrides.items()) or "its defaults"
        raise ValueError(f"could not build {name!r} with {settings}: {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}") from None


#: the most numbers (parameters and buffers) a model built from ``--set`` may hold: ~1.6 GB of float32
#: weights, plus as much again for each of Adam's two moments, is already more than a laptop spares
MAX_PARAMETERS = 400_000_000


def _check_size(name: str, cls: type, config: dict, overrides: dict) -> None:
    """Refuse settings that make a model too large, before allocating it: count its parameters and
    buffers on PyTorch's meta device (shapes only, no memory, no random numbers drawn)."""
    try:
        with torch.device("meta"):
            probe = cls(**config)
            count = sum(t.numel() for t in itertools.chain(probe.parameters(), probe.buffers()))
    except Exception:  # noqa: BLE001  the real construction below reports the problem
        return
    if count > MAX_PARAMETERS:
        settings = " ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ValueError(f"{name} with {settings} would have {count:,} parameters "
                         f"({count * 4 / 1e9:.1f} GB of weights, about 4x that to train); "
                         f"the limit is {MAX_PARAMETERS:,}: choose smaller sizes")


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
    train={"max_steps": 10_000, "batch_size": 1000, "lr": 3e-3, "eval_every": 100, "patience": 10},
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
    train={"max_steps": 20_000, "batch_size": 64, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="fully visible sigmoid belief net: a masked linear layer, softmax outputs (ch. 2)",
))
register(ModelSpec(
    name="nade",
    cls=NADE,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"max_steps": 10_000, "batch_size": 32, "lr": 2e-3, "eval_every": 50, "patience": 10},
    description="NADE: one shared sigmoid hidden layer, computed with cumulative sums (ch. 2)",
))
register(ModelSpec(
    name="made",
    cls=MADE,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"max_steps": 8000, "batch_size": 32, "lr": 1e-3, "eval_every": 50, "patience": 10},
    description="MADE: masked MLP (500 hidden, dropout), natural order; --set num_masks=K for an ensemble (ch. 2)",
))
register(ModelSpec(
    name="pixelcnn",
    cls=PixelCNN,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"max_steps": 1000, "batch_size": 64, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="gated PixelCNN (vertical + horizontal stacks, no blind spot); --set gated=False: plain (ch. 2)",
    threads=None,
))
register(ModelSpec(
    name="wavenet",
    cls=WaveNet,
    config_for=_image_config,
    data_kinds=("categorical", "binary"),
    train={"max_steps": 1200, "batch_size": 64, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="WaveNet: dilated causal gated 1-D convolutions over the raster sequence (ch. 2)",
))
# step-defined (max_steps, not a time budget), so a seed reproduces the run exactly; the learning
# rate falls along a half cosine over the run and the best validation weights are kept
register(ModelSpec(
    name="transformer",
    cls=Transformer,
    config_for=lambda info: {**_image_config(info), "lr_schedule": "cosine"},
    data_kinds=("categorical", "binary"),
    train={"max_steps": 2500, "batch_size": 32, "lr": 2e-3, "eval_every": 100, "patience": None},
    description="causal transformer: masked self-attention over the raster sequence, "
                "key/value-cached sampling (ch. 2)",
))


# ---- chapter 3 (dgm.vae) ----------------------------------------------------
from .vae import VAE, Autoencoder  # noqa: E402  (chapter 3's section)


def _vae_config(info: dict) -> dict:
    """The decoder likelihood that fits the data: categorical levels, binary pixels, or grey values."""
    # ordered grey levels (digits): a logistic discretized to the levels generalises far better
    # than a free softmax per pixel on 1000 images (measured on digits' validation split)
    likelihood = {"categorical": "logistic", "binary": "bernoulli", "grey": "gaussian"}[info["kind"]]
    return {"shape": tuple(info["shape"]), "likelihood": likelihood,
            "num_levels": info["num_levels"] if info["kind"] == "categorical" else None}


register(ModelSpec(
    name="ae",
    cls=Autoencoder,
    config_for=_vae_config,
    data_kinds=("categorical", "binary", "grey"),
    train={"max_steps": 3000, "batch_size": 128, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="deterministic autoencoder (MLP); reconstruction metrics only, not a generative model (ch. 3)",
))
register(ModelSpec(
    name="vae",
    cls=VAE,
    config_for=_vae_config,
    data_kinds=("categorical", "binary", "grey"),
    train={"max_steps": 3000, "batch_size": 128, "lr": 3e-3, "eval_every": 50, "patience": 10},
    description="VAE: Gaussian encoder, MLP; decoder likelihood by data (--set likelihood=..., beta=...) (ch. 3)",
))


# ---- chapter 4 (dgm.gan) ----------------------------------------------------
from .gan import DCGAN, GAN, ConditionalGAN, CycleGAN  # noqa: E402  (chapter 4's section)


def _gan_image_config(info: dict) -> dict:
    """Grey images stay in [0, 1]; integer levels (digits) are scaled by the model and rounded back."""
    return {"shape": tuple(info["shape"]), "num_levels": info["num_levels"] if info["kind"] == "categorical" else None}


def _gan_points_config(info: dict) -> dict:
    """Chapter 4's default remedies: a learned mixture of 100 latent Gaussians (means and scales at 3x G's
    rate), a lazy R1 penalty on D, sampling from an average of G's weights, rates falling along a half
    cosine over the run's 6,000 steps; D judges pairs of samples (PacGAN2), which keeps each mode about
    as wide as the data's, except on grid-sharp, where a packed trial run had not found the modes by the
    end. How each was chosen, with the measurements and commands: data/gan_tuning.md."""
    grid = info.get("data") == "grid-sharp"
    return {"dim": info["shape"][0], "hidden": 128, "pack": 1 if grid else 2, "latent_components": 100,
            "latent_scale": 0.1, "latent_lr": 3.0, "r1": 0.01 if grid else 0.03, "r1_every": 4,
            "r1_follows_lr": grid, "ema": 0.999, "lr_schedule": "cosine"}


# GANs run fixed step counts, so a seed reproduces a run exactly; the 2-D GAN keeps its best weights by
# the Parzen score of the validation points every 500 steps (GAN.validation_score), the image GANs their last
register(ModelSpec(
    name="gan",
    cls=GAN,
    config_for=_gan_points_config,
    data_kinds=("points",),
    train={"max_steps": 6000, "batch_size": 256, "lr": 2e-3, "eval_every": 500, "patience": None},
    description="GAN of MLPs for 2-D points; --set loss=saturating|nonsaturating|classification|"
                "feature_matching|denoising pack=M r1=G r1_every=N r1_follows_lr=True|False latent_components=K "
                "latent_lr=F ema=B hidden=H "
                "lr_schedule=cosine|constant|halving:F (ch. 4)",
))
register(ModelSpec(
    name="dcgan",
    cls=DCGAN,
    config_for=_gan_image_config,
    data_kinds=("grey", "categorical"),
    train={"max_steps": 1000, "batch_size": 64, "lr": 5e-4, "eval_every": 100, "patience": None},
    description="DCGAN: transposed-convolution generator, strided-convolution discriminator (ch. 4)",
    threads=None,
))
register(ModelSpec(
    name="cgan",
    cls=ConditionalGAN,
    # AC-GAN's auxiliary classifier at weight 10: samples show the requested digit more often (data/tuning.md)
    config_for=lambda info: {**_gan_image_config(info), "aux_weight": 10.0},
    data_kinds=("grey", "categorical"),
    train={"max_steps": 1500, "batch_size": 64, "lr": 5e-4, "eval_every": 100, "patience": None},
    description="conditional DCGAN: one-hot digit label into G and D, AC-GAN auxiliary classifier "
                "(--set aux_weight=0 for the plain one) (ch. 4)",
    labels=True,
    threads=None,
))
register(ModelSpec(
    name="cyclegan",
    cls=CycleGAN,
    config_for=lambda info: {"shape": tuple(info["shape"])},
    data_kinds=("grey",),
    train={"max_steps": 600, "batch_size": 32, "lr": 2e-4, "eval_every": 100, "patience": None},
    description="CycleGAN: unpaired thin <-> bold MNIST-5k digits, two generators, cycle loss (ch. 4)",
    threads=None,
))

# ---- chapter 5 (dgm.flows) --------------------------------------------------
# A flow fits both kinds of data: 2-D points (exact density) and integer images,
# dequantised (the JSON then reports test_nll_bound_nats, an upper bound on the NLL).
from .flows import IAF, MAF, RealNVP  # noqa: E402


def _flow_config(info: dict) -> dict:
    """Points: the constructors' defaults. Digits (1000 training images): smaller conditioners,
    which overfit later (tuned on the validation split)."""
    config = {"shape": tuple(info["shape"]), "num_levels": info["num_levels"]}
    if info["kind"] == "categorical":
        config.update(hidden_size=64, num_blocks=4)
    return config


def _realnvp_config(info: dict) -> dict:
    """Points: a base of 16 learned Gaussians, so separate islands of mass need no bridges (the
    measurements that chose it: data/tuning.md)."""
    config = _flow_config(info)
    if info["kind"] == "points":
        config["base_components"] = 16
    return config


register(ModelSpec(
    name="realnvp",
    cls=RealNVP,
    config_for=_realnvp_config,
    data_kinds=("points", "categorical"),
    train={"max_steps": 5000, "batch_size": 256, "lr": 2e-3, "eval_every": 100, "patience": 15},
    description="RealNVP: affine couplings + ActNorm + LU linear maps; points: a 16-Gaussian base "
                "(--set base_components=0 for N(0, I)); images dequantised (ch. 5)",
))
register(ModelSpec(
    name="nsf",
    cls=RealNVP,
    # a spline coupling does far more than an affine one: 4 blocks (each step is cheaper); the
    # learning rate halves after every 15 % of the run (data/tuning.md)
    config_for=lambda info: {**_flow_config(info), "coupling": "spline", "num_blocks": 4,
                             "lr_schedule": "halving:0.15"},
    data_kinds=("points", "categorical"),
    train={"max_steps": 5000, "batch_size": 256, "lr": 2e-3, "eval_every": 100, "patience": 15},
    train_for_kind={"categorical": {"max_steps": 1200}},  # a step on images costs far more
    description="neural spline flow: RealNVP's blocks with rational-quadratic spline couplings (ch. 5)",
))
register(ModelSpec(
    name="maf",
    cls=MAF,
    config_for=_flow_config,
    data_kinds=("points", "categorical"),
    train={"max_steps": 10_000, "batch_size": 256, "lr": 2e-3, "eval_every": 100, "patience": 15},
    description="masked autoregressive flow: MADE conditioners, fast density, sequential sampling (ch. 5)",
))
register(ModelSpec(
    name="iaf",
    cls=IAF,
    config_for=_flow_config,
    data_kinds=("points", "categorical"),
    train={"max_steps": 5000, "batch_size": 256, "lr": 2e-3, "eval_every": 100, "patience": 15},
    train_for_kind={"categorical": {"max_steps": 400}},  # a step on images costs far more
    description="inverse autoregressive flow: fast sampling, density D passes per layer (ch. 5)",
))


# ---- chapter 6 (dgm.diffusion) ----------------------------------------------
from .diffusion import DDPM  # noqa: E402


def _diffusion_config(info: dict) -> dict:
    if info["kind"] == "points":
        # the learning rate falls along a half cosine to 0 at the end of the run: the last steps settle
        # the sharp modes
        return {"shape": tuple(info["shape"]), "kind": "points", "lr_schedule": "cosine"}
    # images: DDIM with 100 steps by default, since the 1,000 DDPM steps for the
    # 1,000 samples that the sample metrics draw take minutes on a CPU; a shorter
    # weight average, because a CPU run gives the U-Net only a few thousand steps
    return {"shape": tuple(info["shape"]), "kind": info["kind"], "num_levels": info["num_levels"],
            "sampler": "ddim", "sample_steps": 100, "ema_decay": 0.995}


register(ModelSpec(
    name="ddpm",
    cls=DDPM,
    config_for=_diffusion_config,
    data_kinds=("points", "categorical", "grey"),
    train={"max_steps": 15_000, "batch_size": 256, "lr": 1e-3, "eval_every": 250, "patience": None},
    # the U-Net: smaller batches at a higher rate do better in a CPU's few thousand steps (the digits checkpoint)
    train_for_kind={kind: {"max_steps": 6000, "batch_size": 64, "lr": 2e-3} for kind in ("categorical", "grey")},
    description="denoising diffusion (MLP for points, U-Net for images); sample with --set sampler=ddim "
                "sample_steps=50 eta=0.0 (ch. 6)",
    threads=lambda info: 1 if info["kind"] == "points" else None,  # an MLP on points, a U-Net on images
))


# ---- chapter 7 (dgm.flow_matching) ----
from .flow_matching import FlowMatching, LatentFlowMatching  # noqa: E402


def _flow_matching_config(info: dict) -> dict:
    """Points: an exact-divergence likelihood with 32 Heun steps; the rate falls along a half cosine.
    Images: the U-Net of chapter 6, Heun with 10 steps (20 network evaluations) to sample, and a
    Hutchinson bound with 16 Heun steps and 2 probes per test image (affordable single-threaded)."""
    config = {"shape": tuple(info["shape"]), "kind": info["kind"], "lr_schedule": "cosine"}
    if info["kind"] != "points":
        config.update(num_levels=info["num_levels"], ema_decay=0.995, eval_steps=16, eval_probes=2)
    return config


register(ModelSpec(
    name="fm",
    cls=FlowMatching,
    config_for=_flow_matching_config,
    data_kinds=("points", "categorical", "grey"),
    train={"max_steps": 8000, "batch_size": 256, "lr": 2e-3, "eval_every": 500, "patience": None},
    train_for_kind={kind: {"max_steps": 6000, "batch_size": 64, "lr": 2e-3} for kind in ("categorical", "grey")},
    description="flow matching (--set path=linear|vp sampler=euler|heun sample_steps=10); ODE likelihood: "
                "exact divergence on points, Hutchinson bound on dequantised images (ch. 7)",
    threads=lambda info: 1 if info["kind"] == "points" else None,
))
register(ModelSpec(
    name="fm-guided",
    cls=FlowMatching,
    # classifier-free guidance: labels dropped 10 % of the time; samples at w = 1; the run also scores w in the sweep
    config_for=lambda info: {**_flow_matching_config(info), "num_classes": 10, "label_dropout": 0.1,
                             "guidance": 1.0, "guidance_sweep": (0.0, 0.5, 1.0, 2.0, 4.0)},
    data_kinds=("categorical", "grey"),
    train={"max_steps": 6000, "batch_size": 64, "lr": 2e-3, "eval_every": 500, "patience": None},
    description="class-conditional flow matching with classifier-free guidance (--set guidance=W); "
                "scores class accuracy and FD per guidance weight (ch. 7)",
    labels=True,
    threads=None,
))
register(ModelSpec(
    name="fm-latent",
    cls=LatentFlowMatching,
    config_for=lambda info: {"shape": tuple(info["shape"]), "kind": info["kind"],
                             "num_levels": info["num_levels"] if info["kind"] == "categorical" else None,
                             "lr_schedule": "cosine"},
    data_kinds=("categorical", "grey"),
    train={"max_steps": 6000, "batch_size": 256, "lr": 2e-3, "eval_every": 500, "patience": None},
    description="flow matching on a deterministic autoencoder's codes (trained first, then frozen), "
                "decoded to images (ch. 7)",
))


# ---- chapter 7 (dgm.scores) ----
from .scores import EBM, NCSN  # noqa: E402

register(ModelSpec(
    name="ebm",
    cls=EBM,
    config_for=lambda info: {"shape": tuple(info["shape"])},
    data_kinds=("points",),
    # validation is the quadrature NLL: the trainer keeps the best weights by it
    train={"max_steps": 1500, "batch_size": 256, "lr": 3e-3, "eval_every": 250, "patience": None},
    description="energy-based model by contrastive divergence, short-run Langevin from a replay buffer; "
                "log_prob with log Z by quadrature on a grid (2-D only) (ch. 7)",
))
register(ModelSpec(
    name="ncsn",
    cls=NCSN,
    config_for=lambda info: {"shape": tuple(info["shape"])},
    data_kinds=("points",),
    # 6,000 steps: ring-sharp's modes (0.014 data standard deviations wide) need the last steps of the cosine
    train={"max_steps": 6000, "batch_size": 256, "lr": 1e-3, "eval_every": 500, "patience": None},
    description="noise-conditional score network by denoising score matching, annealed Langevin sampling "
                "(--set num_levels=10 sigma_max=3 sigma_min=0.01 steps_per_level=50 step_eps=1e-5); "
                "no likelihood (ch. 7)",
))
