"""The files themselves: notebooks that validate cleanly, and package functions short enough to read."""

import ast
import warnings
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
LONGEST_FUNCTION = 80  # lines, docstring included; the checkers' case tables are exempt


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_validates_without_warnings(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. nbformat's "cell is missing an id field"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), "cell ids need nbformat 4.5"
    ids = [cell.get("id") for cell in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: every cell needs its own id"


def test_every_package_function_fits_on_a_screen():
    too_long = []
    for path in sorted((ROOT / "src" / "dgm").rglob("*.py")):
        if "checks" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                length = node.end_lineno - start + 1
                if length >= LONGEST_FUNCTION:
                    too_long.append(f"{path.relative_to(ROOT)}:{start} {node.name} ({length} lines)")
    assert not too_long, "split these into named pieces: " + "; ".join(too_long)


def _author_build():
    import importlib.util

    spec = importlib.util.spec_from_file_location("author_build", ROOT / "book" / "author_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_authors_build_changes_only_the_execution_mode():
    import yaml

    author_build = _author_build()
    original = yaml.safe_load((ROOT / "_config.yml").read_text())
    cached = author_build.cached_config((ROOT / "_config.yml").read_text())
    assert original["execute"]["execute_notebooks"] == "force"  # the README's build runs everything
    assert cached["execute"].pop("execute_notebooks") == "cache" and cached["execute"].pop("cache")
    original["execute"].pop("execute_notebooks")
    assert cached == original


def test_the_authors_cache_is_dropped_when_the_package_changes(tmp_path, monkeypatch):
    import shutil

    author_build = _author_build()
    for part in ("src/dgm", "data/checkpoints"):
        (tmp_path / part).mkdir(parents=True)
    shutil.copy(ROOT / "data" / "checkpoints" / "manifest.json", tmp_path / "data" / "checkpoints")
    shutil.copy(ROOT / "data" / "checksums.json", tmp_path / "data")
    (tmp_path / "src" / "dgm" / "vae.py").write_text("x = 1\n")
    monkeypatch.delenv("DGM_QUICK", raising=False)
    before = author_build.inputs_digest(tmp_path)
    assert author_build.inputs_digest(tmp_path) == before
    (tmp_path / "src" / "dgm" / "vae.py").write_text("x = 2\n")
    changed = author_build.inputs_digest(tmp_path)
    monkeypatch.setenv("DGM_QUICK", "1")
    assert len({before, changed, author_build.inputs_digest(tmp_path)}) == 3
