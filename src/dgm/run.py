"""The run layer: everything that loads, trains, samples, times, scores and saves, above the formulas.

The model families (``dgm.autoregressive``, ``dgm.vae``, ...) and the formulas (``dgm.metrics``) know
nothing about files or data set names; :mod:`dgm.registry` is the table of models and their defaults.
This module puts them together, and the command line, the chapters and ``dgm.compare`` all go
through it, so a number in the book and the JSON of ``python -m dgm train`` come from one code path:

* :func:`splits`: a data set's train/val/test splits, loaded once (:class:`Splits`);
* :func:`train`: build a registry model, fit it, score it (the JSON's keys);
* :func:`test_metrics` and :func:`score_samples`: the scores of a trained model on a test split;
* :func:`load_checkpoint`: rebuild a saved model, verified.

    >>> model, history, result = run.train("realnvp", "ring", seed=0)
    >>> data = run.splits("digits"); model, _, result = run.train("vae", data, seed=0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import data as data_module
from . import metrics
from .base import GenerativeModel
from .registry import MODELS, build, get

if TYPE_CHECKING:
    from .data import DataSplit
    from .train import History

#: the sharp toys, scored by mode coverage and spread as well as the energy distance
SHARP_TOYS = ("ring-sharp", "grid-sharp")


@dataclass
class Splits:
    """The three splits of one data set, loaded once and passed down as objects."""

    train: "DataSplit"
    val: "DataSplit"
    test: "DataSplit"

    @property
    def name(self) -> str:
        return self.test.name


def splits(name: str, *, binarize: str | None = None, download: bool = False) -> Splits:
    """Load data set ``name``'s train, val and test splits (see :func:`dgm.data.load`)."""
    return Splits(data_module.load(name, "train", binarize=binarize, download=download),
                  data_module.load(name, "val", binarize=binarize),
                  data_module.load(name, "test", binarize=binarize))


def default_threads(name: str, split: "DataSplit | str") -> int | None:
    """The CPU threads model ``name`` uses on this data unless told otherwise (``ModelSpec.threads``)."""
    threads = get(name).threads
    if not callable(threads):
        return threads
    if isinstance(split, str):
        kind = "points" if split in data_module.TOYS else data_module.load(split, "val").kind
        return threads({"data": split, "kind": kind})
    return threads({"data": split.name, "kind": split.kind})


def train(
    name: str,
    data: Splits | str,
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
    sample_quality: bool = True,
    download: bool = False,
    eval_every: int | None = None,
    threads: int | None = None,
) -> tuple[GenerativeModel, "History", dict[str, Any]]:
    """Train model ``name`` on ``data`` (a :class:`Splits`, or a data set's name, loaded once here).

    Unset arguments take the model's defaults (``MODELS[name].train_settings``: a number of steps);
    ``overrides`` change constructor arguments; ``sample_quality=False`` skips the sample scores (faster, for sweeps);
    ``binarize``/``download`` apply when ``data`` is a name (``download=True`` lets ``"mnist"`` fetch
    full MNIST, the only network access). ``threads`` defaults to the model's ``ModelSpec.threads``.
    Under ``torchrun`` every process trains its share of each batch (:func:`dgm.train.fit`).
    Ctrl-C raises :class:`~dgm.train.TrainingInterrupted` carrying the model (best weights so far),
    its history and a result dict without test metrics.

    Returns ``(model, history, result)``: the trained model (best validation weights), the
    :class:`~dgm.train.History`, and the dict the command line prints as JSON.
    """
    from .train import TrainingInterrupted, default_device, fit, seed_everything

    spec = get(name)
    data = splits(data, binarize=binarize, download=download) if isinstance(data, str) else data
    seed_everything(seed)  # before building: the seed also fixes the random initial weights
    model = build(name, data.train.info(), **(overrides or {}))
    settings = spec.train_settings(data.train.info())
    if budget_seconds is not None and steps is None:
        settings.pop("max_steps", None)  # a benchmark's time budget replaces the default length, not adds to it
    for key, value in (("budget_seconds", budget_seconds), ("max_steps", steps), ("lr", lr),
                       ("batch_size", batch_size), ("eval_every", eval_every)):
        if value is not None:
            settings[key] = value
    device = torch.device(device) if device is not None else default_device()
    train_data, val_data = data.train.x, data.val.x
    if spec.labels:
        if data.train.y is None:
            raise ValueError(f"model {name!r} is conditional and needs labelled data; {data.name!r} has no labels")
        train_data, val_data = (data.train.x, data.train.y), (data.val.x, data.val.y)
    threads = threads if threads is not None else default_threads(name, data.train)
    try:
        history = fit(model, train_data, val_data, seed=seed, device=device, threads=threads,
                      batch_transform=data.train.batch_transform, progress=progress, **settings)
    except TrainingInterrupted as stop:
        stop.model = model
        stop.result = _run_record(name, data.name, seed, model, stop.history, device, settings, interrupted=True)
        raise
    result = _run_record(name, data.name, seed, model, history, device, settings)
    result.update(test_metrics(model, data.test, sample_quality=sample_quality))
    result["train_settings"] = {**settings, "seed": seed}  # last, as the JSON has always printed it
    return model, history, result


