"""Grade a class: run every submitted notebook, then run the checkers on its functions.

    python -m dgm.checks grade chapters/03_assignment.ipynb submissions/*.ipynb \\
        --csv grades.csv --feedback feedback/

What is graded, and for how many points, is declared in the assignment's
source notebook (its metadata ``dgm.grading``: the checker module and, per
function, the checker and the points). For every submission:

1. **The notebook runs** top to bottom in a fresh Python process with its own
   IPython shell (a fresh kernel), in its own temporary folder, with a copy of
   the package of its own, a time limit for the whole notebook and its output
   capped; a cell that raises does not stop the run (as in otter-grader). A
   notebook that runs out of time or floods its output gets no points.
2. **The functions are taken from the notebook's code**, not from the run:
   the imports, ``def``/``class`` statements and constant assignments at the
   top level of its cells, in order. Nothing else the notebook did (training,
   ``a03.check_kl = ...``, printing "passed") reaches the grading.
3. **The grader runs the checks itself**, in another fresh process started in
   an empty folder, from a private copy of ``dgm`` made before the first
   submission ran and restored if anything changed it. If the submission's
   code changes the checkers, ``torch`` or the builtins while it is checked,
   its results are void ("tampered"). Results travel back on lines marked
   with a random token the submission never sees, so printed lookalikes count
   for nothing. A check that hangs is stopped after its own time limit.

This protects the grades against the kinds of tampering a submission can do
from ordinary code. It is not a sandbox against code written to attack the
grader's process (walking interpreter frames): run the grader in a container
or a throwaway account when that matters, as otter-grader does with Docker.

Outputs: ``grades.csv`` (one row per submission: points per function, total,
possible, and why each function got less than full points -- ``missing``,
``not implemented``, ``raised``, ``failed case N``, ``timed out``,
``output limit``, ``tampered``, ``unreadable``) and one feedback file per
submission with the learner-facing reports.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["GradedFunction", "GradingSpec", "SubmissionGrade", "read_spec", "grade_submissions", "definitions_source",
           "GradingError"]


class GradingError(Exception):
    """A mistake in how the grader was called (shown as one line, no traceback)."""


@dataclass(frozen=True)
class GradedFunction:
    name: str
    checker: str
    points: float


@dataclass(frozen=True)
class GradingSpec:
    module: str
    functions: tuple[GradedFunction, ...]

    @property
    def possible(self) -> float:
        return sum(f.points for f in self.functions)


@dataclass
class FunctionGrade:
    points: float = 0.0
    reason: str = ""
    report: str = ""


@dataclass
class SubmissionGrade:
    submission: str
    functions: dict[str, FunctionGrade] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def total(self) -> float:
        return sum(f.points for f in self.functions.values())


# ---------------------------------------------------------------------------
# what is graded
# ---------------------------------------------------------------------------
def read_spec(source: str | os.PathLike) -> GradingSpec:
    """The grading declared in a source notebook's metadata ``dgm.grading``.

    The metadata looks like ``{"module": "dgm.checks.a03", "functions": [{"name":
    "reparameterize", "checker": "check_reparameterize", "points": 2}, ...]}``.
    """
    import importlib

    import nbformat

    path = Path(source)
    if not path.is_file():
        raise GradingError(f"{path}: no such assignment notebook; pass the source notebook, e.g. chapters/03_assignment.ipynb")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one line
        raise GradingError(f"{path}: not a readable notebook ({exc})") from None
    grading = nb.metadata.get("dgm", {}).get("grading")
    if not grading:
        raise GradingError(f"{path}: declares nothing to grade; add metadata dgm.grading with the checker module "
                           "and the points per function (see the book's Assignments page)")
    try:
        functions = tuple(GradedFunction(str(f["name"]), str(f["checker"]), float(f["points"]))
                          for f in grading["functions"])
        spec = GradingSpec(str(grading["module"]), functions)
    except (KeyError, TypeError, ValueError) as exc:
        raise GradingError(f"{path}: metadata dgm.grading is malformed ({exc!r}); each function needs name, "
                           "checker and points") from None
    if not spec.module.startswith("dgm.checks."):
        raise GradingError(f"{path}: metadata dgm.grading names the module {spec.module!r}; checkers live in dgm.checks")
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise GradingError(f"{path}: cannot import the checkers {spec.module!r} ({exc})") from None
    for f in spec.functions:
        if not callable(getattr(module, f.checker, None)):
            raise GradingError(f"{path}: {spec.module} has no checker {f.checker!r} (declared for {f.name!r})")
    return spec


_SAFE_STATEMENTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Raise)


def _is_constant_assignment(node: ast.stmt) -> bool:
    """``NAME = <expression without calls>``: constants, dtypes, lambdas; not ``x.attr = ...`` nor ``train()``."""
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return False
    names_only = all(isinstance(t, ast.Name) or (isinstance(t, ast.Tuple) and all(isinstance(e, ast.Name) for e in t.elts))
                     for t in targets)
    return names_only and not _runs_code(value)


def _runs_code(node: ast.AST) -> bool:
    """True when evaluating ``node`` calls something (a lambda's body runs later, so it does not count)."""
    if isinstance(node, ast.Lambda):
        return False
    if isinstance(node, (ast.Call, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
        return True
    return any(_runs_code(child) for child in ast.iter_child_nodes(node))


def definitions_source(cells: Sequence[str], *, keep_lines: bool = False) -> list[list[str]]:
    """Per code cell, the top-level statements the grader keeps (imports, defs, classes, constants).

    IPython magics and shell lines (``%``, ``!``) are dropped; a cell that is not
    valid Python keeps nothing. With ``keep_lines`` each statement is preceded by
    blank lines, so that its line numbers are those of the cell (a report can
    then quote the learner's line).
    """
    kept: list[list[str]] = []
    for source in cells:
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
        text = "\n".join(lines)
        try:
            tree = ast.parse(text)
        except SyntaxError:
            kept.append([])
            continue
        nodes = [node for node in tree.body if isinstance(node, _SAFE_STATEMENTS) or _is_constant_assignment(node)]
        kept.append([("\n" * (_first_line(node) - 1) if keep_lines else "") + (ast.get_source_segment(text, node) or "")
                     for node in nodes])
    return kept


def _first_line(node: ast.stmt) -> int:
    """The statement's first line, its decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


# ---------------------------------------------------------------------------
# running a child process with a time limit and capped output
# ---------------------------------------------------------------------------
@dataclass
class _Run:
    output: bytes
    total_bytes: int
    timed_out: bool
    output_limit: bool
    returncode: int | None


def _run_limited(argv: list[str], *, cwd: Path, env: dict, stdin: bytes, time_limit: float, keep_bytes: int,
                 max_bytes: int, on_line=None) -> _Run:
    """Run ``argv`` in its own process group; kill the group on time-out or when it prints over ``max_bytes``."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    kept = bytearray()
    state = {"total": 0, "over": False}
    pending = bytearray()

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def reader() -> None:
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(1 << 16) if hasattr(proc.stdout, "read1") else proc.stdout.read(1 << 16)
            if not chunk:
                break
            state["total"] += len(chunk)
            if len(kept) < keep_bytes:
                kept.extend(chunk[: keep_bytes - len(kept)])
            if on_line is not None:
                pending.extend(chunk)
                if len(pending) > (1 << 20) and b"\n" not in pending[-(1 << 20):]:
                    del pending[: len(pending) - (1 << 20)]  # a line without end: keep only its tail
                *lines, rest = bytes(pending).split(b"\n")
                pending[:] = rest
                for line in lines:
                    on_line(line)
            if state["total"] > max_bytes:
                state["over"] = True
                kill()
                break

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    timed_out = False
    try:
        proc.wait(timeout=time_limit)
    except subprocess.TimeoutExpired:
        timed_out = True
    kill()  # also ends anything the child left running in its group
    proc.wait()
    thread.join(timeout=5)
    if on_line is not None and pending:
        on_line(bytes(pending))
    return _Run(bytes(kept), state["total"], timed_out, state["over"], proc.returncode)


# ---------------------------------------------------------------------------
# the two child programs: the notebook's kernel, and the checks
# ---------------------------------------------------------------------------
_KERNEL = r"""
import json, sys
config = json.loads(sys.stdin.readline())
sys.path.insert(0, config["lib"])
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance(colors="NoColor")
for number, source in config["cells"]:
    print(f"--- cell {number}", flush=True)
    shell.run_cell(source, store_history=True)
sys.stdout.flush()
"""

_CHECKER = r"""
import json, os, sys
def main():
    config = json.loads(sys.stdin.readline())
    token = config.pop("token")
    channel = os.fdopen(os.dup(1), "w", buffering=1)  # the submission's prints go to fd 1, results to this copy
    def send(**message):
        channel.write(token + " " + json.dumps(message) + "\n")
        channel.flush()
    sys.path.insert(0, config["lib"])
    import builtins, importlib, math
    import torch
    import torch.nn.functional
    import dgm.checks
    module = importlib.import_module(config["module"])
    checkers = {f["name"]: getattr(module, f["checker"]) for f in config["functions"]}
    # torch wraps some of its own functions (torch.manual_seed) the first time an optimizer steps:
    # let that happen now, so that the fingerprint below sees only the submission's changes
    for make in (torch.optim.SGD, torch.optim.Adam):
        weight = torch.nn.Parameter(torch.zeros(1))
        optimizer = make([weight], lr=0.1)
        weight.grad = torch.ones(1)
        optimizer.step()
        optimizer.zero_grad()
    watched = [builtins, math, torch, torch.nn.functional, torch.Tensor, torch.nn.Module, json, os, sys]
    watched += [m for name, m in list(sys.modules.items()) if name.startswith("dgm")]
    watched += [getattr(dgm.checks, n) for n in ("CheckResult", "Failure", "Case", "Mistake")]
    def fingerprint():
        return [(id(w), {k: id(v) for k, v in list(vars(w).items())}) for w in watched]
    before = fingerprint()
    def tampered():
        now = fingerprint()
        for (_, old), (_, new) in zip(before, now):
            if any(new.get(k) != v for k, v in old.items()):
                return True
        return False
    import linecache
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for number, source, statements in config["cells"]:
        name = f"cell {number} of the notebook"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # so reports can quote the line
        for statement in statements:
            try:
                exec(compile(statement, name, "exec"), namespace)
            except BaseException:
                break  # like the notebook: the rest of this cell does not run
    if tampered():
        for f in config["functions"]:
            send(name=f["name"], status="tampered", report="the submission's code changed the checkers, torch or Python's builtins")
        return
    for f in config["functions"]:
        send(name=f["name"], status="running")
        learner = namespace.get(f["name"])
        if learner is None:
            send(name=f["name"], status="missing", report=f"no top-level `def {f['name']}` (or class) in the notebook")
            continue
        try:
            result = checkers[f["name"]](learner, strict=False)
            passed, report = bool(result.passed is True), str(result)
            first = result.failures[0] if result.failures else None
        except BaseException as exc:
            send(name=f["name"], status="raised", report=f"checking stopped: {type(exc).__name__}: {exc}")
            continue
        if tampered():
            position = [g["name"] for g in config["functions"]].index(f["name"])
            for g in config["functions"][position:]:
                send(name=g["name"], status="tampered", report=f"checking {f['name']} changed the checkers, torch or Python's builtins; nothing checked after that counts")
            return
        if passed:
            send(name=f["name"], status="passed", report=report)
        elif first.kind in ("raised", "not implemented"):
            send(name=f["name"], status=first.kind, report=report)
        else:
            send(name=f["name"], status=f"failed case {first.index}", report=report)
main()
"""


def _package_files(root: Path) -> dict[str, bytes]:
    """The package's Python sources (compiled caches are left behind: the copies never write any)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))}


def _all_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: a planted ``__pycache__/*.pyc`` or ``torch.py`` counts as a change."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


class _PrivateLibrary:
    """A copy of the ``dgm`` package the submissions cannot change: checked, and restored, before every use."""

    def __init__(self, package_dir: Path, data_dir: Path | None, where: Path) -> None:
        self.root = where / "src"
        self.package = self.root / "dgm"
        self.files = _package_files(package_dir)
        self.data_dir = data_dir
        self.restored = 0
        self._write()

    def _write(self) -> None:
        if self.root.exists():
            for path in [self.root, *self.root.rglob("*")]:
                if not path.is_symlink():
                    path.chmod(0o700 if path.is_dir() else 0o600)
            shutil.rmtree(self.root, ignore_errors=True)
        for rel, data in self.files.items():
            target = self.package / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if self.data_dir is not None and not (self.root.parent / "data").exists():
            (self.root.parent / "data").symlink_to(self.data_dir)  # dgm.data finds its files next to src/
        for path in sorted(self.package.rglob("*"), reverse=True):
            path.chmod(0o500 if path.is_dir() else 0o400)
        self.package.chmod(0o500)
        self.root.chmod(0o500)

    def changed(self) -> bool:
        """Whether anything in the copy differs from the package it was made from."""
        try:
            return _all_files(self.root) != {f"dgm/{rel}": data for rel, data in self.files.items()}
        except OSError:
            return True

    def verified(self) -> Path:
        """The library's folder, rewritten from memory first if anything in it changed."""
        if self.changed():
            self.restored += 1
            self._write()
        return self.root

    def fresh_copy(self, where: Path) -> Path:
        """A writable copy for one submission's kernel (what it does to it stays there)."""
        for rel, data in self.files.items():
            target = where / "src" / "dgm" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if self.data_dir is not None:
            (where / "data").symlink_to(self.data_dir)
        return where / "src"


# ---------------------------------------------------------------------------
# grading
# ---------------------------------------------------------------------------
def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DGM_CHECKS", "PYTHON", "JPY", "JUPYTER"))}
    env.update({"MPLBACKEND": "Agg"})  # (the children run with -I -B: no PYTHON* variables, no bytecode written)
    env.update(extra)
    return env


def _code_cells(path: Path) -> list[tuple[int, str]] | None:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        return [(i, "".join(c["source"]) if isinstance(c["source"], list) else str(c["source"]))
                for i, c in enumerate(nb["cells"], 1) if c.get("cell_type") == "code"]  # numbered from 1
    except Exception:  # noqa: BLE001 - an unreadable submission is graded, not a crash
        return None


def grade_one(path: Path, spec: GradingSpec, library: _PrivateLibrary, *, time_limit: float, check_time_limit: float,
              keep_output: int, max_output: int, quick: bool, scratch: Path) -> SubmissionGrade:
    """Run one submission and check its functions; everything that goes wrong lands in its grade."""
    grade = SubmissionGrade(path.name, {f.name: FunctionGrade() for f in spec.functions})
    cells = _code_cells(path)
    if cells is None:
        for f in grade.functions.values():
            f.reason, f.report = "unreadable", "the file is not a notebook that can be read (invalid JSON)"
        return grade
    home = Path(tempfile.mkdtemp(prefix="submission-", dir=scratch))
    try:
        work = home / "work"
        work.mkdir()
        shutil.copy(path, work / path.name)
        kernel_lib = library.fresh_copy(home / "lib")
        env = _child_env({"DGM_QUICK": "1"} if quick else {})
        config = json.dumps({"lib": str(kernel_lib), "cells": cells}) + "\n"
        started = time.monotonic()
        run = _run_limited([sys.executable, "-I", "-B", "-c", _KERNEL], cwd=work, env=env, stdin=config.encode(),
                           time_limit=time_limit, keep_bytes=keep_output, max_bytes=max_output)
        grade.output = run.output.decode("utf-8", "replace")
        if run.total_bytes > len(run.output):
            grade.output += f"\n[... {run.total_bytes - len(run.output)} more bytes of output left out]"
        grade.notes.append(f"notebook ran for {time.monotonic() - started:.1f} s")
        if run.timed_out or run.output_limit:
            reason = "timed out" if run.timed_out else "output limit"
            why = (f"the notebook did not finish within {time_limit:g} s" if run.timed_out
                   else f"the notebook printed more than {max_output // 2**20} MB")
            for f in grade.functions.values():
                f.reason, f.report = reason, why
            grade.notes.append(why)
            return grade
        _check(grade, spec, library, cells, check_time_limit, env, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return grade


def _check(grade: SubmissionGrade, spec: GradingSpec, library: _PrivateLibrary, cells: list[tuple[int, str]],
           time_limit: float, env: dict, home: Path) -> None:
    kept = definitions_source([s for _, s in cells], keep_lines=True)
    statements = [(n, source, statements) for (n, source), statements in zip(cells, kept)]
    remaining = list(spec.functions)
    attempts = 0
    while remaining:
        token = secrets.token_hex(16)
        results: dict[str, dict] = {}
        order: list[str] = []

        def on_line(line: bytes, token: str = token, results: dict = results, order: list = order) -> None:
            text = line.decode("utf-8", "replace")
            if text.startswith(token + " "):
                try:
                    message = json.loads(text[len(token) + 1:])
                except ValueError:
                    return
                results[message["name"]] = message
                order.append(message["name"])

        empty = Path(tempfile.mkdtemp(prefix="check-", dir=home))
        config = {"token": token, "lib": str(library.verified()), "module": spec.module, "cells": statements,
                  "functions": [{"name": f.name, "checker": f.checker} for f in remaining]}
        limit = time_limit * len(remaining) + 30  # importing torch, then each function's own budget
        run = _run_limited([sys.executable, "-I", "-B", "-c", _CHECKER], cwd=empty, env=env,
                           stdin=(json.dumps(config) + "\n").encode(), time_limit=limit, keep_bytes=0,
                           max_bytes=1 << 30, on_line=on_line)
        if library.changed():  # something (left running by the submission?) changed the checkers meanwhile
            attempts += 1
            if attempts < 2:
                continue  # check again, from a restored copy
            for f in remaining:
                grade.functions[f.name].reason = "tampered"
                grade.functions[f.name].report = "the checkers' copy was changed while this submission was checked"
            return
        finished = 0
        for f in remaining:
            message = results.get(f.name)
            if message is None or message["status"] == "running":
                break
            finished += 1
            _record(grade.functions[f.name], f, message)
        if finished == len(remaining):
            return
        stuck = remaining[finished]
        message = results.get(stuck.name)
        if message is not None and message["status"] == "running":
            why = ("timed out", f"checking {stuck.name} did not finish in time") if run.timed_out else \
                  ("raised", f"checking {stuck.name} ended the process (os._exit, a crash or a signal)")
        else:
            why = ("raised", "the submission's definitions could not be loaded for checking")
        grade.functions[stuck.name].reason, grade.functions[stuck.name].report = why
        remaining = remaining[finished + 1:]


def _record(target: FunctionGrade, declared: GradedFunction, message: dict) -> None:
    target.report = str(message.get("report", ""))
    if message["status"] == "passed":
        target.points, target.reason = declared.points, ""
    else:
        target.points, target.reason = 0.0, str(message["status"])


def grade_submissions(source: str | os.PathLike, submissions: Sequence[str | os.PathLike], *,
                      csv_path: str | os.PathLike | None = None, feedback_dir: str | os.PathLike | None = None,
                      time_limit: float = 300.0, check_time_limit: float = 120.0, keep_output: int = 20_000,
                      max_output_mb: float = 50.0, quick: bool = True, log=None) -> list[SubmissionGrade]:
    """Grade every submission against the source notebook's declared checks; write the CSV and feedback files."""
    spec = read_spec(source)
    paths = [Path(p) for p in submissions]
    if not paths:
        raise GradingError("no submissions given: pass the notebooks to grade, e.g. submissions/*.ipynb")
    for p in paths:
        if not p.is_file():
            raise GradingError(f"{p}: no such submission file")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise GradingError("two submissions have the same file name; give every submission its own name")
    import dgm

    package_dir = Path(dgm.__file__).resolve().parent
    data_dir = package_dir.parents[1] / "data"
    grades = []
    with tempfile.TemporaryDirectory(prefix="dgm-grader-") as scratch_name:
        scratch = Path(scratch_name)
        library = _PrivateLibrary(package_dir, data_dir if data_dir.is_dir() else None, scratch / "checks")
        try:
            _grade_all(paths, spec, library, scratch, grades, time_limit, check_time_limit, keep_output,
                       max_output_mb, quick, log)
        finally:
            for path in [library.root, *library.root.rglob("*")]:  # let the temporary folder go
                if not path.is_symlink():
                    path.chmod(0o700)
    if csv_path is not None:
        write_csv(grades, spec, Path(csv_path))
    if feedback_dir is not None:
        write_feedback(grades, spec, Path(feedback_dir))
    return grades


def _grade_all(paths, spec, library, scratch, grades, time_limit, check_time_limit, keep_output, max_output_mb,
               quick, log) -> None:
    runs = scratch / "runs"
    runs.mkdir()
    for path in sorted(paths, key=lambda p: p.name):
        started = time.monotonic()
        runs.mkdir(exist_ok=True)  # a submission may have deleted it
        grade = grade_one(path, spec, library, time_limit=time_limit, check_time_limit=check_time_limit,
                          keep_output=keep_output, max_output=int(max_output_mb * 2**20), quick=quick,
                          scratch=runs)
        grades.append(grade)
        if log is not None:
            log(f"{path.name}: {grade.total:g} / {spec.possible:g}  ({time.monotonic() - started:.1f} s)")
        if library.restored:
            grade.notes.append("the checkers' private copy had been changed; it was restored before checking")
            library.restored = 0


def _points(x: float) -> str:
    return f"{x:g}"


def write_csv(grades: Sequence[SubmissionGrade], spec: GradingSpec, path: Path) -> None:
    """One row per submission: points per function, total, possible, then why each function lost its points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["submission", *[f.name for f in spec.functions], "total", "possible",
                         *[f"why {f.name}" for f in spec.functions]])
        for g in grades:
            writer.writerow([g.submission, *[_points(g.functions[f.name].points) for f in spec.functions],
                             _points(g.total), _points(spec.possible),
                             *[g.functions[f.name].reason for f in spec.functions]])


def write_feedback(grades: Sequence[SubmissionGrade], spec: GradingSpec, folder: Path) -> None:
    """``<submission>.txt`` per submission: points, then each checker's report, then the notebook's output."""
    folder.mkdir(parents=True, exist_ok=True)
    for g in grades:
        lines = [f"{g.submission}: {_points(g.total)} of {_points(spec.possible)} points", ""]
        for f in spec.functions:
            got = g.functions[f.name]
            status = "full points" if got.points == f.points else got.reason
            lines += [f"== {f.name}: {_points(got.points)} / {_points(f.points)} ({status})", got.report.strip(), ""]
        lines += ["== notes", *g.notes, "", "== the notebook's output (capped)", g.output]
        (folder / f"{Path(g.submission).stem}.txt").write_text("\n".join(lines), encoding="utf-8")
