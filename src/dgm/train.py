"""One training loop for every family: :func:`fit`.

The loop knows nothing about any model: it asks the model for its
optimizers (``configure_optimizers``), calls ``training_step`` on shuffled
minibatches, scores the validation split (``validation_score``) every
``eval_every`` steps, keeps the best weights (early stopping with
``patience``), and stops at ``max_steps``, at ``budget_seconds`` of wall
clock, or when validation stops improving, whichever comes first.

The model's ``lr_schedule`` (constant, cosine, halving) is applied here, as
a function of the fraction of the run done, so it ends where the run ends
whatever ``max_steps`` or ``budget_seconds`` is.

Under ``torchrun`` (a process group is initialised, see
:func:`init_distributed_from_env`) each of the N processes takes its
``batch_size / N`` share of every global batch (same seeded order
everywhere), gradients are averaged across processes, and all processes
stop at the same step: the run follows the single-process one with the
same global batch.

Ctrl-C stops training cleanly: the best weights so far are restored and
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``) carries the history.

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
    #: CPU time of the whole process over the same span: unlike ``seconds``, it barely grows when
    #: other programs share the machine (with one thread it is the work done)
    cpu_seconds: float = 0.0
    stopped_because: str = ""

    def curve(self, name: str = "loss") -> tuple[list[int], list[float]]:
        """Steps and values of one logged training quantity, for plotting."""
        return [s for s, _ in self.train], [d[name] for _, d in self.train]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`fit`. The model already holds its best weights so far (as at a normal
    end); ``history`` says how many steps were done. :func:`dgm.run.train` adds ``model``."""

    def __init__(self, history: History) -> None:
        super().__init__(f"training interrupted after {history.steps} steps")
        self.history = history
        self.model: GenerativeModel | None = None
        self.result: dict | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so runs repeat exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of this process under ``torchrun``, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env(device: torch.device | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment.

    ``torchrun --nproc_per_node=N -m dgm train ...`` starts N copies of the
    command with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set; each copy calls
    this once. Backend: NCCL on GPUs, gloo on CPUs. Returns ``(rank, world_size)``;
    without ``torchrun`` (``WORLD_SIZE`` unset or 1) does nothing and returns ``(0, 1)``.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return process_group()
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return process_group()


def _average_gradients_across_processes(model: GenerativeModel, world: int) -> list:
    """After each backward, replace every gradient by its mean over the processes.

    A hook per parameter rather than ``DistributedDataParallel``: DDP only sees
    ``forward``, while our models train through ``loss``/``training_step``
    (a GAN even runs two backward passes per step). With equal shares of a
    global batch, the mean of the per-process gradients is the gradient of the
    global batch's mean loss, so N processes take the same steps as one.
    """
    import torch.distributed as dist

    def hook(param: torch.Tensor) -> None:
        dist.all_reduce(param.grad)
        param.grad.div_(world)

    return [p.register_post_accumulate_grad_hook(hook) for p in model.parameters() if p.requires_grad]


def _any_process(flag: bool, world: int) -> bool:
    """True if ``flag`` is true on any process: every process must stop at the same step."""
    if world == 1:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _progress_bar(total: int | None, enabled: bool | str):
    """A tqdm bar: a widget in notebooks, text in terminals, nothing when off.

    ``DGM_PROGRESS=auto|on|text|off`` in the environment overrides ``enabled="auto"``.
    A notebook run unattended (the book build, nbmake: :func:`dgm.live_notebook` is False) never
    shows one, whatever the setting, so no dead widget or bar text lands in the built pages.
    In a terminal the text bar only shows when stderr is a TTY, so logs stay clean.
    """
    from . import live_notebook, progress_setting

    mode = progress_setting() if enabled == "auto" else ("auto" if enabled else "off")
    in_notebook = "ipykernel" in sys.modules
    if mode == "off" or (in_notebook and not live_notebook()):
        return None
    if mode == "auto" and in_notebook:
        from tqdm.notebook import tqdm

        return tqdm(total=total, unit="step", leave=False)
    from tqdm.std import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False, mininterval=0.5,
                disable=None if not in_notebook else False)


