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

Beyond values, the machinery here is shared by every assignment's checkers:
:func:`run_checks` fails a call that changes its inputs in place or returns
another dtype than its inputs', checks gradients against the reference's
(``grad_args``, :func:`gradient_problem`), sets tolerances from the dtype
(:func:`tolerance`), names a known mistake only when exactly one explains every
case, and turns anything the learner's code returns or raises into a report
that points at the learner's own line (:func:`learner_line`). Probes
(:func:`probe_case`) check what one call cannot show: fresh noise on every call
(:func:`randomness_problem`), the generator argument (:func:`generator_problem`),
modules that behave as modules (:func:`module_problem`).

In a notebook a failed check *reports* and lets the learner carry on. With
``DGM_CHECKS_STRICT=1`` in the environment :func:`finish` raises
``AssertionError`` carrying the same report, which is how the tests prove that
an unfinished notebook fails and a finished one passes.

The second half of the module turns an assignment notebook that holds the
solutions into the notebook learners get (:func:`make_student_notebook`)::

    python -m dgm.checks make-student chapters/01_assignment.ipynb

Grading a class's submissions is :mod:`dgm.checks.grade`.
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
    "scalar_loss_problem",
    "tolerance",
    "input_dtype",
    "as_dtype",
    "DTYPE_TOLERANCE",
    "gradient_problem",
    "randomness_problem",
    "generator_problem",
    "module_problem",
    "learner_line",
    "probe_case",
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
    #: when set, the case calls ``call(fn, *args)`` instead of ``fn(*args)``
    #: (a probe that uses the learner's function its own way; see :func:`probe_case`)
    call: Callable[..., Any] | None = None

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
    #: "wrong", "raised" or "not implemented" (the grader's reason for no points)
    kind: str = "wrong"
    #: the case's position in the checker's list, from 1
    index: int = 0

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
def scalar_loss_problem(got: Any, what: str = "the loss", finite: bool = False) -> str | None:
    """Why ``got`` is not a training loss: a Python number (no gradient) or not a one-element tensor
    (and, with ``finite``, not finite); ``None`` when it is one. Shared by every loss checker."""
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return (f"returned the Python number {got:.6g}: a number has no gradient (.item() or float() ends the "
                "graph); return the scalar tensor so that training can call .backward() on it")
    if not isinstance(got, torch.Tensor) or got.numel() != 1:
        return f"expected {what} as a scalar tensor (one number), got {summarize_value(got)}"
    if finite and not torch.isfinite(got).all():
        return f"{what} is {float(got)}: not finite"
    return None


def summarize_value(value: Any, max_items: int = 6) -> str:
    """A one-line description of a value: type, shape, dtype and a few numbers (never raises)."""
    try:
        return _summarize(value, max_items)
    except Exception:  # noqa: BLE001 - a value that cannot describe itself still gets a line
        return f"an object of type {type(value).__name__}"


def _summarize(value: Any, max_items: int) -> str:
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
    if value is None:
        return "None (did the function forget to `return` its answer?)"
    if callable(value):
        return f"{type(value).__name__} {getattr(value, '__name__', '')}".strip()
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


def compare(got: Any, expected: Any, atol: float, rtol: float, check_dtype: bool = False) -> str | None:
    """``None`` when ``got`` matches ``expected``, else a message saying how it differs.

    Tensors must match in shape, be floating point when the expected value is,
    be finite where the expected value is finite, and agree within
    ``atol + rtol * |expected|``. Scalars may come as Python numbers or
    one-element tensors. Tuples are compared element by element. With
    ``check_dtype`` a floating-point tensor answer must have the expected
    tensor's dtype (float32 in, float32 out; float64 in, float64 out).
    """
    if (check_dtype and isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)
            and expected.is_floating_point() and got.is_floating_point() and got.dtype != expected.dtype):
        return (f"wrong dtype: the inputs are {_dtype(expected)} and the answer should be too, got {_dtype(got)} "
                "(a constant made with torch.tensor(...) or .float() changes it: use torch.zeros_like, x.new_tensor, "
                ".to(x.dtype))")
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
            problem = compare(g, e, atol, rtol, check_dtype)
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
# tolerances, dtypes and the learner's line in a traceback
# ---------------------------------------------------------------------------
#: (atol, rtol) by the dtype of a case's floating-point inputs: correct float32
#: code passes, float64 code is held tight.
DTYPE_TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-7),
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (1e-2, 2e-2),
}


