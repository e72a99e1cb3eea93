"""Scale-out paths: data-parallel training under torchrun (gloo on CPU) and the
opt-in full-MNIST loader (tested offline with a small fake MNIST in idx format)."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from dgm import data

pytestmark = pytest.mark.slow


def _train(tmp_path, name, launcher):
    out = tmp_path / name
    cmd = [*launcher, "-m", "dgm", "train", "gmm", "--data", "ring", "--steps", "40", "--eval-every", "5",
           "--batch-size", "256", "--seed", "3", "--out", str(out), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DGM_PROGRESS="off")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    return result, ckpt


def test_two_gloo_processes_follow_the_single_process_run(tmp_path):
    single, ckpt1 = _train(tmp_path, "one", [sys.executable])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double, ckpt2 = _train(tmp_path, "two", torchrun)
    assert double["processes"] == 2 and "processes" not in single
    curve1 = [values["loss"] for _, values in ckpt1["history"]["train"]]
    curve2 = [values["loss"] for _, values in ckpt2["history"]["train"]]
    assert len(curve1) == len(curve2) == 8
    # the loss moves (so equality is not trivial) ...
    assert curve1[0] - curve1[-1] > 1e-3
    # ... and two processes with 128 each follow one process with 256 (float32 sums in another order)
    np.testing.assert_allclose(curve2, curve1, rtol=1e-4, atol=1e-5)
    for key in ckpt1["state_dict"]:
        torch.testing.assert_close(ckpt2["state_dict"][key], ckpt1["state_dict"][key], rtol=1e-3, atol=1e-4)
    assert double["test_nll_nats"] == pytest.approx(single["test_nll_nats"], abs=1e-3)


def _write_idx(path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian sizes, bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_full_mnist_is_opt_in_and_splits_like_the_official_set(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="download=True"):
        data.load("mnist", "train")
    with pytest.raises(ValueError, match="only applies to 'mnist'"):
        data.load("digits", "train", download=True)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = np.random.default_rng(0)
    for prefix, n in (("train", 1200), ("t10k", 300)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", gen.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    train, val, test = (data.load("mnist", split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1100, 100, 300)  # the last twelfth of train is val
    assert train.x.shape[1:] == (1, 28, 28) and train.kind == "grey"
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert torch.equal(val.y, torch.arange(1100, 1200) % 10)
