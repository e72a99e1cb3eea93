"""Checkers for the book's assignments, and the tool that makes student notebooks.

A *checker* takes a learner's function, calls it on a list of :class:`Case`
objects and compares every answer with a reference. Some cases are shown in
the assignment; others are *hidden*: random shapes, levels and seeds that the
learner never sees, so that an answer tuned to the visible examples does not
pass. The result is a :class:`CheckResult` that says either "all passed" or,
for each failing case, what went in, what was expected, what came back and a
hint aimed at the most likely mistake.

>>> from dgm.checks import Case, run_checks
>>> import torch
>>> cases = [Case("two numbers", args=(torch.tensor(2.0), torch.tensor(3.0)), expected=torch.tensor(5.0))]
>>> run_checks(lambda a, b: a + b, cases, title="add").passed
True

In a notebook a failed check *reports* and lets the learner carry on. With
``DGM_CHECKS_STRICT=1`` in the environment :func:`finish` raises
``AssertionError`` carrying the same report, which is how the tests prove that
an unfinished notebook fails and a finished one passes.

The second half of the module turns an assignment notebook that holds the
solutions into the notebook learners get (:func:`make_student_notebook`)::

    python -m dgm.checks make-student chapters/01_assignment.ipynb
"""

from __future__ import annotations

import html
import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

__all__ = [
    "Case",
    "Mistake",
    "Failure",
    "CheckResult",
    "run_checks",
    "finish",
    "strict_mode",
    "compare",
    "summarize_value",
    "make_student_notebook",
    "student_path",
    "BEGIN",
    "END",
]


# ---------------------------------------------------------------------------
# cases and results
# ---------------------------------------------------------------------------
@dataclass
class Mistake:
    """A known wrong implementation, used to name the learner's likely mistake.

    ``fn`` is called with the case's arguments and returns what the wrong
    implementation would return; when the learner's answer matches it (within
    the case's tolerance) the report shows ``hint`` instead of the case's
    general hint.
    """

    name: str
    fn: Callable[..., Any]
    hint: str


@dataclass
class Case:
    """One input to a learner's function and how to judge the answer.

    Args:
        name: a short label shown in the report, e.g. ``"hidden: 3 levels, alpha=0"``.
        args: the positional arguments, or a zero-argument function that
            builds them (so random hidden inputs are made only when checked).
        expected: the right answer, or
        reference: a function called with the same arguments that returns it
            (exactly one of ``expected``/``reference``/``judge`` is needed).
        judge: a custom comparison ``judge(got, args) -> None | str`` that
            returns ``None`` when the answer is acceptable, else a message;
            used where the answer is random (Monte Carlo estimates).
        hint: what to look at when this case fails.
        hidden: the learner is not shown this case in the assignment text.
        atol, rtol: tolerances for this case (default: those of
            :func:`run_checks`).
        seed: when given, torch's global random generator is seeded with it
            for the call, and again for the ``judge`` (inside
            ``torch.random.fork_rng``, so the learner's own random state is
            left untouched).
        mistakes: known wrong implementations; a matching one names the
            mistake in the report.
        inputs: a readable summary of the inputs for the report; made from
            ``args`` when not given.
    """

    name: str
    args: tuple | Callable[[], tuple] = ()
    expected: Any = None
    reference: Callable[..., Any] | None = None
    judge: Callable[[Any, tuple], str | None] | None = None
    hint: str = ""
    hidden: bool = False
    atol: float | None = None
    rtol: float | None = None
    seed: int | None = None
    mistakes: Sequence[Mistake] = ()
    inputs: str | None = None

    def build_args(self) -> tuple:
        args = self.args() if callable(self.args) else self.args
        return tuple(args) if isinstance(args, (tuple, list)) else (args,)


