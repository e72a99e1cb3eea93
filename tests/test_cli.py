"""python -m dgm end to end: list, train (tiny budget), eval, sample, bad names."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dgm import registry, run


def dgm(*args, cwd):
    env = {**os.environ, "DGM_PROGRESS": "off"}
    return subprocess.run([sys.executable, "-m", "dgm", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def last_json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_list_names_models_and_data(tmp_path):
    out = dgm("list", cwd=tmp_path)
    assert out.returncode == 0
    for name in ("independent", "gmm", "digits", "mnist5k", "ring", "ring-sharp", "grid-sharp"):
        assert name in out.stdout


def test_train_independent_on_digits_eval_and_sample(tmp_path):
    result = last_json(dgm("train", "independent", "--data", "digits", "--out", "ck", cwd=tmp_path))
    for key in ("model", "data", "seed", "train_seconds", "params", "test_nll_nats", "test_bpd"):
        assert key in result
    assert result["test_nll_nats"] == pytest.approx(106.3, abs=1.0)
    ckpt_path = tmp_path / "ck" / "independent-digits-seed0.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["model"] == "independent" and "state_dict" in ckpt and "config" in ckpt

    again = last_json(dgm("eval", str(ckpt_path), cwd=tmp_path))
    assert again["test_nll_nats"] == pytest.approx(result["test_nll_nats"], abs=1e-6)

    sampled = dgm("sample", str(ckpt_path), "-n", "16", "-o", "s.png", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_train_gmm_on_ring_with_a_tiny_budget(tmp_path):
    result = last_json(dgm("train", "gmm", "--data", "ring", "--budget-seconds", "3", "--seed", "1",
                           "--out", ".", cwd=tmp_path))
    assert result["seed"] == 1 and result["params"] == 8 * (1 + 2 + 4)
    assert result["stopped_because"] in ("budget_seconds", "early_stopping")
    assert {"entropy_nats", "test_true_nll_nats"} <= set(result)
    # maximum likelihood with 8 components lands close to the entropy even in 3 seconds
    assert result["test_nll_nats"] - result["test_true_nll_nats"] < 0.05
    model, _ = run.load_checkpoint(str(tmp_path / "gmm-ring-seed1.pt"))
    assert model.sample(5).shape == (5, 2)


@pytest.mark.parametrize("args,needle", [
    (("train", "nope", "--data", "digits"), "valid models: "),
    (("train", "independent", "--data", "nope"), "valid data sets: digits"),
    (("train", "gmm", "--data", "digits"), "needs data of kind points"),
    (("eval", "missing.pt"), "no checkpoint at missing.pt"),
])
def test_bad_names_exit_non_zero_and_say_what_is_valid(tmp_path, args, needle):
    out = dgm(*args, cwd=tmp_path)
    assert out.returncode != 0
    assert needle in out.stderr
    if needle == "valid models: ":  # the list is complete and sorted
        listed = out.stderr.split(needle)[1].split()[0:]
        names = [name.rstrip(",") for name in listed]
        assert names == sorted(registry.MODELS)
