"""Checkpoint files: written atomically, verified on load, recorded in a manifest.

A checkpoint is a plain dict of tensors and values (``torch.load(path,
weights_only=True)`` reads it) with at least ``model``, ``config`` and
``state_dict``. :func:`save` adds ``weights_sha256``, a digest of the weights,
and :func:`load` refuses a file whose weights no longer match it, whose
weights are not finite, or that is empty, truncated or not a dgm checkpoint,
each with one line saying what the file is and what to do.

Writes never damage what was there: the new file is written beside the old
one and renamed over it only once it is complete, so a full disk or a killed
process leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

DIGEST_KEY = "weights_sha256"


class CheckpointError(ValueError):
    """A file that cannot be used as a dgm checkpoint; the message says why and what to do."""


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (in key order)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the manifests record it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, flush it to disk, then rename it
    to ``path``. If anything fails part-way, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # a temporary file is private (0600); the result gets the permissions a plain open() would give
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
    return path


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write checkpoint ``payload`` (needs ``state_dict``) to ``path`` atomically, with its weights' digest."""
    state = {k: v.detach().cpu() for k, v in payload["state_dict"].items()}
    payload = {**payload, "state_dict": state, DIGEST_KEY: weights_digest(state)}
    return write_atomically(path, lambda handle: torch.save(payload, handle))


def _read(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)`` with each way a file can be unreadable turned into one line."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; give the path of a .pt file inside it")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train one with `python -m dgm train MODEL --data NAME`")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the run that wrote it did not finish; train it again")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(4)
        if head[:2] == b"PK":
            raise CheckpointError(f"{path} is truncated or damaged ({size} bytes, an incomplete archive); "
                                  "train it again or restore it (for shipped ones: git checkout data/checkpoints)")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it does not start like one); "
                              "give a .pt file written by `python -m dgm train`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001  every failure of a foreign or damaged file ends here
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(f"{path} holds pickled Python objects, which dgm checkpoints never contain: "
                                  "it was not written by dgm, and loading it could run its code; "
                                  "use a checkpoint from `python -m dgm train`") from None
        raise CheckpointError(f"{path} is truncated or damaged and cannot be read ({type(err).__name__}); "
                              "train it again or restore it (for shipped ones: git checkout data/checkpoints)") from None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint: a dgm dict, its weights matching their digest and finite."""
    path = Path(path)
    ckpt = _read(path, map_location)
    if not isinstance(ckpt, dict) or not {"model", "config", "state_dict"} <= set(ckpt):
        what = type(ckpt).__name__ if not isinstance(ckpt, dict) else "a dict without 'model', 'config', 'state_dict'"
        raise CheckpointError(f"{path} is a PyTorch file but not a dgm checkpoint (it holds {what}); "
                              "give a .pt file written by `python -m dgm train`")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} has no usable state_dict (expected a dict of tensors); train it again")
    recorded = ckpt.get(DIGEST_KEY)
    if recorded is not None and recorded != weights_digest(state):
        raise CheckpointError(f"{path} is damaged: its weights no longer match the digest stored with them; "
                              "train it again or restore it (for shipped ones: git checkout data/checkpoints)")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path} holds non-finite weights (NaN or inf in {name!r}): the run diverged or "
                                  "the file was damaged; train it again with a lower --lr")
    return ckpt


@contextlib.contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive POSIX lock on ``folder`` (a no-op where there is none) for a read-update-write."""
    try:
        import fcntl
    except ImportError:  # Windows: runs rarely share a manifest there
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class OutputClaim:
    """Claim checkpoint ``path`` for one run: a second run given the same path while the first
    is still running is refused, instead of both reporting the file as their own.

    The claim is a lock on a hidden file beside ``path``; the operating system releases it when
    the process ends, so a run that crashed leaves no stale claim.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd: int | None = None

    def __enter__(self) -> "OutputClaim":
        try:
            import fcntl
        except ImportError:
            return self
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise CheckpointError(f"another run is writing {self.path} right now; give this one another "
                                  "--out folder or --seed, or wait for the other to finish") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
            os.close(self._fd)
            self._fd = None


def record_in_manifest(path: str | Path, command: str, metrics: dict[str, Any]) -> Path:
    """Add checkpoint ``path``, the command that made it and its metrics to ``manifest.json`` beside it.

    Read, update and write happen under a lock and the write is atomic, so runs that finish at the
    same time each keep their entry and a failed write leaves the old manifest whole.
    """
    path = Path(path)
    manifest_path = path.parent / "manifest.json"
    with locked(path.parent):
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest[path.name] = {"command": command, "sha256": file_sha256(path), "metrics": metrics}
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        write_atomically(manifest_path, lambda handle: handle.write(text.encode()))
    return manifest_path
