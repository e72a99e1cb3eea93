"""Shared by the book tests: one quick-mode build of the whole book per test session,
used by tests/test_book.py (the HTML) and tests/test_browser.py (the pages in Chromium)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _jupyter_book_cmd() -> list[str]:
    """The jupyter-book of the running interpreter's environment."""
    script = Path(sys.executable).with_name("jupyter-book")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


@pytest.fixture(scope="session")
def html(tmp_path_factory) -> Path:
    """The built book: a fresh quick-mode build, or an existing one named by DGM_BOOK_HTML."""
    if os.environ.get("DGM_BOOK_HTML"):
        built = Path(os.environ["DGM_BOOK_HTML"]).resolve()
        if not (built / "index.html").exists():
            pytest.fail(f"DGM_BOOK_HTML={built} holds no index.html; build with `jupyter-book build . -W` first")
        return built
    out = tmp_path_factory.mktemp("book")
    # built the usual way, with no DGM_PROGRESS=off: and even with bars asked for, none may reach a page
    env = dict(os.environ, DGM_QUICK="1", DGM_PROGRESS="on")
    # make "python" in kernel specs resolve to this environment's interpreter
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [*_jupyter_book_cmd(), "build", str(ROOT), "-W", "--keep-going", "--path-output", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2400)
    if proc.returncode != 0:
        log = proc.stdout + "\n" + proc.stderr
        pytest.fail(f"jupyter-book build -W failed (exit {proc.returncode}):\n{log[-6000:]}")
    return out / "_build" / "html"
