"""``python -m dgm``: list, train, evaluate and sample from the book's models.

    python -m dgm list
    python -m dgm train MODEL --data NAME [--budget-seconds S] [--steps N] [--seed N] [--out DIR]
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
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from . import data as data_module
from . import registry
from .train import default_device, init_distributed_from_env


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def cmd_list(_: argparse.Namespace) -> int:
    print("models:")
    for name, spec in sorted(registry.MODELS.items()):
        print(f"  {name:14s} {spec.description}  [data: {', '.join(spec.data_kinds)}]")
    print("data sets:")
    for name, description in data_module.DATASETS.items():
        print(f"  {name:14s} {description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    # under torchrun: join the process group; every process trains, process 0 reports
    rank, world = init_distributed_from_env(args.device)
    model, history, result = registry.train(
        args.model, args.data, seed=args.seed, budget_seconds=args.budget_seconds, steps=args.steps,
        lr=args.lr, batch_size=args.batch_size, binarize=args.binarize, device=args.device,
        overrides=_parse_overrides(args.set), download=args.download, eval_every=args.eval_every,
        sample_quality=rank == 0,
    )
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
        result["processes"] = world
        if rank != 0:
            return 0
    settings = result.pop("train_settings")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.model}-{args.data}-seed{args.seed}.pt"
    result["checkpoint"] = str(path)
    torch.save({
        "model": args.model,
        "data": args.data,
        "binarize": args.binarize,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train": settings,
        "metrics": result,
        "history": {"train": [[step, values] for step, values in history.train],
                    "val": [[step, score] for step, score in history.val]},
    }, path)
    if args.manifest:
        _record(path, result, args.argv)
    print(json.dumps(result))
    return 0


def _record(path: Path, metrics: dict, argv: Sequence[str]) -> None:
    """Add the checkpoint, the command that made it and its metrics to ``manifest.json`` beside it."""
    import hashlib

    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    command = "python -m dgm " + " ".join(argv)
    manifest[path.name] = {"command": command, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                           "metrics": metrics}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _load(path: str, device: torch.device):
    if not Path(path).is_file():
        raise SystemExit(f"no checkpoint at {path}; train one with `python -m dgm train MODEL --data NAME`")
    model, ckpt = registry.load_checkpoint(path, map_location=device)
    return model.to(device), ckpt


def cmd_eval(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    model, ckpt = _load(args.checkpoint, device)
    recorded = ckpt.get("metrics", {})
    result = {key: recorded.get(key) for key in ("model", "data", "seed", "train_seconds", "steps")}
    result.update({"model": ckpt["model"], "data": ckpt["data"], "params": model.num_parameters()})
    result.update(registry.test_metrics(model, ckpt["data"], binarize=ckpt.get("binarize")))
    print(json.dumps(result))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot

    device = torch.device(args.device) if args.device else default_device()
    model, ckpt = _load(args.checkpoint, device)
    torch.manual_seed(args.seed)
    samples = model.sample(args.n).cpu()
    fig, ax = plt.subplots(figsize=(6, 6))
    if samples.ndim == 2 and samples.shape[1] == 2:
        plot.scatter2d(samples, ax=ax, title=f"{ckpt['model']} on {ckpt['data']}: {args.n} samples")
    else:
        levels = ckpt["config"].get("num_levels")
        plot.image_grid(samples, levels=levels, ax=ax, title=f"{ckpt['model']} on {ckpt['data']}")
    fig.savefig(args.output, dpi=120, bbox_inches="tight")
    print(json.dumps({"model": ckpt["model"], "data": ckpt["data"], "n": args.n, "output": args.output}))
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from . import classifier

    model, metrics = classifier.train_classifier(args.data, epochs=args.epochs, seed=args.seed)
    command = f"python -m dgm classifier --data {args.data} --epochs {args.epochs} --seed {args.seed}"
    path = classifier.save_classifier(model, metrics, args.out, command)
    print(json.dumps({**metrics, "checkpoint": str(path)}))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import compare

    rows = compare.compare(args.data, train=args.train, budget_seconds=args.budget_seconds, seed=args.seed,
                           models=args.models or None)
    print(compare.to_json(rows) if args.format == "json" else compare.to_markdown(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dgm", description="Deep generative models: the course package.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="models and data sets").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train a model, save a checkpoint, print JSON")
    train.add_argument("model", help="model name (see `python -m dgm list`)")
    train.add_argument("--data", required=True, help="data set name (see `python -m dgm list`)")
    train.add_argument("--budget-seconds", type=float, default=None, help="wall-clock training budget")
    train.add_argument("--steps", type=int, default=None, help="maximum optimizer steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs", help="folder for the checkpoint (default: runs/)")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--eval-every", type=int, default=None, help="steps between validation scores")
    train.add_argument("--binarize", choices=["fixed", "dynamic"], default=None, help="mnist5k-bin only")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model constructor overrides")
    train.add_argument("--manifest", action="store_true",
                       help="record the checkpoint, this command and its metrics in OUT/manifest.json")
    train.add_argument("--download", action="store_true",
                       help="--data mnist only: fetch full MNIST through torchvision (needs the internet once)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on the test split, print JSON")
    ev.add_argument("checkpoint")
    ev.add_argument("--device", default=None)
    ev.set_defaults(func=cmd_eval)

    sample = sub.add_parser("sample", help="draw samples from a checkpoint into a PNG")
    sample.add_argument("checkpoint")
    sample.add_argument("-n", type=int, default=64)
    sample.add_argument("-o", "--output", default="samples.png")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default=None)
    sample.set_defaults(func=cmd_sample)

    cmp = sub.add_parser("compare", help="every family on the same data: one table (chapter 7)")
    cmp.add_argument("--data", default="digits")
    cmp.add_argument("--train", action="store_true", help="retrain every model instead of loading data/checkpoints")
    cmp.add_argument("--budget-seconds", type=float, default=None, help="with --train: budget per model")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--models", nargs="*", default=[], help="a subset of the table's models")
    cmp.add_argument("--format", choices=["markdown", "json"], default="markdown")
    cmp.set_defaults(func=cmd_compare)

    clf = sub.add_parser("classifier", help="train the digit classifier used for FD and class accuracy")
    clf.add_argument("--data", required=True, choices=["digits", "mnist5k"])
    clf.add_argument("--epochs", type=int, default=40)
    clf.add_argument("--seed", type=int, default=0)
    clf.add_argument("--out", default="data/checkpoints", help="folder (default: data/checkpoints, the shipped one)")
    clf.set_defaults(func=cmd_classifier)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded beside checkpoints (--manifest)
    if args.command == "train":
        if args.model not in registry.MODELS:
            parser.error(f"unknown model {args.model!r}; valid models: {', '.join(sorted(registry.MODELS))}")
        if args.data not in data_module.DATASETS:
            parser.error(f"unknown data set {args.data!r}; valid data sets: {', '.join(data_module.DATASETS)}")
        if args.steps is not None and args.steps < 0:
            parser.error("--steps must be >= 0")
        if args.budget_seconds is not None and args.budget_seconds <= 0:
            parser.error("--budget-seconds must be > 0")
    if getattr(args, "n", 1) <= 0:
        parser.error("-n must be positive")
    try:
        return args.func(args)
    except (ValueError, KeyError) as err:  # input problems: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
