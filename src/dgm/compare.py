"""Every family on the same data, measured the same way: ``python -m dgm compare``.

One row per chapter's main model on ``digits``: the test negative
log-likelihood in nats (exact, or the kind of bound the family offers),
bits per dimension, the Fréchet distance of 1,000 samples to the test split in
the digit classifier's feature space, the samples' class balance, training
seconds, sampling milliseconds per image, sequential network passes per
sample, and parameters.

By default the rows come from the shipped checkpoints in ``data/checkpoints/``
(each made by the command recorded in its ``manifest.json``; training seconds
are the recorded ones, everything else is measured again now); ``train=True``
(``--train``) retrains every model with its registry defaults instead.

    python -m dgm compare                    # Markdown table from the checkpoints
    python -m dgm compare --format json
    python -m dgm compare --train --budget-seconds 60
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import registry, run
from .classifier import CHECKPOINT_DIR

#: (model name, chapter, family): the chapters' main model for each family
ENTRIES: list[tuple[str, int, str]] = [
    ("independent", 1, "independent pixels"),
    ("pixelcnn", 2, "autoregressive"),
    ("vae", 3, "VAE"),
    ("dcgan", 4, "GAN"),
    ("realnvp", 5, "normalizing flow"),
    ("ddpm", 6, "diffusion"),
    ("fm", 7, "flow matching"),
]

COLUMNS = ["family", "ch", "model", "sampler", "nll_nats", "nll_kind", "bpd", "fd", "class_balance",
           "steps", "train_seconds", "sample_ms", "sampling_passes", "params"]


def likelihood_of(metrics: dict[str, Any]) -> tuple[float | None, str]:
    """The family's test NLL in nats and what kind of number it is.

    Exact log-likelihoods (independent pixels, autoregressive models) are the
    real thing; a VAE offers its importance-weighted estimate (k >= 1000, an
    upper bound on the NLL in expectation) and its -ELBO; a flow on discrete
    data a dequantised bound; a diffusion model its variational bound; a GAN
    nothing at all.
    """
    if "test_nll_bound_nats" in metrics:
        return metrics["test_nll_bound_nats"], "bound (dequantised)"
    if "test_neg_elbo_nats" in metrics and "test_nll_nats" in metrics:
        return metrics["test_nll_nats"], "IWAE estimate"
    if "test_neg_elbo_nats" in metrics:
        return metrics["test_neg_elbo_nats"], "bound (-ELBO)"
    if "test_nll_nats" in metrics:
        return metrics["test_nll_nats"], "exact"
    return None, "none (implicit)"


def sampler_label(model) -> str | None:
    """Which sampler drew the samples behind a row's FD and timing, for models that have several.

    A diffusion model's bound is the likelihood bound of its *ancestral* (DDPM)
    sampler, while its default sampler for images is deterministic DDIM with
    fewer steps: the table must say which one a row's sample numbers come from.
    ``None`` for families with a single way to sample.
    """
    sampler = getattr(model, "sampler", None)
    if sampler is not None and hasattr(model, "evaluations"):  # flow matching: an ODE solver
        return f"{sampler.capitalize()} ODE solver, {model.sample_steps} steps"
    if sampler is None or not hasattr(model, "schedule"):
        return None
    steps = model.schedule.timesteps
    if sampler == "ddpm":
        return f"DDPM (ancestral), {steps} steps"
    return f"DDIM, {model.sample_steps or steps} steps, η = {model.eta:g}"


def _row(name: str, chapter: int, family: str, data_name: str, model, train_seconds: float,
         metrics: dict[str, Any]) -> dict[str, Any]:
    nll, kind = likelihood_of(metrics)
    sampler = sampler_label(model)
    if sampler is not None and nll is not None and hasattr(model, "schedule"):
        kind = f"{kind} of the DDPM sampler"  # the bound is the ancestral model's, whatever sampler drew the FD
    dims = math.prod(model.config.get("shape", (1,))) if "shape" in model.config else None
    return {
        "family": family, "ch": chapter, "model": name, "sampler": sampler, "data": data_name,
        "nll_nats": nll, "nll_kind": kind,
        "bpd": nll / (dims * math.log(2)) if nll is not None and dims else None,
        "neg_elbo_nats": metrics.get("test_neg_elbo_nats"),
        "fd": metrics.get("fd"), "class_balance": metrics.get("class_balance"),
        "steps": metrics.get("steps"), "train_seconds": train_seconds,
        "sample_ms": metrics.get("sample_ms_per_example"),
        "sampling_passes": metrics.get("sampling_passes"), "params": model.num_parameters(),
    }


def compare(data_name: str = "digits", *, train: bool = False, budget_seconds: float | None = None,
            seed: int = 0, models: list[str] | None = None, sample_n: int | None = None,
            checkpoint_dir: str | Path = CHECKPOINT_DIR) -> list[dict[str, Any]]:
    """Measure every family on ``data_name``; returns one dict per model (keys :data:`COLUMNS` and more).

    ``sample_n``: samples per model for FD and timing (default 1,000; fewer is
    faster and makes FD larger, so compare only numbers made with the same n).
    """
    wanted = [entry for entry in ENTRIES if models is None or entry[0] in models]
    if models is not None and len(wanted) != len(models):
        unknown = sorted(set(models) - {entry[0] for entry in ENTRIES})
        raise ValueError(f"compare knows {[e[0] for e in ENTRIES]}; not {unknown}")
    from . import data as data_module

    kind = data_module.load(data_name, "val").kind
    unfit = [name for name, _, _ in wanted if kind not in registry.get(name).data_kinds]
    if unfit:
        raise ValueError(f"{', '.join(unfit)} cannot model {data_name!r} ({kind} data): the table compares the "
                         "families on 'digits'; choose models that fit with --models")
    missing = [name for name, _, _ in wanted
               if not train and not (Path(checkpoint_dir) / f"{name}-{data_name}-seed{seed}.pt").exists()]
    if missing:
        first = missing[0]
        raise FileNotFoundError(
            f"no checkpoint for {', '.join(missing)} on {data_name} (seed {seed}) in {checkpoint_dir}; "
            f"retrain the table with `python -m dgm compare --data {data_name} --seed {seed} --train "
            f"--budget-seconds 60`, or make each one, e.g. `python -m dgm train {first} --data {data_name} "
            f"--seed {seed} --out {checkpoint_dir} --manifest`")
    rows = []
    data = run.splits(data_name)  # loaded once for every row
    for name, chapter, family in wanted:
        if train:
            model, history, result = run.train(name, data, seed=seed, budget_seconds=budget_seconds, progress=False)
            rows.append(_row(name, chapter, family, data_name, model, result["train_seconds"], result))
            continue
        path = Path(checkpoint_dir) / f"{name}-{data_name}-seed{seed}.pt"
        model, ckpt = run.load_checkpoint(str(path))
        metrics = run.test_metrics(model, data.test, sample_n=sample_n)
        metrics["steps"] = ckpt["metrics"].get("steps")  # what defines the run (its seconds depend on the machine)
        rows.append(_row(name, chapter, family, data_name, model, ckpt["metrics"]["train_seconds"], metrics))
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (what the chapter and the CLI print)."""
    header = ("| family | ch. | model | NLL (nats) | kind | bits/dim | FD ↓ | class balance | steps | train s "
              "| sample ms/img | passes | params |")
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        lines.append(" | ".join([
            "", r["family"], str(r["ch"]),
            f"`{r['model']}`" + (f" (samples: {r['sampler']})" if r.get("sampler") else ""),
            _fmt(r["nll_nats"]), r["nll_kind"],
            _fmt(r["bpd"], 3), _fmt(r["fd"]), _fmt(r["class_balance"], 2), _fmt(r["steps"]), _fmt(r["train_seconds"], 0),
            _fmt(r["sample_ms"], 3), _fmt(r["sampling_passes"]), _fmt(r["params"]), "",
        ]).strip())
    return "\n".join(lines)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2)