@dataclass
class Failure:
    """What went wrong on one case."""

    case: str
    inputs: str
    message: str
    expected: str = ""
    got: str = ""
    hint: str = ""
    hidden: bool = False

    def lines(self) -> list[str]:
        label = f"{self.case} (hidden case)" if self.hidden else self.case
        out = [f"FAILED case '{label}'", f"  inputs:   {self.inputs}", f"  problem:  {self.message}"]
        if self.expected:
            out.append(f"  expected: {self.expected}")
        if self.got:
            out.append(f"  got:      {self.got}")
        if self.hint:
            out.append(f"  hint:     {self.hint}")
        return out


@dataclass
class CheckResult:
    """The outcome of :func:`run_checks`: ``passed``, the ``failures`` and a readable report."""

    title: str
    n_cases: int
    failures: list[Failure] = field(default_factory=list)
    n_hidden: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failed_cases(self) -> list[str]:
        """Names of the failing cases, in order."""
        return [f.case for f in self.failures]

    def __str__(self) -> str:
        visible = self.n_cases - self.n_hidden
        counts = f"{self.n_cases} cases ({visible} shown in the assignment, {self.n_hidden} hidden)"
        if self.passed:
            return f"[PASS] {self.title}: all {counts} passed."
        head = f"[FAIL] {self.title}: {len(self.failures)} of {counts} failed."
        body = [line for f in self.failures for line in f.lines()]
        return "\n".join([head, *body])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        colour = "#1b7f3b" if self.passed else "#b3261e"
        text = html.escape(str(self))
        return (
            f'<pre style="border-left: 4px solid {colour}; padding: 0.4em 0.8em; '
            f'white-space: pre-wrap;">{text}</pre>'
        )

    def raise_if_failed(self) -> "CheckResult":
        """Raise ``AssertionError`` with the report when any case failed."""
        if not self.passed:
            raise AssertionError(str(self))
        return self


def strict_mode() -> bool:
    """True when ``DGM_CHECKS_STRICT`` is set to anything but ``""``/``0``/``false``."""
    return os.environ.get("DGM_CHECKS_STRICT", "").strip().lower() not in ("", "0", "false", "no")


def finish(result: CheckResult, strict: bool | None = None) -> CheckResult:
    """Hand a result back to the notebook; raise instead when strict and failed.

    The notebook shows the returned result (its ``_repr_html_``) when the
    checker call is the last line of a cell.
    """
    if strict is None:
        strict = strict_mode()
    if strict:
        result.raise_if_failed()
    return result


# ---------------------------------------------------------------------------
# comparing values
# ---------------------------------------------------------------------------
def summarize_value(value: Any, max_items: int = 6) -> str:
    """A one-line description of a value: type, shape, dtype and a few numbers."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten()
        head = ", ".join(_fmt(float(v)) if value.is_floating_point() else str(int(v)) for v in flat[:max_items])
        more = ", ..." if flat.numel() > max_items else ""
        if value.ndim == 0:
            return f"tensor({head}, dtype={_dtype(value)})"
        return f"tensor of shape {tuple(value.shape)}, dtype={_dtype(value)}, values [{head}{more}]"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(summarize_value(v, max_items=3) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        kind = "tuple" if isinstance(value, tuple) else "list"
        return f"{kind} of {len(value)}: ({inner}{more})"
    if isinstance(value, float):
        return _fmt(value)
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _as_float(value: Any) -> float | None:
    """A Python float from a number or a one-element tensor, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().reshape(()))
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.size == 1):
            return float(value)
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    return None