def fit(
    model: GenerativeModel,
    train: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    val: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
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
    threads: int | None = None,
) -> History:
    """Train ``model`` on ``train`` and return its :class:`History`.

    Args:
        model: any :class:`~dgm.base.GenerativeModel`.
        train: training examples ``(N, *data_shape)``, or a pair ``(x, y)``
            of examples and labels ``(N,)`` for conditional models: then
            ``training_step`` gets ``(x_batch, y_batch)`` pairs.
        val: validation examples (a pair where ``train`` is one) for early
            stopping, or ``None``.
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
        threads: CPU threads for the run (``torch.set_num_threads``, restored afterwards);
            ``None`` keeps the current setting. Small models run faster on one thread when
            anything else is busy (the registry's defaults say which).

    Under ``torchrun`` and on Ctrl-C it behaves as the module's docstring says.

    Raises:
        FloatingPointError: a loss became NaN or infinite; the message names the step.
        TrainingInterrupted: Ctrl-C; the model holds the best weights so far.
    """
    train, labels = _check_fit_arguments(model, train, val, batch_size, lr, max_steps, budget_seconds,
                                         eval_every, threads)
    # what initialize() and the checks see: with a batch transform (dynamic binarisation), one transformed
    # copy, drawn on a side stream so the training noise is the same as without it
    first_view = train
    if batch_transform is not None:
        with torch.random.fork_rng(devices=[]):
            first_view = batch_transform(train)
    # the whole split is checked once here, so a bad value fails before step 1, not mid-run
    model.check_input(first_view if labels is None else (first_view, labels), "training_step")
    if val is not None:
        model.check_input(val, "loss")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _fit(model, train, labels, val, first_view if initialize else None, batch_size=batch_size, lr=lr,
                    max_steps=max_steps, budget_seconds=budget_seconds, eval_every=eval_every,
                    patience=patience, seed=seed, device=device, batch_transform=batch_transform,
                    progress=progress)
    finally:
        torch.set_num_threads(previous_threads)