def input_dtype(args: Any) -> torch.dtype | None:
    """The least precise floating-point dtype among the tensors in ``args`` (searched in tuples/lists), or ``None``.

    A float32 ``x`` next to a float64 schedule makes a float32 computation: its tolerance is float32's.
    """
    found = {t.dtype for t in _tensors(args) if t.is_floating_point()}
    return max(found, key=lambda d: torch.finfo(d).eps) if found else None


def tolerance(dtype: torch.dtype | None, atol: float | None = None, rtol: float | None = None) -> tuple[float, float]:
    """``(atol, rtol)`` for answers computed in ``dtype``.

    ``atol``/``rtol`` given by a checker are used as they are for float64 (and
    for inputs without a float dtype); float32 and lower precisions never get
    less than :data:`DTYPE_TOLERANCE` allows, so rounding alone never fails.
    """
    base_atol, base_rtol = DTYPE_TOLERANCE.get(dtype, DTYPE_TOLERANCE[torch.float64])
    if dtype is None or dtype == torch.float64:
        return (base_atol if atol is None else atol), (base_rtol if rtol is None else rtol)
    return max(base_atol, atol or 0.0), max(base_rtol, rtol or 0.0)


def _tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)) and depth < 3:
        return [t for v in value for t in _tensors(v, depth + 1)]
    return []


def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    dirs = {os.path.dirname(os.path.abspath(torch.__file__)), str(Path(__file__).resolve().parents[1])}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.abspath(path))
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()


def _is_library(filename: str) -> bool:
    path = os.path.abspath(filename) if not filename.startswith("<") else filename
    return "site-packages" in path or "dist-packages" in path or path.startswith(_LIBRARY_DIRS)


def learner_line(exc: BaseException) -> str | None:
    """``"line 4 of your code: return x.sum"`` for the innermost traceback frame outside libraries, else ``None``."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not _is_library(frame.filename):
            return f"line {frame.lineno} of your code ({Path(frame.filename).name}): {(frame.line or '').strip()}"
    return None


def _last_line(exc: BaseException) -> str:
    """The last line of a traceback, ``TypeError: ...``, and the learner's line that raised it."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    message = text[-1] if text else type(exc).__name__
    where = learner_line(exc)
    return f"{message}  (raised at {where})" if where else message


def _is_stub(exc: BaseException) -> bool:
    """A ``NotImplementedError`` the learner's stub raised, not one from deep inside a library."""
    return isinstance(exc, NotImplementedError) and (
        STUB_MESSAGE in str(exc) or (exc.__traceback__ is not None and not _is_library(traceback.extract_tb(exc.__traceback__)[-1].filename)))


