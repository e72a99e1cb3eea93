"""``python -m dgm``: list, train, evaluate and sample from the book's models.

    python -m dgm list
    python -m dgm train MODEL --data NAME [--steps N | --budget-seconds S] [--seed N] [--out DIR]
    python -m dgm eval CKPT
    python -m dgm sample CKPT -n 64 -o samples.png
    python -m dgm classifier --data digits|mnist5k [--out data/checkpoints]
    python -m dgm compare [--train] [--format markdown|json]

Scale-out: ``--data mnist --download`` trains on full MNIST (opt-in, needs the
internet once); ``--device cuda`` on a GPU; ``torchrun --nproc_per_node=N -m dgm
train ...`` runs N data-parallel processes (gloo on CPU, NCCL on GPUs), each
taking ``batch_size / N`` of every batch, with the same results as one process.

``train`` and ``eval`` print, as their last line on stdout, one JSON object
with ``model``, ``data``, ``seed``, ``train_seconds``, ``params`` and the test
metrics of the family: ``test_nll_nats``/``test_bpd`` for exact likelihoods,
``test_neg_elbo_nats`` for bounds, and ``entropy_nats`` (the best reachable
test NLL) for the 2-D toy sets. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from . import data as data_module
from . import registry, run
from .base import check_settings
from .train import default_device, init_distributed_from_env

#: exit codes (the README's command-line section lists them)
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
#: ``sample`` draws at most this many: a grid of 20 x 20 images is the most that stays readable
MAX_IMAGES, MAX_POINTS = 400, 100_000
THREADS_HELP = "CPU threads (default: 1 for the small models, one per core for the convolutional ones)"


class UsageError(ValueError):
    """A mistake in the command line or its inputs: one line, exit code 2."""


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise UsageError(f"--set expects KEY=VALUE (e.g. --set hidden=64), got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key] = value
    return out


def _device(name: str | None) -> torch.device:
    """``--device``: cpu, cuda (or cuda:N) or mps, checked against what this machine has."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use --device cpu or --device cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is visible on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                         f"numbered from 0; use --device cuda:0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: dgm runs on cpu, cuda or mps, not {device.type}")
    return device


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def _writable_folder(folder: Path, flag: str) -> Path:
    """Make sure ``folder`` exists and takes files, before any work is done (so a bad --out fails now)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {folder} is a file, not a folder; give a folder name (it is created if needed)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {folder}: cannot write there ({err.strerror or err}); "
                         "choose a folder you can write to") from None
    return folder


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed}: must be a whole number from 0 to 2**63 - 1")


def _check_train_args(args: argparse.Namespace) -> None:
    if args.model not in registry.MODELS:
        raise UsageError(f"unknown model {args.model!r}; valid models: {', '.join(sorted(registry.MODELS))}")
    if args.data not in data_module.DATASETS:
        raise UsageError(f"unknown data set {args.data!r}; valid data sets: {', '.join(data_module.DATASETS)}")
    for flag, value, ok, rule in (
        ("--steps", args.steps, lambda v: v >= 0, "a whole number >= 0"),
        ("--budget-seconds", args.budget_seconds, lambda v: math.isfinite(v) and v > 0, "a number of seconds > 0"),
        ("--lr", args.lr, lambda v: math.isfinite(v) and v > 0, "a learning rate > 0, e.g. 1e-3 (nothing trains at 0)"),
        ("--batch-size", args.batch_size, lambda v: v > 0, "a positive whole number"),
        ("--eval-every", args.eval_every, lambda v: v > 0, "a positive whole number of steps"),
    ):
        if value is not None and not ok(value):
            raise UsageError(f"{flag} {value}: must be {rule}")
    if args.binarize is not None and args.data != "mnist5k-bin":
        raise UsageError(f"--binarize applies to --data mnist5k-bin only, not {args.data}")
    if args.download and args.data != "mnist":
        raise UsageError(f"--download applies to --data mnist only ({args.data} ships with the packages)")
    if args.threads is not None and args.threads <= 0:
        raise UsageError(f"--threads {args.threads}: must be a positive whole number")
    _check_seed(args.seed)


def cmd_list(_: argparse.Namespace) -> int:
    print("models:")
    for name, spec in sorted(registry.MODELS.items()):
        steps = {kind: spec.train_settings({"kind": kind})["max_steps"] for kind in spec.data_kinds}
        steps_text = ", ".join(f"{n:,} on {kind}" for kind, n in steps.items()) if len(set(steps.values())) > 1 \
            else f"{next(iter(steps.values())):,}"
        print(f"  {name:14s} {spec.description}  [data: {', '.join(spec.data_kinds)}; default steps: {steps_text}]")
    print("data sets:")
    for name, description in data_module.DATASETS.items():
        print(f"  {name:14s} {description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoints import OutputClaim
    from .train import TrainingInterrupted

    _check_train_args(args)
    overrides = _parse_overrides(args.set)
    spec = registry.get(args.model)
    check_settings(spec.cls, overrides)  # a typo fails now, not after the data has loaded
    device = _device(args.device)
    # under torchrun: join the process group; every process trains, process 0 reports
    rank, world = init_distributed_from_env(device)
    out_dir = _writable_folder(Path(args.out), "--out") if rank == 0 else Path(args.out)
    path = out_dir / f"{args.model}-{args.data}-seed{args.seed}.pt"
    if path.is_dir():
        raise UsageError(f"{path} is a folder; remove it or choose another --out")
    data = run.splits(args.data, binarize=args.binarize, download=args.download)  # loaded once, passed down
    threads = args.threads if args.threads is not None else run.default_threads(args.model, data.train)
    with contextlib.ExitStack() as stack:
        if rank == 0:  # from here until the file is written, no other run may claim it
            stack.enter_context(OutputClaim(path))
        _set_threads(threads)
        print(f"training {args.model} on {args.data} (seed {args.seed}); Ctrl-C stops and keeps the best "
              "weights so far", file=sys.stderr, flush=True)
        interrupted = None
        try:
            model, history, result = run.train(
                args.model, data, seed=args.seed, budget_seconds=args.budget_seconds, steps=args.steps,
                lr=args.lr, batch_size=args.batch_size, device=device, overrides=overrides,
                eval_every=args.eval_every, sample_quality=rank == 0, threads=threads,
            )
        except TrainingInterrupted as stop:
            interrupted = stop
            model, history, result = stop.model, stop.history, dict(stop.result)
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
            result["processes"] = world
            if rank != 0:
                return EXIT_INTERRUPTED if interrupted else 0
        if interrupted is not None and history.steps == 0:
            print("interrupted before the first training step: nothing was saved", file=sys.stderr)
            return EXIT_INTERRUPTED
        _save_run(args, path, model, history, result, record=interrupted is None)
    if interrupted is not None:
        best = f" (best validation score at step {history.best_step})" if history.best_step is not None else ""
        print(f"interrupted after {history.steps} steps: saved the weights so far{best} to {path}, marked "
              f"as interrupted; `python -m dgm eval {path}` measures them", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _save_run(args: argparse.Namespace, path: Path, model, history, result: dict, record: bool) -> None:
    """Write the checkpoint (atomically), record it in the manifest if asked, print the JSON line."""
    from . import checkpoints

    settings = result.pop("train_settings")
    result["checkpoint"] = str(path)
    checkpoints.save({
        "model": args.model,
        "data": args.data,
        "binarize": args.binarize,
        "config": model.config,
        "state_dict": model.state_dict(),
        "train": settings,
        "metrics": result,
        "history": {"train": [[step, values] for step, values in history.train],
                    "val": [[step, score] for step, score in history.val]},
    }, path)
    if args.manifest and record:
        checkpoints.record_in_manifest(path, "python -m dgm " + " ".join(args.argv), result)
    print(json.dumps(result))


def _load(path: str, device: torch.device):
    model, ckpt = run.load_checkpoint(path, map_location=device)
    return model.to(device), ckpt


def cmd_eval(args: argparse.Namespace) -> int:
    device = _device(args.device)
    model, ckpt = _load(args.checkpoint, device)
    test = data_module.load(ckpt["data"], "test", binarize=ckpt.get("binarize"))
    _set_threads(args.threads if args.threads is not None else run.default_threads(ckpt["model"], test))
    recorded = ckpt.get("metrics", {})
    result = {key: recorded.get(key) for key in ("model", "data", "seed", "train_seconds", "steps")}
    result.update({"model": ckpt["model"], "data": ckpt["data"], "params": model.num_parameters()})
    if recorded.get("interrupted"):
        result["interrupted"] = True
    result.update(run.test_metrics(model, test))
    print(json.dumps(result))
    return 0


def _image_path(output: str) -> Path:
    """``-o``: keep a format matplotlib writes (png, pdf, svg, jpg, ...); otherwise add ``.png``."""
    import matplotlib.pyplot as plt

    path = Path(output)
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if path.suffix.lower().lstrip(".") not in formats:
        path = path.with_name(path.name + ".png")
        print(f"note: {output!r} has no image extension; writing PNG to {path}", file=sys.stderr)
    _writable_folder(path.parent if str(path.parent) else Path("."), "-o")
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder; give a file name such as samples.png")
    return path


def cmd_sample(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot
    from .checkpoints import write_atomically

    if args.n <= 0:
        raise UsageError(f"-n {args.n}: the number of samples must be positive")
    _check_seed(args.seed)
    device = _device(args.device)
    output = _image_path(args.output)
    model, ckpt = _load(args.checkpoint, device)
    _set_threads(args.threads if args.threads is not None else run.default_threads(ckpt["model"], ckpt["data"]))
    points = model.data_spec() is not None and len(model.data_spec().shape) == 1
    limit = MAX_POINTS if points else MAX_IMAGES
    n = min(args.n, limit)
    if n < args.n:
        what = "points in one scatter plot" if points else "images in one readable grid"
        print(f"note: -n {args.n} is more than {limit} {what}; drawing {n}", file=sys.stderr)
    torch.manual_seed(args.seed)
    samples = model.sample(n).cpu()
    fig, ax = plt.subplots(figsize=(6, 6))
    if samples.ndim == 2 and samples.shape[1] == 2:
        plot.scatter2d(samples, ax=ax, title=f"{ckpt['model']} on {ckpt['data']}: {n} samples")
    else:
        levels = ckpt["config"].get("num_levels")
        plot.image_grid(samples, levels=levels, ax=ax, title=f"{ckpt['model']} on {ckpt['data']}")
    fmt = output.suffix.lower().lstrip(".")
    write_atomically(output, lambda handle: fig.savefig(handle, format=fmt, dpi=120, bbox_inches="tight"))
    plt.close(fig)
    print(json.dumps({"model": ckpt["model"], "data": ckpt["data"], "n": n, "requested_n": args.n,
                      "output": str(output)}))
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from . import classifier

    if args.epochs <= 0:
        raise UsageError(f"--epochs {args.epochs}: must be a positive whole number")
    _check_seed(args.seed)
    _writable_folder(Path(args.out), "--out")
    model, metrics = classifier.train_classifier(args.data, epochs=args.epochs, seed=args.seed)
    command = f"python -m dgm classifier --data {args.data} --epochs {args.epochs} --seed {args.seed}"
    path = classifier.save_classifier(model, metrics, args.out, command)
    print(json.dumps({**metrics, "checkpoint": str(path)}))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import compare

    if args.budget_seconds is not None and not (math.isfinite(args.budget_seconds) and args.budget_seconds > 0):
        raise UsageError(f"--budget-seconds {args.budget_seconds}: must be a number of seconds > 0")
    if args.data not in data_module.DATASETS:
        raise UsageError(f"unknown data set {args.data!r}; valid data sets: {', '.join(data_module.DATASETS)}")
    _check_seed(args.seed)
    _set_threads(args.threads)

    rows = compare.compare(args.data, train=args.train, budget_seconds=args.budget_seconds, seed=args.seed,
                           models=args.models or None)
    print(compare.to_json(rows) if args.format == "json" else compare.to_markdown(rows))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its mistakes reported as one line (not the whole usage text)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message}; see `{self.prog} -h`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dgm", description="Deep generative models: the course package.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="models and data sets").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train a model, save a checkpoint, print JSON")
    train.add_argument("model", help="model name (see `python -m dgm list`)")
    train.add_argument("--data", required=True, help="data set name (see `python -m dgm list`)")
    train.add_argument("--steps", type=int, default=None,
                       help="optimizer steps (default: the model's, so a seed repeats the run exactly)")
    train.add_argument("--budget-seconds", type=float, default=None,
                       help="wall-clock budget instead of the default steps (for benchmarks: not repeatable)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs", help="folder for the checkpoint (default: runs/)")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--eval-every", type=int, default=None, help="steps between validation scores")
    train.add_argument("--binarize", choices=["fixed", "dynamic"], default=None, help="mnist5k-bin only")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    train.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model constructor overrides")
    train.add_argument("--manifest", action="store_true",
                       help="record the checkpoint, this command and its metrics in OUT/manifest.json")
    train.add_argument("--download", action="store_true",
                       help="--data mnist only: fetch full MNIST through torchvision (needs the internet once)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on the test split, print JSON")
    ev.add_argument("checkpoint")
    ev.add_argument("--device", default=None)
    ev.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    ev.set_defaults(func=cmd_eval)

    sample = sub.add_parser("sample", help="draw samples from a checkpoint into a PNG")
    sample.add_argument("checkpoint")
    sample.add_argument("-n", type=int, default=64, help=f"samples to draw (at most {MAX_IMAGES} images "
                        f"or {MAX_POINTS} points: more is capped, with a note)")
    sample.add_argument("-o", "--output", default="samples.png",
                        help="image file (png, pdf, svg, jpg, ...; other names get .png added)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default=None)
    sample.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    sample.set_defaults(func=cmd_sample)

    cmp = sub.add_parser("compare", help="every family on the same data: one table (chapter 8)")
    cmp.add_argument("--data", default="digits")
    cmp.add_argument("--train", action="store_true", help="retrain every model instead of loading data/checkpoints")
    cmp.add_argument("--budget-seconds", type=float, default=None, help="with --train: budget per model")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--models", nargs="*", default=[], help="a subset of the table's models")
    cmp.add_argument("--format", choices=["markdown", "json"], default="markdown")
    cmp.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    cmp.set_defaults(func=cmd_compare)

    clf = sub.add_parser("classifier", help="train the digit classifier used for FD and class accuracy")
    clf.add_argument("--data", required=True, choices=["digits", "mnist5k"])
    clf.add_argument("--epochs", type=int, default=40)
    clf.add_argument("--seed", type=int, default=0)
    clf.add_argument("--out", default="data/checkpoints", help="folder (default: data/checkpoints, the shipped one)")
    clf.set_defaults(func=cmd_classifier)
    return parser


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line for line in text.strip().splitlines() if line.strip()] or [type(err).__name__]
    return "\n  ".join(lines[:3])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is a short message on stderr and an exit code, never a traceback
    (``DGM_DEBUG=1`` shows the traceback of an unexpected error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)  # argparse's own mistakes: usage line + exit 2
    args.argv = argv  # recorded beside checkpoints (--manifest)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FloatingPointError as err:  # the run diverged: the message says what to try
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, KeyError, FileNotFoundError) as err:  # input problems (UsageError, CheckpointError, ...)
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("error: out of memory; try a smaller --batch-size, smaller --set sizes or fewer samples (-n)",
              file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # noqa: BLE001  not the user's mistake: still one line, the traceback on request
        from . import env_flag

        try:
            debug = env_flag("DGM_DEBUG")
        except ValueError:
            debug = True
        if debug:
            raise
        print(f"error: {type(err).__name__}: {_one_line(err)}\n  (unexpected: rerun with DGM_DEBUG=1 to see "
              "where it happened, and please report it)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