def _check_fit_arguments(model, train, val, batch_size, lr, max_steps, budget_seconds, eval_every,
                         threads) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Refuse arguments that cannot train; returns ``(examples, labels or None)``."""
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"fit expects a dgm GenerativeModel, got {type(model).__name__}")
    if max_steps is None and budget_seconds is None:
        raise ValueError("give max_steps or budget_seconds (or both) so training knows when to stop")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if budget_seconds is not None and budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
    labels = None
    if isinstance(train, (tuple, list)):
        if len(train) != 2 or not all(torch.is_tensor(t) for t in train) or len(train[0]) != len(train[1]):
            raise ValueError("a labelled train set must be a pair (x, y) of tensors with one label per "
                             "example, e.g. (split.x, split.y)")
        train, labels = train
    if not torch.is_tensor(train) or len(train) == 0:
        raise ValueError("train must be a non-empty tensor of examples, e.g. dgm.data.load(...).x")
    if val is not None and len(val) == 0:
        raise ValueError("val is empty; pass None to train without validation")
    if eval_every <= 0 or batch_size <= 0:
        raise ValueError("eval_every and batch_size must be positive")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 (nothing trains at {lr!r}), e.g. 1e-3")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return train, labels


class _Batches:
    """Minibatches in a seeded random order, reshuffled after each pass; under ``torchrun`` each
    process takes its share of every global batch."""

    def __init__(self, x, labels, batch_size: int, seed: int, transform, rank: int, world: int) -> None:
        self.x, self.labels, self.transform, self.rank, self.world = x, labels, transform, rank, world
        self.batch_size = min(batch_size, len(x))
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.order = torch.randperm(len(x), generator=self.generator)
        self.cursor = 0

    def next(self):
        if self.cursor + self.batch_size > len(self.x):
            self.order = torch.randperm(len(self.x), generator=self.generator)
            self.cursor = 0
        indices = self.order[self.cursor : self.cursor + self.batch_size]
        if self.world > 1:
            indices = indices.tensor_split(self.world)[self.rank]  # this process's share
        indices = indices.to(self.x.device)
        self.cursor += self.batch_size
        batch = self.x[indices]
        if self.transform is not None:
            batch = self.transform(batch)
        return batch if self.labels is None else (batch, self.labels[indices])


class _BestWeights:
    """Scores the validation split, keeps a copy of the best weights, and counts evaluations
    without improvement (early stopping)."""

    def __init__(self, model: GenerativeModel, val, patience: int | None, history: History, lr: float) -> None:
        self.model, self.val, self.patience, self.history, self.lr = model, val, patience, history, lr
        self.state: dict | None = None
        self.bad_evals = 0

    def evaluate(self, step: int) -> bool:
        """Score val at ``step``; True when patience has run out."""
        self.model.eval()
        score = _validation(self.model, self.val)
        self.model.train()
        if score is None:
            return False
        if not math.isfinite(score):
            raise FloatingPointError(f"validation score became {score} at step {step}; "
                                     f"try a lower learning rate (now {self.lr}) or check the data range")
        self.history.val.append((step, score))
        if self.history.best_val is None or score < self.history.best_val:
            self.history.best_val, self.history.best_step = score, step
            self.state = copy.deepcopy(self.model.state_dict())
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)


class _RunProgress:
    """The fraction of the run done: steps over ``max_steps`` or seconds over ``budget_seconds``,
    whichever is further along, read once per step. Learning-rate schedules are functions of it."""

    def __init__(self, max_steps: int | None, budget_seconds: float | None) -> None:
        self.max_steps, self.budget_seconds = max_steps, budget_seconds
        self.start, self.fraction = time.perf_counter(), 0.0  # the first step runs at the starting rate

    def advance(self, step: int) -> None:
        done = step / self.max_steps if self.max_steps else 0.0
        if self.budget_seconds is not None:
            done = max(done, (time.perf_counter() - self.start) / self.budget_seconds)
        self.fraction = min(done, 1.0)


class _LearningRates:
    """``model.lr_schedule`` applied to every optimizer: one ``LambdaLR`` each, stepped after every
    training step. Each parameter group also carries the current factor as ``lr_factor``, for models
    whose other weights follow the rate (the GAN's R1 penalty)."""

    def __init__(self, model: GenerativeModel, optimizers: list, progress: _RunProgress) -> None:
        from .base import check_lr_schedule, lr_schedule_factor

        schedule = check_lr_schedule(model.lr_schedule)
        self.factor = lambda: lr_schedule_factor(schedule, progress.fraction)  # noqa: E731
        self.schedulers = [] if schedule == "constant" else [
            torch.optim.lr_scheduler.LambdaLR(opt, lambda _: self.factor()) for opt in optimizers]
        self.optimizers = optimizers
        self._mark()

    def step(self) -> None:
        for scheduler in self.schedulers:
            scheduler.step()
        self._mark()

    def _mark(self) -> None:
        factor = self.factor() if self.schedulers else 1.0
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr_factor"] = factor


class _RunningMeans:
    """The logged losses: averages over the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def flush(self, step: int, history: History) -> dict[str, float] | None:
        if not self.count:
            return None
        means = {k: v / self.count for k, v in self.sums.items()}
        history.train.append((step, means))
        self.sums, self.count = {}, 0
        return means


def _step_values(losses: dict[str, torch.Tensor], step: int, lr: float, world: int) -> dict[str, float]:
    """A step's losses as floats (the global batch's under ``torchrun``); a NaN or inf stops the run."""
    values = {k: float(v) for k, v in losses.items()}
    if world > 1:  # log the global batch's loss: the mean of the processes' shares
        import torch.distributed as dist

        stacked = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(stacked)
        values = dict(zip(values, (stacked / world).tolist()))
    for name, value in values.items():
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{name} became {value} at step {step}: try a lower learning rate (now {lr}), "
                f"a smaller batch or gradient clipping, and check that the data is in the range "
                f"the model expects (e.g. integer levels for categorical pixels)")
    return values


def _fit(model, train, labels, val, first_view, *, batch_size, lr, max_steps, budget_seconds, eval_every,
         patience, seed, device, batch_transform, progress) -> History:
    """The loop itself: set up, then step, log and evaluate until a stopping rule says stop."""
    device = torch.device(device) if device is not None else default_device()
    rank, world = process_group()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world} processes, "
                         "so each takes an equal share of the global batch")
    seed_everything(seed)  # the same seed on every process: the same order, initialisation, noise
    model.to(device)
    # built before the clock starts: the first optimizer pays a one-off import cost (~1 s)
    optimizers = model.configure_optimizers(lr)
    start, cpu_start = time.perf_counter(), time.process_time()
    progress_of_run = _RunProgress(max_steps, budget_seconds)
    learning_rates = _LearningRates(model, optimizers, progress_of_run)
    train, labels = train.to(device), labels.to(device) if labels is not None else None
    val = tuple(t.to(device) for t in val) if isinstance(val, (tuple, list)) else val
    val = val.to(device) if torch.is_tensor(val) else val
    if first_view is not None:
        first_view = first_view.to(device)
        model.initialize(first_view if labels is None else (first_view, labels))
    hooks = _average_gradients_across_processes(model, world) if world > 1 else []
    history, log, bar = History(), _RunningMeans(), _progress_bar(max_steps, progress)
    batches = _Batches(train, labels, batch_size, seed, batch_transform, rank, world)
    best = _BestWeights(model, val, patience, history, lr)
    model.train()
    step = 0
    best.evaluate(0)  # the starting point too: a closed-form initialisation may be what to keep
    history.stopped_because = "max_steps"
    try:  # Ctrl-C: stop here, keep the best weights so far, and tell the caller
        while max_steps is None or step < max_steps:
            if budget_seconds is not None and _any_process(time.perf_counter() - start >= budget_seconds, world):
                history.stopped_because = "budget_seconds"
                break
            values = _step_values(model.training_step(batches.next(), optimizers), step + 1, lr, world)
            step += 1
            progress_of_run.advance(step)
            learning_rates.step()
            log.add(values)
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0:
                means = log.flush(step, history)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
                if _any_process(best.evaluate(step), world):
                    history.stopped_because = "early_stopping"
                    break
    except KeyboardInterrupt:
        history.stopped_because = "interrupted"
    log.flush(step, history)
    if step % eval_every != 0 and history.stopped_because not in ("early_stopping", "interrupted") and step > 0:
        best.evaluate(step)
    if bar is not None:
        bar.close()
    for handle in hooks:
        handle.remove()
    best.restore()
    model.eval()
    history.steps, history.seconds = step, time.perf_counter() - start
    history.cpu_seconds = time.process_time() - cpu_start
    if history.stopped_because == "interrupted":
        raise TrainingInterrupted(history)
    return history


@torch.no_grad()
def _validation(model: GenerativeModel, val: torch.Tensor | tuple[torch.Tensor, ...] | None,
                batch_size: int = 1000) -> float | None:
    """Mean of ``model.validation_score`` over ``val`` in chunks (weighted by chunk size)."""
    if val is None:
        return None
    chunks = (list(zip(*(torch.split(t, batch_size) for t in val))) if isinstance(val, tuple)
              else torch.split(val, batch_size))
    total, count = 0.0, 0
    for chunk in chunks:
        score = model.validation_score(chunk)
        if score is None:
            return None
        size = len(chunk[0]) if isinstance(chunk, tuple) else len(chunk)
        total += score * size
        count += size
    return total / count