def _call(fn: Callable, args: tuple, seed: int | None) -> Any:
    if seed is None:
        return fn(*args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(*args)


def _copy_args(args: Any, depth: int = 0) -> Any:
    """The arguments with every tensor cloned, also inside tuples and lists (other objects are passed as they are)."""
    if isinstance(args, torch.Tensor):
        return args.detach().clone()
    if isinstance(args, (tuple, list)) and depth < 3:
        copied = [_copy_args(a, depth + 1) for a in args]
        return tuple(copied) if isinstance(args, tuple) else copied
    return args


def _same(a: Any, b: Any) -> bool:
    """Exactly equal (NaN equals NaN), for tensors, numbers and tuples/lists of them."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        a, b = a.detach(), b.detach()
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b)) if a.is_floating_point() else (a == b)).all())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    except Exception:  # noqa: BLE001 - objects that cannot be compared are not the same
        return False


def _versions(args: tuple) -> list[list[int]]:
    """Each argument's tensors' version counters: any in-place operation bumps them, even one that changes no value."""
    return [[t._version for t in _tensors(a)] for a in args]


def _modified_inputs(before: tuple, after: tuple, names: Sequence[str] | None,
                     versions: list[list[int]] | None = None) -> list[str]:
    """Labels of the arguments whose tensors the learner's call changed in place."""
    changed = []
    now = _versions(after) if versions is not None else None
    for i, (b, a) in enumerate(zip(before, after)):
        if not _same(_tensors(b), _tensors(a)) or (versions is not None and now[i] != versions[i]):
            changed.append(f"`{names[i]}`" if names and i < len(names) else f"argument {i + 1}")
    return changed


def _is_function_object(value: Any) -> bool:
    import inspect

    return inspect.ismethod(value) or inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.ismethoddescriptor(value)


# ---------------------------------------------------------------------------
# generic checks shared by the assignments: gradients, randomness, modules
# ---------------------------------------------------------------------------
def _weights_like(outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(12345)
    return [torch.rand(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) + 0.5 for o in outputs]


def parameter_gradient_problem(fn: Callable, reference: Callable, build: Callable[[], tuple], *,
                               what: str = "the loss", cut: str = "part of it was cut from the graph",
                               atol: float = 1e-6, rtol: float = 1e-5) -> str | None:
    """``None`` when a loss ``fn(network, *args)`` sends the network's parameters the gradient that
    ``reference`` does, else what is wrong. ``build()`` returns a fresh, seeded ``(network, *args)`` for
    each call. ``cut`` names what was probably detached when only the gradient differs."""
    grads = []
    for loss_fn in (reference, fn):
        network, *args = build()
        with torch.enable_grad():
            loss = loss_fn(network, *args)
            if not isinstance(loss, torch.Tensor):
                return (f"returned {summarize_value(loss)}: a Python number has no gradient (.item() or float() "
                        "ends the graph); return the scalar tensor so that training can call .backward() on it")
            if not loss.requires_grad:
                return (f"no gradient reaches the network's parameters: {what} was computed under torch.no_grad(), "
                        "with .detach() or through .data, so the network could not learn from it")
            loss.backward()
        grads.append([p.grad if p.grad is not None else torch.zeros_like(p) for p in network.parameters()])
    if any(not torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(*grads)):
        return f"the value is right but the network's parameters get a different gradient: {cut}"
    return None


def gradient_problem(fn: Callable, reference: Callable, args: tuple, grad_args: Sequence[int], *,
                     names: Sequence[str] | None = None, seed: int | None = None,
                     atol: float = 1e-6, rtol: float = 1e-5) -> str | None:
    """``None`` when gradients flow through ``fn`` as through ``reference``, else what is wrong.

    The arguments at ``grad_args`` become leaf tensors that require gradients;
    both functions are called and a fixed random weighting of their
    floating-point outputs is back-propagated. A loss returned as a Python
    number, computed under ``torch.no_grad()``, through ``.detach()`` or
    ``.data``, gives the right value but no (or a different) gradient.
    """
    def leaves(values: tuple) -> tuple:
        out = list(_copy_args(values))
        for i in grad_args:
            if isinstance(out[i], torch.Tensor) and out[i].is_floating_point():
                out[i] = out[i].requires_grad_(True)
        return tuple(out)

    label = lambda i: f"`{names[i]}`" if names and i < len(names) else f"argument {i + 1}"  # noqa: E731
    ref_args, got_args = leaves(args), leaves(args)
    with torch.enable_grad():
        ref = _call(reference, ref_args, seed)
        got = _call(fn, got_args, seed)
        ref_out = [o for o in _tensors(ref) if o.is_floating_point()]
        got_items = list(got) if isinstance(got, (tuple, list)) else [got]
        if any(isinstance(g, (int, float)) and not isinstance(g, bool) for g in got_items):
            return ("returned a Python number: the value is right, but a number has no gradient (.item() or float() "
                    "ends the graph). Return the tensor, so that training can call .backward() on it")
        got_out = [o for o in _tensors(got) if o.is_floating_point()]
        if len(got_out) != len(ref_out):
            return None  # the value comparison reports shape problems
        weights = _weights_like(ref_out)
        ref_loss = sum((o * w).sum() for o, w in zip(ref_out, weights) if o.requires_grad)
        wanted = [got_args[i] for i in grad_args]
        if not any(o.requires_grad for o in got_out):
            return ("no gradient flows back to " + ", ".join(label(i) for i in grad_args) + ": the answer was computed "
                    "under torch.no_grad(), with .detach() or through .data. The value is right but training could "
                    "not learn from it; compute it with ordinary tensor operations")
        got_loss = sum((o * w.to(o.dtype)).sum() for o, w in zip(got_out, weights) if o.requires_grad)
        ref_grads = torch.autograd.grad(ref_loss, [ref_args[i] for i in grad_args], allow_unused=True)
        got_grads = torch.autograd.grad(got_loss, wanted, allow_unused=True)
    for i, r, g in zip(grad_args, ref_grads, got_grads):
        if r is None:
            continue
        if g is None or (not g.any() and r.any()):
            return (f"no gradient reaches {label(i)}: the part of the answer that depends on it was cut from the "
                    "graph (.detach(), .data, torch.no_grad() or a NumPy round trip)")
        problem = compare(g, r, atol * 10, rtol * 10)
        if problem:
            return (f"the value is right but its gradient with respect to {label(i)} is not ({problem}): part of the "
                    "computation is cut from the graph (.detach(), .data) or goes through a step without a gradient")
    return None


def randomness_problem(call: Callable[[], Any], *, what: str = "the answer") -> str | None:
    """``None`` when ``call()`` draws fresh noise from torch's global generator on every call.

    Two calls in a row must differ (a private fixed seed makes them equal),
    and re-seeding the global generator must reproduce the first call (noise
    from NumPy, Python's ``random`` or a private ``torch.Generator`` does not).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2024)
        first, second = call(), call()
        torch.manual_seed(2024)
        again = call()
    if _same(first, second):
        return (f"two calls in a row gave the same {what}: the function fixes its own seed (torch.manual_seed or "
                "a fresh torch.Generator inside it), so every call reuses the same noise. Draw from torch's "
                "global generator (or the generator you are given); the caller decides about seeds")
    if not _same(first, again):
        return (f"re-seeding torch's generator does not reproduce the {what}: the noise comes from somewhere else "
                "(NumPy, Python's random module, a private torch.Generator). Draw it with torch (torch.randn, "
                "torch.randn_like, torch.rand) so that seeds set by the caller apply")
    return None


def generator_problem(call: Callable[[torch.Generator], Any], *, what: str = "the samples") -> str | None:
    """``None`` when ``call(generator)`` draws all its noise from the generator it is given."""
    state = torch.get_rng_state()
    first = call(torch.Generator().manual_seed(11))
    again = call(torch.Generator().manual_seed(11))
    other = call(torch.Generator().manual_seed(12))
    global_moved = not torch.equal(state, torch.get_rng_state())
    torch.set_rng_state(state)
    if not _same(first, again) or _same(first, other):
        return (f"the {what} do not follow the `generator` argument: pass generator=generator to every "
                "torch.randn/torch.rand/torch.multinomial call (two equal generators must give equal results)")
    if global_moved:
        return (f"the {what} follow the generator, but the global generator moved too: some noise is drawn "
                "without generator=generator")
    return None


def module_problem(module: Any, example: torch.Tensor, *, who: str = "the module") -> str | None:
    """``None`` when ``module`` behaves as an ``nn.Module``: constants are buffers, parameters get gradients, ``.double()`` works."""
    import copy

    from torch import nn

    if not isinstance(module, nn.Module):
        return f"{who} should be a torch.nn.Module, got {summarize_value(module)}"
    for prefix, sub in module.named_modules():
        for name, value in vars(sub).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                full = f"{prefix}.{name}" if prefix else name
                return (f"`{full}` is a plain tensor attribute of {who}: it is not in state_dict() and .to()/.double() "
                        f"do not move it. Register it with self.register_buffer('{name}', ...)")
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        return f"{who} has no trainable parameters: create the layers inside __init__ (nn.Conv2d, nn.Linear) so that they register"
    work = copy.deepcopy(module)
    out = work(example.clone())
    if not isinstance(out, torch.Tensor):
        return f"{who} returned {summarize_value(out)}, expected a tensor"
    with torch.enable_grad():
        (out * _weights_like([out])[0]).sum().backward()
    dead = [n for n, p in work.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    if dead:
        return (f"parameter `{dead[0]}` of {who} gets no gradient: it is not used in forward, or used through .data, "
                ".detach() or under torch.no_grad()")
    try:
        doubled = copy.deepcopy(module).double()(example.double())
    except Exception as exc:  # noqa: BLE001 - the learner's module failed: say how
        return f"{who} fails after .double() (a constant that is not a registered buffer stays float32): {_last_line(exc)}"
    if not isinstance(doubled, torch.Tensor) or doubled.dtype != torch.float64:
        return (f"after .double() {who} returns {summarize_value(doubled)}: a constant that is not a registered buffer "
                "(or a hard-coded dtype) keeps it in float32")
    return None


# ---------------------------------------------------------------------------
# running a checker
# ---------------------------------------------------------------------------
def _summarize_args(args: tuple, names: Sequence[str] | None) -> str:
    parts = []
    for i, a in enumerate(args):
        label = f"{names[i]}=" if names and i < len(names) else ""
        parts.append(label + summarize_value(a, max_items=4))
    return "; ".join(parts) if parts else "(no arguments)"


def as_dtype(case: Case, dtype: torch.dtype, suffix: str | None = None, only: Sequence[int] | None = None) -> Case:
    """A copy of ``case`` whose floating-point tensor inputs (and expected value) are cast to ``dtype``.

    ``only``: the positions of the arguments to cast (e.g. leave a float64 schedule alone).
    """
    import dataclasses

    def cast_args(args: tuple) -> tuple:
        return tuple(cast(a) if only is None or i in only else a for i, a in enumerate(args))

    def cast(value: Any, depth: int = 0) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        if isinstance(value, (tuple, list)) and depth < 3:
            items = [cast(v, depth + 1) for v in value]
            return tuple(items) if isinstance(value, tuple) else items
        return value

    name = f"{case.name}, {suffix or str(dtype).replace('torch.', '')}"
    expected = cast(case.expected) if case.expected is not None else None
    return dataclasses.replace(case, name=name, args=lambda: cast_args(case.build_args()), expected=expected, inputs=None,
                               hidden=True)


def probe_case(name: str, probe: Callable[[Callable], str | None], *, hidden: bool = True, hint: str = "",
               inputs: str = "", seed: int | None = None) -> Case:
    """A case that hands the learner's function to ``probe(fn) -> None | message`` (fresh noise, several
    training steps, module behaviour) and fails with the message it returns."""
    return Case(name, args=(), call=lambda fn: probe(fn), judge=lambda got, args: got, hidden=hidden, hint=hint,
                inputs=inputs or name, seed=seed)


def _fail_report(title: str, message: str) -> CheckResult:
    result = CheckResult(title=title, n_cases=1)
    result.failures.append(Failure("calling it", "-", message, kind="wrong"))
    return result


def run_checks(
    fn: Callable,
    cases: Sequence[Case],
    *,
    title: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    arg_names: Sequence[str] | None = None,
    validate: Callable[[Any, tuple], str | None] | None = None,
    stop_after: int | None = 3,
    grad_args: Sequence[int] = (),
    inputs_unchanged: bool = True,
    keep_dtype: bool = True,
) -> CheckResult:
    """Call ``fn`` on every case and collect the failures; never raises for the learner's mistakes.

    Args:
        fn: the learner's function.
        cases: the :class:`Case` list.
        title: shown at the top of the report (default: the function's name).
        atol, rtol: tolerances for float64 inputs; float32 inputs get at least
            :data:`DTYPE_TOLERANCE` (see :func:`tolerance`). ``None``: from the dtype.
        arg_names: parameter names used in the inputs summary.
        validate: an extra check ``validate(got, args) -> None | str`` run on
            every answer before comparing values (e.g. "rows sum to one").
        stop_after: report at most this many failures (then stop running
            cases), so one mistake does not bury the report.
        grad_args: positions of the arguments whose gradients must flow as
            through the reference (:func:`gradient_problem`); checked on cases
            with a ``reference`` once their value is right.
        inputs_unchanged: fail a case whose call changes an input tensor in place.
        keep_dtype: a floating-point tensor answer must have the reference's dtype.

    A stub's ``NotImplementedError`` becomes "not implemented yet"; any other
    exception, and any answer the comparison cannot handle, becomes a failed
    case showing the learner's line.
    """
    title = title or f"{getattr(fn, '__name__', 'function')}"
    if not callable(fn):
        return _fail_report(title, f"the checker needs the function itself, got {summarize_value(fn)}: pass the name "
                                   "of your function without calling it, e.g. check(my_function)")
    result = CheckResult(title=title, n_cases=len(cases), n_hidden=sum(c.hidden for c in cases))
    gradient_cases: list[tuple] = []
    for index, case in enumerate(cases, 1):
        if stop_after is not None and len(result.failures) >= stop_after:
            break
        args = case.build_args()
        inputs = case.inputs or _summarize_args(args, arg_names)
        case_atol, case_rtol = tolerance(input_dtype(args), atol if case.atol is None else case.atol,
                                         rtol if case.rtol is None else case.rtol)

        def fail(message: str, kind: str = "wrong", **kw: Any) -> None:
            result.failures.append(Failure(case.name, inputs, message, hidden=case.hidden, kind=kind, index=index, **kw))

        try:
            expected = None
            if case.judge is None:
                expected = case.expected if case.reference is None else _call(case.reference, args, case.seed)
        except Exception as exc:  # noqa: BLE001 - a broken case is the checker's fault, say so
            raise RuntimeError(f"checker case {case.name!r} could not compute its expected value") from exc
        call_args = _copy_args(args)  # a copy: in-place edits by the learner change nothing here
        versions = _versions(call_args)
        try:
            got = _call(fn if case.call is None else (lambda *a: case.call(fn, *a)), call_args, case.seed)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - we report the learner's error
            if _is_stub(exc):
                fail("not implemented yet: the function still raises NotImplementedError", kind="not implemented",
                     hint="replace the `raise NotImplementedError(...)` line with your code")
                break  # every other case would say the same
            fail(f"raised {_last_line(exc)}", kind="raised", hint=case.hint)
            continue
        try:
            problem, hint = _judge_answer(fn, case, cases, args, call_args, versions, got, expected, case_atol,
                                          case_rtol, arg_names, validate, grad_args, inputs_unchanged, keep_dtype)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - an answer the checker cannot handle is still a report
            where = learner_line(exc)
            problem = (f"the answer could not be checked: {summarize_value(got)} made the comparison raise "
                       f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else ""))
            hint = case.hint
        if problem:
            shown_expected = summarize_value(expected) if expected is not None and not isinstance(problem, _NoValues) else ""
            fail(str(problem), expected=shown_expected, got=summarize_value(got), hint=hint or "",
                 kind=getattr(problem, "kind", "wrong"))
        elif grad_args and case.reference is not None:
            gradient_cases.append((index, case, args, case_atol, case_rtol, inputs))
    # gradients last: a wrong value is explained better by its own hint than by the gradient it also gets wrong
    for index, case, args, case_atol, case_rtol, inputs in gradient_cases if result.passed else ():
        try:
            problem = gradient_problem(fn, case.reference, args, grad_args, names=arg_names, seed=case.seed,
                                       atol=case_atol, rtol=case_rtol)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the learner's code failed with gradients on
            problem = f"raised {_last_line(exc)} when its inputs require gradients"
        if problem:
            result.failures.append(Failure(case.name, inputs, problem, hidden=case.hidden, index=index))
            break
    return result


class _NoValues(str):
    """A failure message after which expected/got values would mislead (the value itself was right)."""

    kind = "wrong"


def _judge_answer(fn, case, cases, args, call_args, versions, got, expected, atol, rtol, arg_names, validate, grad_args,
                  inputs_unchanged, keep_dtype) -> tuple[str | None, str | None]:
    """``(problem, hint)`` for one answer; ``(None, None)`` when it is right."""
    if inputs_unchanged:
        changed = _modified_inputs(args, call_args, arg_names, versions)
        if changed:
            return _NoValues(f"changed its input {', '.join(changed)} in place (an in-place operation such as `+=`, "
                             "`.clamp_()`, `x[...] = ...` or `.data` edits): the caller's tensor is modified. Work on a "
                             "new tensor (x = x + ..., x.clone())"), None
    if _is_function_object(got):
        return (f"returned the function or method `{getattr(got, '__name__', '?')}` itself, not its value: call it "
                "(e.g. `.sum()`, not `.sum`)"), None
    if isinstance(got, torch.Tensor) and got.requires_grad:
        got = got.detach()
    if validate is not None and case.call is None:  # a probe's answer is its own verdict
        problem = validate(got, args)
        if problem:
            return problem, _diagnose(fn, case, cases, args, got, atol, rtol) or case.hint
    if case.judge is not None:
        problem = _call(case.judge, (got, args), case.seed)
        if problem:
            return problem, _diagnose(fn, case, cases, args, got, atol, rtol) or case.hint
        return None, None
    problem = compare(got, expected, atol, rtol, check_dtype=keep_dtype)
    if problem:
        return problem, _diagnose(fn, case, cases, args, got, atol, rtol) or case.hint
    return None, None


def _diagnose(fn: Callable, case: Case, cases: Sequence[Case], args: tuple, got: Any, atol: float,
              rtol: float) -> str | None:
    """The hint of the known mistake that explains ``got`` -- only when exactly one does.

    A mistake must match the answer on this case *and* on the other cases
    that have a reference, where the learner's function is run again: two
    mistakes that agree on this case are told apart there, and a hint is only
    given when one of them is left.
    """
    candidates = [m for m in case.mistakes if _matches(m, args, case.seed, got, atol, rtol)]
    if not candidates:
        return None
    for other in cases:
        if other is case or other.judge is not None or not any(m in other.mistakes for m in candidates):
            continue
        try:
            other_args = other.build_args()
            other_got = _call(fn, _copy_args(other_args), other.seed)
        except (Exception, SystemExit):  # noqa: BLE001 - a case the learner's code cannot run tells nothing
            continue
        if isinstance(other_got, torch.Tensor):
            other_got = other_got.detach()
        o_atol, o_rtol = tolerance(input_dtype(other_args), other.atol if other.atol is not None else atol,
                                   other.rtol if other.rtol is not None else rtol)
        candidates = [m for m in candidates
                      if m not in other.mistakes or _matches(m, other_args, other.seed, other_got, o_atol, o_rtol)]
        if not candidates:
            return None
    if len(candidates) != 1:
        return None
    mistake = candidates[0]
    return f"this looks like: {mistake.name}. {mistake.hint}"


def _matches(mistake: Mistake, args: tuple, seed: int | None, got: Any, atol: float, rtol: float) -> bool:
    try:
        wrong = _call(mistake.fn, _copy_args(args), seed)
        return compare(got, wrong, atol, rtol) is None
    except Exception:  # noqa: BLE001 - a diagnosis that cannot run says nothing
        return False


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
