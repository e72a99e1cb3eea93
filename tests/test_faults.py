"""A careless or hostile user: bad command lines, damaged files, Ctrl-C, a full disk, bad tensors.

Every failure must end in a short message that names the mistake and the fix, with a non-zero exit
code (2: a mistake in the command or its inputs, 1: a run that failed, 130: interrupted), and
nothing a user had before may be lost.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dgm
from dgm import checkpoints, cli, data, registry, run
from dgm.base import check_settings
from dgm.checkpoints import CheckpointError
from test_contract import small_model

ENV = {**os.environ, "DGM_PROGRESS": "off", "OMP_NUM_THREADS": "1"}


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``python -m dgm ARGV`` in this process: exit code, stdout, stderr."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def gmm_checkpoint(tmp_path_factory) -> Path:
    """A small real checkpoint (Gaussian mixture on ring, 20 steps)."""
    out = tmp_path_factory.mktemp("ckpt")
    proc = subprocess.run([sys.executable, "-m", "dgm", "train", "gmm", "--data", "ring", "--steps", "20",
                           "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / "gmm-ring-seed0.pt"


# ---- bad command lines: (arguments, exit code, words the message must contain) ---------------------
BAD_LINES = [
    (["train", "nope", "--data", "ring"], 2, "valid models"),
    (["train", "gmm", "--data", "nope"], 2, "valid data sets"),
    (["train", "gan", "--data", "ring-sharp", "--set", "hidden=-10"], 2, "hidden=-10"),
    (["train", "vae", "--data", "digits", "--set", "beta=nan"], 2, "beta"),
    (["train", "vae", "--data", "digits", "--set", "beta=1e999"], 2, "finite"),
    (["train", "pixelcnn", "--data", "digits", "--set", "gated=banana"], 2, "True or False"),
    (["train", "gan", "--data", "ring", "--set", "hiden=3"], 2, "valid settings: dim, latent_dim, hidden"),
    (["train", "made", "--data", "digits", "--set", "hidden_sizes=(64,'x')"], 2, "whole number"),
    (["train", "gmm", "--data", "ring", "--set", "num_components"], 2, "KEY=VALUE"),
    (["train", "gmm", "--data", "ring", "--set", "num_components=30000", "--steps", "1"], 2, "training points"),
    (["train", "vae", "--data", "digits", "--set", "hidden=(100000000,)"], 2, "parameters"),
    (["train", "gmm", "--data", "ring", "--device", "tpu"], 2, "unknown device"),
    (["train", "gmm", "--data", "ring", "--lr", "0"], 2, "--lr"),
    (["train", "gmm", "--data", "ring", "--lr", "nan"], 2, "--lr"),
    (["train", "gmm", "--data", "ring", "--lr=-1e-3"], 2, "--lr"),
    (["train", "gmm", "--data", "ring", "--lr", "fast"], 2, "--lr"),
    (["train", "gmm"], 2, "--data"),
    (["trian", "gmm"], 2, "invalid choice"),
    (["train", "gmm", "--data", "ring", "--batch-size", "0"], 2, "--batch-size"),
    (["train", "gmm", "--data", "ring", "--eval-every", "0"], 2, "--eval-every"),
    (["train", "gmm", "--data", "ring", "--budget-seconds", "0"], 2, "--budget-seconds"),
    (["train", "gmm", "--data", "ring", "--steps", "-3"], 2, "--steps"),
    (["train", "gmm", "--data", "ring", "--threads", "0"], 2, "--threads"),
    (["train", "gmm", "--data", "ring", "--seed", str(2**80)], 2, "--seed"),
    (["train", "gmm", "--data", "ring", "--seed", "-1"], 2, "--seed"),
    (["train", "gmm", "--data", "ring", "--set", "dim=3", "--steps", "1"], 2, "expects points of shape (3,)"),
    (["train", "pixelcnn", "--data", "digits", "--set", "num_levels=5", "--steps", "1"], 2, "levels must lie in 0..4"),
    (["classifier", "--data", "digits", "--epochs", "0"], 2, "--epochs"),
    (["classifier", "--data", "digits", "--out", "/proc/dgm-cannot-be-here"], 2, "cannot write there"),
    (["train", "gmm", "--data", "ring", "--download"], 2, "--download applies to --data mnist"),
    (["train", "gmm", "--data", "ring", "--binarize", "dynamic"], 2, "mnist5k-bin"),
    (["train", "gmm", "--data", "ring", "--out", "/proc/dgm-cannot-be-here"], 2, "cannot write there"),
    (["train", "vae", "--data", "digits", "--lr", "1e8", "--steps", "100"], 1, "lower learning rate"),
    (["eval", "/nonexistent/x.pt"], 2, "no checkpoint at"),
    (["sample", "/nonexistent/x.pt", "-n", "0"], 2, "-n 0"),
    (["compare", "--seed", "7"], 2, "--train"),
    (["compare", "--data", "mnist5k"], 2, "cannot model 'mnist5k'"),
    (["compare", "--models", "nope"], 2, "compare knows"),
]


@pytest.mark.parametrize("argv, code, words", BAD_LINES, ids=[" ".join(case[0]) for case in BAD_LINES])
def test_a_bad_command_line_gets_one_short_message(argv, code, words, capsys, tmp_path):
    got, out, err = run_cli([*argv, *(["--out", tmp_path] if argv[0] == "train" and "--out" not in argv else [])],
                            capsys)
    assert got == code, err
    assert words in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 4, err


def test_cuda_without_a_gpu_says_so(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(["train", "gmm", "--data", "ring", "--device", "cuda", "--out", tmp_path], capsys)
    assert code == 2 and "no CUDA GPU" in err and "--device cpu" in err


def test_out_that_is_a_file_fails_before_training(capsys, tmp_path):
    target = tmp_path / "runs"
    target.write_text("not a folder")
    start = time.perf_counter()
    code, _, err = run_cli(["train", "gmm", "--data", "ring", "--out", target], capsys)
    assert code == 2 and "is a file" in err
    assert time.perf_counter() - start < 5, "a bad --out must fail before any training"
    assert target.read_text() == "not a folder"


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    def broken(_args):
        raise RuntimeError("deep inside\nline two\nline three\nline four")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), broken))
    code, _, err = run_cli(["list"], capsys)
    assert code == 1 and "RuntimeError: deep inside" in err and "DGM_DEBUG=1" in err
    assert "line four" not in err and "Traceback" not in err
    monkeypatch.setenv("DGM_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["list"])


def _with_func(parser, func):
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=func)
    return parser


def test_a_bad_command_line_in_a_real_process_shows_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "dgm", "train", "vae", "--data", "digits", "--set", "beta=nan"],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: setting beta='nan'")
    assert "Traceback" not in proc.stderr


# ---- environment variables take documented values only ---------------------------------------------
@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("off", False), ("False", False),
                                             ("no", False), ("1", True), ("on", True), ("TRUE", True),
                                             (" yes ", True)])
def test_dgm_quick_reads_on_and_off(monkeypatch, value, expected):
    monkeypatch.setenv("DGM_QUICK", value)
    assert dgm.quick_mode() is expected


@pytest.mark.parametrize("value", ["maybe", "2", "of", "quick"])
def test_dgm_quick_refuses_anything_else(monkeypatch, value):
    monkeypatch.setenv("DGM_QUICK", value)
    with pytest.raises(ValueError, match="DGM_QUICK=.*not understood"):
        dgm.quick_mode()


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("on", "auto"), ("1", "auto"), ("text", "text"),
                                             ("off", "off"), ("0", "off"), ("no", "off")])
def test_dgm_progress_reads_its_values(monkeypatch, value, expected):
    monkeypatch.setenv("DGM_PROGRESS", value)
    assert dgm.progress_setting() == expected


def test_a_bad_dgm_progress_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DGM_PROGRESS", "banana")
    code, _, err = run_cli(["train", "gmm", "--data", "ring", "--steps", "1", "--out", tmp_path], capsys)
    assert code == 2 and "DGM_PROGRESS='banana'" in err


def test_no_notebook_outside_a_kernel():
    assert dgm.live_notebook() is False


# ---- damaged and foreign checkpoint files ------------------------------------------------------------
class Payload:
    """Anything torch can only unpickle with ``weights_only=False``."""


def _damaged_copies(source: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """Ways a checkpoint file goes wrong, each with the words its message must contain."""
    good = source.read_bytes()
    ckpt = torch.load(source, weights_only=True)
    cases = {}

    def write(name, payload, words):
        path = folder / f"{name}.pt"
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        else:
            torch.save(payload, path)
        cases[name] = (path, words)

    write("empty", b"", "is empty")
    write("truncated", good[: len(good) // 2], "truncated or damaged")
    write("text", b"model,nll\ngmm,2.2\n", "not a PyTorch checkpoint")
    write("png", b"\x89PNG\r\n\x1a\n" + bytes(200), "not a PyTorch checkpoint")
    write("plain-tensor", torch.zeros(3), "not a dgm checkpoint")
    write("state-dict-only", ckpt["state_dict"], "not a dgm checkpoint")
    write("unknown-model", {**ckpt, "model": "hopfield-net"}, "does not know")
    write("wrong-config", {**ckpt, "config": {"dim": 2, "num_components": 8, "bogus": 1}}, "config does not build")
    resized = {k: v[:3] if v.ndim else v for k, v in ckpt["state_dict"].items()}
    write("wrong-weights", {**ckpt, "state_dict": resized, "weights_sha256": checkpoints.weights_digest(resized)},
          "do not fit")
    # a weight changed after saving: the digest no longer matches
    tampered = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    tampered["means"][0, 0] += 0.5
    write("tampered", {**ckpt, "state_dict": tampered}, "no longer match")
    # a diverged run: NaN weights with a matching digest
    nan = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    nan["means"][1, 1] = math.nan
    write("nan-weights", {**ckpt, "state_dict": nan, "weights_sha256": checkpoints.weights_digest(nan)}, "non-finite")

    path = folder / "pickled-object.pt"
    torch.save({"model": "gmm", "obj": Payload()}, path)
    cases["pickled-object"] = (path, "pickled Python objects")
    return cases


def test_every_damaged_or_foreign_file_gets_one_line(gmm_checkpoint, tmp_path, capsys):
    for name, (path, words) in _damaged_copies(gmm_checkpoint, tmp_path).items():
        for command in (["eval", path], ["sample", path, "-o", tmp_path / "s.png"]):
            code, out, err = run_cli(command, capsys)
            assert code == 2, f"{name}: exit {code}\n{err}"
            assert words in err, f"{name}: {err}"
            assert "Traceback" not in err and len(err.strip().splitlines()) <= 4, f"{name}: {err}"
            assert "weights_only=False" not in err, f"{name}: never advise loading untrusted pickles"
        with pytest.raises(CheckpointError):
            run.load_checkpoint(str(path))


def test_a_folder_is_not_a_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["eval", tmp_path], capsys)
    assert code == 2 and "is a folder" in err


def test_the_digest_covers_every_byte_of_every_weight(gmm_checkpoint):
    state = torch.load(gmm_checkpoint, weights_only=True)["state_dict"]
    digest = checkpoints.weights_digest(state)
    for name, tensor in state.items():
        changed = dict(state)
        flipped = tensor.clone().reshape(-1).view(torch.uint8)
        flipped[-1] ^= 1  # one bit of the last element
        changed[name] = flipped.view(tensor.dtype).reshape(tensor.shape)
        assert checkpoints.weights_digest(changed) != digest, name
    renamed = {("x" + k if i == 0 else k): v for i, (k, v) in enumerate(state.items())}
    assert checkpoints.weights_digest(renamed) != digest


def test_the_shipped_checkpoints_carry_a_digest():
    manifest = json.loads((Path(registry.__file__).parents[2] / "data/checkpoints/manifest.json").read_text())
    for name in manifest:
        ckpt = torch.load(Path(registry.__file__).parents[2] / "data/checkpoints" / name, weights_only=True)
        assert ckpt.get(checkpoints.DIGEST_KEY) == checkpoints.weights_digest(ckpt["state_dict"]), name


# ---- nothing lost: atomic writes, one run per output path ----------------------------------------
def test_a_save_that_fails_part_way_leaves_the_old_checkpoint(gmm_checkpoint, tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(gmm_checkpoint.read_bytes())
    before = path.read_bytes()
    ckpt = torch.load(path, weights_only=True)

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        checkpoints.save(ckpt, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    model, _ = run.load_checkpoint(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"], "the partial temporary file is removed"
    checkpoints.save(ckpt, tmp_path / "again.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "again.pt").stat().st_mode & 0o777 == 0o666 & ~umask, "not left private like a temp file"


def test_a_manifest_write_that_fails_leaves_the_old_manifest(gmm_checkpoint, tmp_path, monkeypatch):
    path = tmp_path / gmm_checkpoint.name
    path.write_bytes(gmm_checkpoint.read_bytes())
    checkpoints.record_in_manifest(path, "python -m dgm first", {"a": 1})
    before = (tmp_path / "manifest.json").read_text()
    monkeypatch.setattr(json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        checkpoints.record_in_manifest(path, "python -m dgm second", {"a": 2})
    monkeypatch.undo()
    assert (tmp_path / "manifest.json").read_text() == before


def test_runs_updating_one_manifest_keep_every_entry(gmm_checkpoint, tmp_path):
    """Eight processes record eight checkpoints in one manifest at once: none is lost."""
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"m{i}.pt")
        paths[-1].write_bytes(gmm_checkpoint.read_bytes())
    code = ("import sys; from dgm.checkpoints import record_in_manifest\n"
            "for _ in range(5): record_in_manifest(sys.argv[1], 'cmd', {'i': sys.argv[1]})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)], env=ENV) for p in paths]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest) == sorted(p.name for p in paths)


def test_a_second_run_on_the_same_output_is_refused(capsys, tmp_path):
    path = tmp_path / "gmm-ring-seed0.pt"
    with checkpoints.OutputClaim(path):
        code, _, err = run_cli(["train", "gmm", "--data", "ring", "--steps", "1", "--out", tmp_path], capsys)
    assert code == 2 and "another run is writing" in err
    assert not path.exists()
    code, out, _ = run_cli(["train", "gmm", "--data", "ring", "--steps", "1", "--out", tmp_path], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["checkpoint"] == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no lock file is left behind"


@pytest.mark.slow
def test_ctrl_c_saves_the_best_weights_so_far(tmp_path):
    # a GAN never stops early: it is still training when the signal comes
    proc = subprocess.Popen([sys.executable, "-m", "dgm", "train", "gan", "--data", "ring", "--steps", "1000000",
                             "--budget-seconds", "600", "--eval-every", "20", "--set", "hidden=32",
                             "--out", str(tmp_path)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = proc.stderr.readline()
    assert started.startswith("training gan"), started
    time.sleep(8)  # data, model, then some steps
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted after" in err and "saved the weights so far" in err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] is True and result["steps"] > 0
    path = tmp_path / "gan-ring-seed0.pt"
    ckpt = checkpoints.load(path)
    assert ckpt["metrics"]["interrupted"] is True and ckpt["metrics"]["steps"] == result["steps"]
    model, _ = run.load_checkpoint(str(path))
    with torch.no_grad():
        assert math.isfinite(float(model.loss(data.load("ring", "val").x)))
    evaluated = subprocess.run([sys.executable, "-m", "dgm", "eval", str(path)], env=ENV, capture_output=True,
                               text=True, timeout=300)
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout.splitlines()[-1])["interrupted"] is True


# ---- sample: capped, tiled and named as the JSON says -------------------------------------------------
def test_sample_caps_n_and_writes_the_file_the_json_names(gmm_checkpoint, tmp_path, capsys):
    code, out, err = run_cli(["sample", gmm_checkpoint, "-n", "10000000", "-o", tmp_path / "points"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n"] == cli.MAX_POINTS and result["requested_n"] == 10_000_000
    assert result["output"] == str(tmp_path / "points.png") and (tmp_path / "points.png").read_bytes()[:4] == b"\x89PNG"
    assert "drawing" in err and "writing PNG" in err


# ---- settings checked against the constructor ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_every_model_refuses_an_unknown_setting_and_lists_the_valid_ones(name):
    cls = registry.MODELS[name].cls
    with pytest.raises(ValueError, match="valid settings: "):
        check_settings(cls, {"no_such_setting": 1})


@pytest.mark.parametrize("settings, words", [
    ({"num_components": 2.5}, "whole number"), ({"num_components": True}, "whole number"),
    ({"num_components": "8"}, "whole number"), ({"num_components": -1}, "negative"),
])
def test_settings_of_the_wrong_type_are_refused(settings, words):
    with pytest.raises(ValueError, match=words):
        check_settings(registry.MODELS["gmm"].cls, settings)


# ---- inputs checked at every model's door ------------------------------------------------------------
def _model_and_batch(name: str):
    model, split = small_model(name)
    return model, split.x[:8], (split.y[:8] if registry.MODELS[name].labels else None)


def _bad_batches(x: torch.Tensor, kind: str) -> dict[str, tuple[object, str]]:
    """Every kind of bad input, with words the message must contain."""
    bad = {
        "a list": (x.tolist(), "torch tensor"),
        "one example without its batch dimension": (x[0], "x[None]"),
        "the wrong shape": (x.reshape(len(x), -1)[:, :1], "shape"),
        "an empty batch": (x[:0], "empty batch"),
    }
    floaty = x.float()
    with_nan = floaty.clone()
    with_nan.view(-1)[3] = math.nan
    with_inf = floaty.clone()
    with_inf.view(-1)[0] = math.inf
    bad["NaN"] = (with_nan, "NaN")
    bad["inf"] = (with_inf, "infinite")
    if kind in ("levels", "binary"):
        bad["0..255 grey values"] = (torch.full_like(x, 255), "0..")
        bad["negative levels"] = (torch.full_like(x, -1), "0..")
        bad["non-integer levels"] = (floaty + 0.5, "integer")
    if kind == "unit":
        bad["0..255 images"] = (floaty * 255 + 2, "divide")
        bad["integer pixels"] = (x.round().long(), "floating-point")
    if kind == "real":
        bad["integer points"] = (x.round().long(), "floating-point")
    bad["booleans"] = (x > 0, "dtype torch.bool")
    return bad


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_every_model_checks_its_inputs_at_the_door(name):
    model, x, y = _model_and_batch(name)
    kind = model.data_spec().kind
    pair = (lambda batch: (batch, y)) if y is not None else (lambda batch: batch)
    assert torch.isfinite(model.loss(pair(x))), "a good batch passes"
    methods = [m for m in ("loss", "log_prob", "elbo", "evaluate", "translate") if hasattr(model, m)]
    checked = 0
    cases = _bad_batches(x, kind)
    for case, (batch, words) in cases.items():
        for method in methods:
            if method == "log_prob" and not model.has_exact_likelihood:
                continue
            with pytest.raises(ValueError) as caught:  # a conditional model evaluates images alone
                getattr(model, method)(batch if method == "evaluate" else pair(batch))
            message = str(caught.value)
            assert words in message, f"{name}.{method} on {case}: {message}"
            assert len(message.splitlines()) == 1, message
            checked += 1
    assert checked >= len(cases)
    for n in (0, -1, 2.5, "3", True, None):
        with pytest.raises(ValueError, match="positive integer"):
            model.sample(n)


def test_a_conditional_model_checks_its_labels():
    model, x, y = _model_and_batch("cgan")
    for labels, words in [(y + 10, "labels must lie in 0..9"), (y.float(), "integer label"),
                          (y[:3], "one integer label per image"), (None, "integer label")]:
        with pytest.raises(ValueError, match=words):
            model.loss((x, labels))
    with pytest.raises(ValueError, match="pairs"):
        model.loss(x)


def test_fit_checks_the_whole_training_set_before_step_one():
    from dgm.train import fit

    model, x, _ = _model_and_batch("gmm")
    train = data.load("ring", "train").x.clone()
    train[-1, 0] = math.nan  # one bad point at the very end: found before any step
    with pytest.raises(ValueError, match="NaN"):
        fit(model, train, max_steps=10_000, progress=False)


def test_float64_points_are_taken_in_the_models_dtype():
    model, x, _ = _model_and_batch("gmm")
    assert torch.allclose(model.log_prob(x.double()), model.log_prob(x))


# ---- progress bars and widgets only where someone is watching ------------------------------------------
@pytest.mark.parametrize("allow_stdin, live", [(True, True), (False, False)])
def test_a_notebook_is_live_only_when_its_frontend_allows_input(monkeypatch, allow_stdin, live):
    import types

    from dgm.train import _progress_bar

    kernel = types.SimpleNamespace(_allow_stdin=allow_stdin)
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert dgm.live_notebook() is live
    if not live:  # an unattended run (the book build, nbmake) gets no bar, whatever DGM_PROGRESS says
        for setting in ("on", "text", "auto"):
            monkeypatch.setenv("DGM_PROGRESS", setting)
            assert _progress_bar(10, "auto") is None
            assert _progress_bar(10, True) is None