def _run_record(name: str, data_name: str, seed: int, model: GenerativeModel, history: "History",
                device: torch.device, settings: dict[str, Any], interrupted: bool = False) -> dict[str, Any]:
    """What a run did, before any test metric: the JSON's first keys (an interrupted run's whole record)."""
    record: dict[str, Any] = {"model": name, "data": data_name, "seed": seed}
    if interrupted:
        record["interrupted"] = True
    # CPU seconds beside the wall clock: on a machine busy with other work the wall clock says more about
    # the load than about the model, while one thread's CPU time barely changes
    record.update({"train_seconds": round(history.seconds, 3), "train_cpu_seconds": round(history.cpu_seconds, 3),
                   "steps": history.steps})
    if not interrupted:
        record["stopped_because"] = history.stopped_because
    record.update({"best_step": history.best_step, "val_score": history.best_val,
                   "params": model.num_parameters(), "device": str(device)})
    if interrupted:
        record["train_settings"] = {**settings, "seed": seed}
    return record


@torch.no_grad()
def test_metrics(model: GenerativeModel, test: "DataSplit | str", sample_quality: bool = True,
                 sample_n: int | None = None, binarize: str | None = None) -> dict[str, Any]:
    """The family's metrics on the ``test`` split (or data set ``test``'s, loaded here), keys prefixed ``test_``.

    With ``sample_quality`` also :func:`score_samples` of the model's samples, so every family is
    scored the same way (``sample_n`` overrides how many samples that draws). For toy sets also
    ``entropy_nats`` (the best reachable NLL, Monte Carlo, with ``entropy_se``) and
    ``test_true_nll_nats``: the true density's NLL on the same points, so
    ``test_nll_nats - test_true_nll_nats`` estimates KL(p_data || model) without the test sample's noise.
    """
    test = data_module.load(test, "test", binarize=binarize) if isinstance(test, str) else test
    model.eval()
    torch.manual_seed(0)  # stochastic estimates (IWAE, dequantisation, bounds) repeat exactly: eval = train's JSON
    scores: dict[str, Any] = {f"test_{k}": v for k, v in model.evaluate(test.x.to(model.device)).items()}
    if sample_quality:
        scores.update(score_samples(model, test, n=sample_n))
        scores.update(getattr(model, "sample_info", {}))  # e.g. a diffusion model's sampler and its steps
    if test.density is not None:
        entropy, se = test.density.entropy()
        scores["entropy_nats"] = entropy
        scores["entropy_se"] = se
        scores["test_true_nll_nats"] = float(-test.density.log_prob(test.x.double()).mean())
    return scores


