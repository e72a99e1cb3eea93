"""One training loop for every family: :func:`fit`.

The loop knows nothing about any model: it asks the model for its
optimizers (``configure_optimizers``), calls ``training_step`` on shuffled
minibatches, scores the validation split (``validation_score``) every
``eval_every`` steps, keeps the best weights (early stopping with
``patience``), and stops at ``max_steps``, at ``budget_seconds`` of wall
clock, or when validation stops improving, whichever comes first.

>>> history = fit(model, train.x, val.x, budget_seconds=30, seed=0)
>>> history.best_val, history.stopped_because
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .base import GenerativeModel


@dataclass
class History:
    """What happened during :func:`fit`.

    ``train`` holds ``(step, {name: value})`` per logged step (averaged over the
    steps since the last log); ``val`` holds ``(step, score)`` per evaluation.
    """

    train: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_val: float | None = None
    steps: int = 0
    seconds: float = 0.0
    stopped_because: str = ""

    def curve(self, name: str = "loss") -> tuple[list[int], list[float]]:
        """Steps and values of one logged training quantity, for plotting."""
        return [s for s, _ in self.train], [d[name] for _, d in self.train]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so runs repeat exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _progress_bar(total: int | None, enabled: bool | str):
    """A tqdm bar: a widget in notebooks, text in terminals, nothing when off.

    ``DGM_PROGRESS=off|text|auto`` in the environment overrides ``enabled="auto"``
    (the book build sets ``off`` so no widget state lands in the static HTML).
    In a terminal the text bar only shows when stderr is a TTY, so logs stay clean.
    """
    mode = os.environ.get("DGM_PROGRESS", "auto") if enabled == "auto" else ("auto" if enabled else "off")
    if mode == "off":
        return None
    in_notebook = "ipykernel" in sys.modules
    if mode == "auto" and in_notebook:
        from tqdm.notebook import tqdm

        return tqdm(total=total, unit="step", leave=False)
    from tqdm.std import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False, mininterval=0.5,
                disable=None if not in_notebook else False)


def fit(
    model: GenerativeModel,
    train: torch.Tensor,
    val: torch.Tensor | None = None,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    max_steps: int | None = None,
    budget_seconds: float | None = None,
    eval_every: int = 100,
    patience: int | None = 10,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    initialize: bool = True,
    progress: bool | str = "auto",
) -> History:
    """Train ``model`` on ``train`` and return its :class:`History`.

    Args:
        model: any :class:`~dgm.base.GenerativeModel`.
        train: training examples ``(N, *data_shape)``.
        val: validation examples for early stopping, or ``None``.
        batch_size: minibatch size (capped at ``N``).
        lr: learning rate handed to ``model.configure_optimizers``.
        max_steps: stop after this many optimizer steps.
        budget_seconds: stop once this much wall-clock time has passed
            (including validation); at least one of ``max_steps`` and
            ``budget_seconds`` must be given.
        eval_every: steps between validation scores.
        patience: stop after this many evaluations without improvement;
            ``None`` never stops early. The best weights are restored at the end.
        seed: seeds parameter init, shuffling and sampling in the step.
        device: ``"cpu"``, ``"cuda"`` or ``None`` for :func:`default_device`.
        batch_transform: applied to each training batch (e.g. dynamic
            binarization, ``DataSplit.batch_transform``).
        initialize: call ``model.initialize(train)`` once before training.
        progress: ``True``/``False`` or ``"auto"`` (see ``DGM_PROGRESS``).

    Raises:
        FloatingPointError: a loss became NaN or infinite; the message names the step.
    """
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"fit expects a dgm GenerativeModel, got {type(model).__name__}")
    if max_steps is None and budget_seconds is None:
        raise ValueError("give max_steps or budget_seconds (or both) so training knows when to stop")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if budget_seconds is not None and budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
    if not torch.is_tensor(train) or len(train) == 0:
        raise ValueError("train must be a non-empty tensor of examples, e.g. dgm.data.load(...).x")
    if val is not None and len(val) == 0:
        raise ValueError("val is empty; pass None to train without validation")
    if eval_every <= 0 or batch_size <= 0:
        raise ValueError("eval_every and batch_size must be positive")

    device = torch.device(device) if device is not None else default_device()
    seed_everything(seed)
    model.to(device)
    # built before the clock starts: the first optimizer pays a one-off import cost (~1 s)
    optimizers = model.configure_optimizers(lr)
    start = time.perf_counter()
    train = train.to(device)
    val = val.to(device) if val is not None else None
    if initialize:
        model.initialize(train)

    history = History()
    best_state = None
    bad_evals = 0
    batch_size = min(batch_size, len(train))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(len(train), generator=gen)
    cursor = 0
    running: dict[str, float] = {}
    running_count = 0
    bar = _progress_bar(max_steps, progress)

    def out_of_time() -> bool:
        return budget_seconds is not None and time.perf_counter() - start >= budget_seconds

    def evaluate(step: int) -> bool:
        """Score val, keep the best weights; return True when patience ran out."""
        nonlocal best_state, bad_evals
        model.eval()
        score = _validation(model, val)
        model.train()
        if score is None:
            return False
        if not math.isfinite(score):
            raise FloatingPointError(
                f"validation score became {score} at step {step}; "
                f"try a lower learning rate (now {lr}) or check the data range"
            )
        history.val.append((step, score))
        if history.best_val is None or score < history.best_val:
            history.best_val, history.best_step = score, step
            best_state = copy.deepcopy(model.state_dict())
            bad_evals = 0
        else:
            bad_evals += 1
        return patience is not None and bad_evals >= patience

    model.train()
    step = 0
    # score the starting point too, so a closed-form initialisation that
    # training cannot improve on is what early stopping keeps
    evaluate(0)
    history.stopped_because = "max_steps"
    while True:
        if max_steps is not None and step >= max_steps:
            history.stopped_because = "max_steps"
            break
        if out_of_time():
            history.stopped_because = "budget_seconds"
            break
        if cursor + batch_size > len(train):
            order = torch.randperm(len(train), generator=gen)
            cursor = 0
        batch = train[order[cursor : cursor + batch_size].to(device)]
        cursor += batch_size
        if batch_transform is not None:
            batch = batch_transform(batch)
        losses = model.training_step(batch, optimizers)
        step += 1
        values = {k: float(v) for k, v in losses.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{name} became {value} at step {step}: try a lower learning rate (now {lr}), "
                    f"a smaller batch or gradient clipping, and check that the data is in the range "
                    f"the model expects (e.g. integer levels for categorical pixels)"
                )
            running[name] = running.get(name, 0.0) + value
        running_count += 1
        if bar is not None:
            bar.update(1)
        if step % eval_every == 0:
            history.train.append((step, {k: v / running_count for k, v in running.items()}))
            running, running_count = {}, 0
            if bar is not None:
                bar.set_postfix({k: f"{v:.3f}" for k, v in history.train[-1][1].items()}, refresh=False)
            if evaluate(step):
                history.stopped_because = "early_stopping"
                break
    if running_count:
        history.train.append((step, {k: v / running_count for k, v in running.items()}))
    if step % eval_every != 0 and history.stopped_because != "early_stopping" and step > 0:
        evaluate(step)
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.steps = step
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def _validation(model: GenerativeModel, val: torch.Tensor | None, batch_size: int = 1000) -> float | None:
    """Mean of ``model.validation_score`` over ``val`` in chunks (weighted by chunk size)."""
    if val is None:
        return None
    total, count = 0.0, 0
    for chunk in torch.split(val, batch_size):
        score = model.validation_score(chunk)
        if score is None:
            return None
        total += score * len(chunk)
        count += len(chunk)
    return total / count