def compare(got: Any, expected: Any, atol: float, rtol: float) -> str | None:
    """``None`` when ``got`` matches ``expected``, else a message saying how it differs.

    Tensors must match in shape, be floating point when the expected value is,
    be finite where the expected value is finite, and agree within
    ``atol + rtol * |expected|``. Scalars may come as Python numbers or
    one-element tensors. Tuples are compared element by element.
    """
    if isinstance(expected, torch.Tensor) and expected.ndim > 0:
        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor, got {type(got).__name__}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        if expected.is_floating_point() and not (got.is_floating_point() or got.is_complex()):
            return f"wrong dtype: expected a floating-point tensor, got {_dtype(got)}"
        got_d, exp_d = got.detach().to(torch.float64).cpu(), expected.detach().to(torch.float64).cpu()
        return _compare_arrays(got_d, exp_d, atol, rtol)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"expected a {type(expected).__name__} of {len(expected)} values, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"expected {len(expected)} values, got {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare(g, e, atol, rtol)
            if problem:
                return f"element {i}: {problem}"
        return None
    exp_f = _as_float(expected)
    if exp_f is not None:
        got_f = _as_float(got)
        if got_f is None:
            if isinstance(got, torch.Tensor):
                return f"expected a single number, got a tensor of shape {tuple(got.shape)}"
            return f"expected a number, got {type(got).__name__}"
        return _compare_arrays(torch.tensor([got_f], dtype=torch.float64), torch.tensor([exp_f], dtype=torch.float64), atol, rtol)
    if got != expected:
        return "wrong value"
    return None


def _compare_arrays(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    exp_finite = torch.isfinite(expected)
    got_nan = torch.isnan(got) & ~torch.isnan(expected)
    if got_nan.any():
        return f"contains NaN at {int(got_nan.sum())} of {got.numel()} entries (first at index {_first(got_nan)})"
    bad_inf = torch.isinf(got) & exp_finite
    if bad_inf.any():
        return f"contains inf at {int(bad_inf.sum())} of {got.numel()} entries where a finite value was expected (first at index {_first(bad_inf)})"
    if (~exp_finite).any():
        # where the expected value is inf (or NaN), only the same value is right
        special_ok = (got == expected) | (torch.isnan(got) & torch.isnan(expected))
        wrong = ~exp_finite & ~special_ok
        if wrong.any():
            i = _first(wrong)
            pos = f" at index {i}" if got.numel() > 1 else ""
            return (f"expected {_fmt(float(expected.flatten()[int(torch.nonzero(wrong.flatten())[0])]))}{pos}, "
                    f"got the finite value {_fmt(float(got.flatten()[int(torch.nonzero(wrong.flatten())[0])]))}")
    diff = torch.where(exp_finite, (got - expected).abs(), torch.zeros_like(got))
    ok = diff <= atol + rtol * torch.where(exp_finite, expected.abs(), torch.zeros_like(expected))
    if ok.all():
        return None
    diff = torch.where(ok, torch.zeros_like(diff), diff)
    idx = _first(~ok)
    where = f" (first at index {idx})" if got.numel() > 1 else ""
    return (
        f"{int((~ok).sum())} of {got.numel()} values differ{where}: largest difference "
        f"{_fmt(float(diff.max()))} > tolerance atol={atol:g}, rtol={rtol:g}"
    )


def _first(mask: torch.Tensor) -> tuple[int, ...] | int:
    pos = torch.nonzero(mask)[0].tolist()
    return tuple(pos) if len(pos) > 1 else (pos[0] if pos else 0)


# ---------------------------------------------------------------------------
# running a checker
# ---------------------------------------------------------------------------
def _last_line(exc: BaseException) -> str:
    """The last line of a traceback: ``TypeError: ...``, pointing at the learner's line when possible."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    message = text[-1] if text else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):  # the innermost frame outside this module
        if not frame.filename.endswith(os.path.join("dgm", "checks", "__init__.py")):
            return f"{message}  (raised at line {frame.lineno} of {Path(frame.filename).name}: {(frame.line or '').strip()})"
    return message


def _call(fn: Callable, args: tuple, seed: int | None) -> Any:
    if seed is None:
        return fn(*args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(*args)


def _copy_args(args: tuple) -> tuple:
    """The arguments with every tensor cloned (other objects are passed as they are)."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _summarize_args(args: tuple, names: Sequence[str] | None) -> str:
    parts = []
    for i, a in enumerate(args):
        label = f"{names[i]}=" if names and i < len(names) else ""
        parts.append(label + summarize_value(a, max_items=4))
    return "; ".join(parts) if parts else "(no arguments)"


def run_checks(
    fn: Callable,
    cases: Sequence[Case],
    *,
    title: str | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    arg_names: Sequence[str] | None = None,
    validate: Callable[[Any, tuple], str | None] | None = None,
    stop_after: int | None = 3,
) -> CheckResult:
    """Call ``fn`` on every case and collect the failures.

    Args:
        fn: the learner's function.
        cases: the :class:`Case` list.
        title: shown at the top of the report (default: the function's name).
        atol, rtol: default tolerances.
        arg_names: parameter names used in the inputs summary.
        validate: an extra check ``validate(got, args) -> None | str`` run on
            every answer before comparing values (e.g. "rows sum to one").
        stop_after: report at most this many failures (then stop running
            cases), so one mistake does not bury the report.

    A ``NotImplementedError`` becomes "not implemented yet"; any other
    exception becomes a failed case showing the traceback's last line.
    """
    if not callable(fn):
        raise TypeError(f"a checker needs the function itself, got {type(fn).__name__}")
    title = title or f"{getattr(fn, '__name__', 'function')}"
    result = CheckResult(title=title, n_cases=len(cases), n_hidden=sum(c.hidden for c in cases))
    for case in cases:
        if stop_after is not None and len(result.failures) >= stop_after:
            break
        args = case.build_args()
        inputs = case.inputs or _summarize_args(args, arg_names)
        case_atol = atol if case.atol is None else case.atol
        case_rtol = rtol if case.rtol is None else case.rtol
        fail = lambda message, **kw: result.failures.append(  # noqa: E731
            Failure(case.name, inputs, message, hidden=case.hidden, **kw)
        )
        try:
            expected = None
            if case.judge is None:
                expected = case.expected if case.reference is None else _call(case.reference, args, case.seed)
        except Exception as exc:  # noqa: BLE001 - a broken case is the checker's fault, say so
            raise RuntimeError(f"checker case {case.name!r} could not compute its expected value") from exc
        try:
            got = _call(fn, _copy_args(args), case.seed)  # a copy: in-place edits by the learner change nothing here
        except NotImplementedError:
            fail("not implemented yet: the function still raises NotImplementedError",
                 hint="replace the `raise NotImplementedError(...)` line with your code")
            break  # every other case would say the same
        except Exception as exc:  # noqa: BLE001 - we report the learner's error
            fail(f"raised {_last_line(exc)}", hint=case.hint)
            continue
        if isinstance(got, torch.Tensor) and got.requires_grad:
            got = got.detach()
        if validate is not None:
            problem = validate(got, args)
            if problem:
                fail(problem, got=summarize_value(got), hint=_diagnose(case, args, got, case_atol, case_rtol) or case.hint)
                continue
        if case.judge is not None:
            problem = _call(case.judge, (got, args), case.seed)
            if problem:
                fail(problem, got=summarize_value(got), hint=_diagnose(case, args, got, case_atol, case_rtol) or case.hint)
            continue
        problem = compare(got, expected, case_atol, case_rtol)
        if problem:
            fail(problem, expected=summarize_value(expected), got=summarize_value(got),
                 hint=_diagnose(case, args, got, case_atol, case_rtol) or case.hint)
    return result


def _diagnose(case: Case, args: tuple, got: Any, atol: float, rtol: float) -> str | None:
    """The hint of the first known mistake whose output matches ``got``."""
    for mistake in case.mistakes:
        try:
            wrong = _call(mistake.fn, args, case.seed)
        except Exception:  # noqa: BLE001 - a diagnosis that cannot run says nothing
            continue
        try:
            if compare(got, wrong, atol, rtol) is None:
                return f"this looks like: {mistake.name}. {mistake.hint}"
        except Exception:  # noqa: BLE001
            continue
    return None


# ---------------------------------------------------------------------------
# student notebooks
# ---------------------------------------------------------------------------
BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
SOLUTION_TAG = "solution"
STUB_MESSAGE = "your code here"


def student_path(src_path: str | os.PathLike) -> Path:
    """``chapters/01_assignment.ipynb`` -> ``chapters/01_assignment_student.ipynb``."""
    src = Path(src_path)
    return src.with_name(f"{src.stem}_student{src.suffix}")


def _strip_solution(source: str, cell_label: str) -> tuple[str, bool]:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block by a stub.

    The stub keeps the indentation of the ``BEGIN`` line: inside a function it
    is ``raise NotImplementedError(...)`` so that the function's signature and
    docstring stay and calling it says it is unfinished. Text after the
    marker (``# BEGIN SOLUTION: alpha = ...``) is used as the stub instead.
    """
    lines = source.split("\n")
    out: list[str] = []
    inside = False
    changed = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside:
                raise ValueError(f"{cell_label}, line {number}: nested '{BEGIN}'")
            inside, changed = True, True
            indent = line[: len(line) - len(line.lstrip())]
            custom = stripped[len(BEGIN):].lstrip(" :")
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}{custom}" if custom else f'{indent}raise NotImplementedError("{STUB_MESSAGE}")')
            continue
        if stripped.startswith(END):
            if not inside:
                raise ValueError(f"{cell_label}, line {number}: '{END}' without '{BEGIN}'")
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{cell_label}: '{BEGIN}' is never closed by '{END}'")
    return "\n".join(out), changed


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def make_student_notebook(src_path: str | os.PathLike, dst_path: str | os.PathLike | None = None) -> Path:
    """Write the learners' version of an assignment notebook; return its path.

    * code between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` becomes a stub
      (``raise NotImplementedError``), keeping the lines around it;
    * a code cell tagged ``solution`` without markers becomes a stub cell;
    * a markdown cell tagged ``solution`` is removed;
    * tags that hide or collapse solutions (``hide-input``, ``hide-cell``,
      ``solution``) are dropped from the stubbed cells;
    * every output and execution count is cleared;
    * a first markdown cell says the file is generated.
    """
    import nbformat

    src = Path(src_path)
    dst = student_path(src) if dst_path is None else Path(dst_path)
    nb = nbformat.read(src, as_version=4)
    cells = []
    for index, cell in enumerate(nb.cells):
        label = f"{src.name}, cell {index}"
        tags = _tags(cell)
        if cell.cell_type == "markdown" and SOLUTION_TAG in tags:
            continue
        cell = nbformat.from_dict(dict(cell))  # a copy
        cell.metadata = nbformat.from_dict(dict(cell.get("metadata", {})))
        if cell.cell_type == "code":
            source, changed = _strip_solution(cell.source, label)
            if not changed and SOLUTION_TAG in tags:
                source, changed = f'# YOUR CODE HERE\nraise NotImplementedError("{STUB_MESSAGE}")', True
            if changed:
                cell.source = source
                kept = [t for t in tags if t not in (SOLUTION_TAG, "hide-input", "hide-cell", "hide-output")]
                if kept:
                    cell.metadata["tags"] = kept
                else:
                    cell.metadata.pop("tags", None)
            cell.outputs = []
            cell.execution_count = None
            for key in ("execution", "collapsed", "scrolled"):
                cell.metadata.pop(key, None)
        elif BEGIN in cell.source:
            raise ValueError(f"{label}: '{BEGIN}' in a {cell.cell_type} cell; tag the cell 'solution' instead")
        cells.append(cell)
    shown = f"{src.parent.name}/{src.name}" if src.parent.name else src.name
    header = nbformat.v4.new_markdown_cell(
        f"*Student version, generated from `{shown}` by "
        f"`python -m dgm.checks make-student {shown}`. Edit the source notebook, not this file.*"
    )
    header.id = "student-version-note"
    nb.cells = [header, *cells]
    nb.metadata.pop("widgets", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    with open(dst, "w", encoding="utf-8", newline="\n") as handle:
        nbformat.write(nb, handle)
    return dst
