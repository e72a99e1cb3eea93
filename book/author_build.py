"""Fast re-builds for authors: the book with Jupyter Book's execution cache.

    python book/author_build.py            # like `jupyter-book build . -W`, re-running only changed notebooks
    DGM_QUICK=1 python book/author_build.py

The README's command (`jupyter-book build . -W`) executes every notebook from scratch, as readers and CI
should. While editing prose that is slow: this command builds with ``execute_notebooks: cache``
(jupyter-cache, kept in ``_build/.jupyter_cache``), so a notebook runs again only when its code cells
change. A notebook's output also depends on the ``dgm`` package, the shipped checkpoints and quick mode,
which jupyter-cache cannot see: the cache is emptied whenever their digest changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
CACHE = BUILD / ".jupyter_cache"


def inputs_digest(root: Path = ROOT) -> str:
    """SHA-256 over what every notebook's output depends on besides its own code: the package's source,
    the checkpoint manifest, the data checksums and the quick-mode setting."""
    digest = hashlib.sha256(f"quick={os.environ.get('DGM_QUICK', '')}".encode())
    files = sorted((root / "src" / "dgm").rglob("*.py")) + [root / "data" / "checkpoints" / "manifest.json",
                                                             root / "data" / "checksums.json"]
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_config(config_text: str) -> dict:
    """The book's configuration with notebook execution switched to the cache."""
    config = yaml.safe_load(config_text)
    config.setdefault("execute", {})["execute_notebooks"] = "cache"
    config["execute"]["cache"] = str(CACHE)
    return config


def main() -> int:
    BUILD.mkdir(exist_ok=True)
    stamp = BUILD / "author_build.inputs"
    digest = inputs_digest()
    if not stamp.exists() or stamp.read_text() != digest:
        shutil.rmtree(CACHE, ignore_errors=True)  # the package or checkpoints changed: run everything once
        print("package, checkpoints or quick mode changed since the last cached build: executing every notebook")
    config_path = BUILD / "_config_cached.yml"
    config_path.write_text(yaml.safe_dump(cached_config((ROOT / "_config.yml").read_text()), sort_keys=False))
    result = subprocess.run(["jupyter-book", "build", str(ROOT), "-W", "--config", str(config_path)])
    if result.returncode == 0:
        stamp.write_text(digest)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