@torch.no_grad()
def score_samples(model: GenerativeModel, test: "DataSplit | str", n: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """Score ``model.sample(n)`` against the ``test`` split (or data set ``test``'s), for any family.

    * ``ring-sharp``, ``grid-sharp``: :func:`~dgm.metrics.mode_coverage` of 2,500 samples
      (``modes_captured``, ``high_quality_frac``), ``mode_std_ratio`` (:func:`~dgm.metrics.mode_spread`
      of the samples over that of as many test points: 1.0 is perfect) and ``energy_distance``;
    * other 2-D toys: :func:`~dgm.metrics.energy_distance` of 2,000 samples to the first 2,000 test points;
    * images: 1,000 samples; ``fd``, the :func:`~dgm.metrics.frechet_distance` to the test split in the
      digit classifier's feature space, and :func:`~dgm.metrics.class_balance` of its labels; a
      conditional model (attribute ``num_classes``, ``sample(n, labels=...)``) also gets
      ``class_accuracy``, the fraction classified as the requested digit; a guided one (method
      ``score_guidance``, e.g. :class:`~dgm.flow_matching.FlowMatching`) gets both scores again at each
      guidance weight ``w`` of its sweep, as ``class_accuracy_w{w}`` and ``fd_w{w}``.

    Also ``sample_ms_per_example``, the wall time of drawing the samples, and ``sampling_passes``,
    the sequential network evaluations that took (:meth:`~dgm.base.GenerativeModel.sampling_passes`).
    """
    test = data_module.load(test, "test") if isinstance(test, str) else test
    torch.manual_seed(seed)
    conditional = getattr(model, "num_classes", None)
    sharp = test.name in SHARP_TOYS
    n = n or ((2500 if sharp else 2000) if test.kind == "points" else 1000)
    labels = torch.arange(n, device=model.device) % conditional if conditional else None
    start = time.perf_counter()
    samples = model.sample(n, labels=labels) if conditional else model.sample(n)
    elapsed = time.perf_counter() - start
    samples = samples.detach().cpu()
    result: dict[str, float] = {"sample_ms_per_example": 1000 * elapsed / n}
    if hasattr(model, "sampling_passes"):  # anything with sample(n) can be scored, e.g. real data
        result["sampling_passes"] = model.sampling_passes()
    if test.kind == "points":
        reference = test.x[:n] if sharp else test.x[:2000]
        if sharp:
            means, std = test.density.means, test.density.std
            result.update(metrics.mode_coverage(samples.float(), means, std))
            result["mode_std_ratio"] = (metrics.mode_spread(samples.float(), means, std)
                                        / metrics.mode_spread(reference, means, std))
        result["energy_distance"] = metrics.energy_distance(samples.float(), reference)
        return result
    from .classifier import load_classifier

    classifier = load_classifier(test.name)
    test_features = classifier.features(test.x)
    result["fd"] = metrics.frechet_distance(classifier.features(samples), test_features)
    predicted = classifier.predict(samples)
    result["class_balance"] = metrics.class_balance(predicted)
    if conditional:
        result["class_accuracy"] = float((predicted == labels.cpu()).double().mean())
        if hasattr(model, "score_guidance"):  # a guided model: the same scores at each weight of its sweep

            def guided_scores(drawn: torch.Tensor) -> dict[str, float]:
                drawn = drawn.detach().cpu()
                return {"class_accuracy": float((classifier.predict(drawn) == labels.cpu()).double().mean()),
                        "fd": metrics.frechet_distance(classifier.features(drawn), test_features)}

            result.update(model.score_guidance(n, labels, guided_scores))
    return result


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> tuple[GenerativeModel, dict]:
    """Rebuild the model saved at ``path``; returns ``(model, checkpoint dict)``.

    The file is verified first (:func:`dgm.checkpoints.load`: a dgm checkpoint, its weights matching
    their stored digest and finite); every problem is a :class:`~dgm.checkpoints.CheckpointError`
    (a ``ValueError``) whose one line says what the file is and what to do.
    """
    from .checkpoints import CheckpointError, load

    ckpt = load(path, map_location=map_location)
    name = ckpt["model"]
    if name not in MODELS:
        raise CheckpointError(f"{path} holds a model named {name!r}, which this dgm does not know "
                              f"(known: {', '.join(sorted(MODELS))}); was it written by another program?")
    try:
        model = MODELS[name].cls(**ckpt["config"])
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{path}: its config does not build a {name!r} model ({err}); "
                              "it was written by another version of dgm: train it again") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"{path}: its weights do not fit a {name!r} model built from its config "
                              f"({first}); train it again") from None
    model.eval()
    return model, ckpt
