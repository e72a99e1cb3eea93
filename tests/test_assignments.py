"""What every assignment must satisfy, in one place, driven by the ``SPEC`` table each
test_assignment_NN.py fills in beside its plausible mistakes: every checker accepts the
notebook's solution and rejects each listed mistake with the expected report, strict mode
raises, the student notebook leaks no solution, the solved notebook passes under
DGM_CHECKS_STRICT=1 and the untouched one runs through without it (and fails under it),
the committed student notebook is exactly what the generator makes, notebooks are
committed without outputs, and every checker reports an unfinished stub as "not
implemented yet"."""

import functools
import importlib
import json

import nbformat
import pytest

from assignment_support import CHAPTERS, execute, load_solutions, text_outputs
from dgm.checks import BEGIN, make_student_notebook

ASSIGNMENTS = sorted(p.name[:2] for p in CHAPTERS.glob("0*_assignment.ipynb"))
SPECS = {number: importlib.import_module(f"test_assignment_{number}").SPEC for number in ASSIGNMENTS}
SOLUTION_CASES = [(n, name) for n, spec in SPECS.items() for name in spec.checkers]
MISTAKES = [(n, *row) for n, spec in SPECS.items() for row in spec.wrong]


@functools.cache
def _solutions(number: str) -> dict:
    return load_solutions(SPECS[number].source)


@pytest.mark.parametrize("number, name", SOLUTION_CASES, ids=[f"{n}-{name}" for n, name in SOLUTION_CASES])
def test_checker_accepts_the_solution(number, name):
    spec = SPECS[number]
    result = spec.checkers[name](_solutions(number)[name], strict=False)
    assert result.passed, str(result)
    assert result.n_hidden >= spec.min_hidden_cases


@pytest.mark.parametrize("number, checker, wrong, first_case, text", MISTAKES,
                         ids=[f"{m[0]}-{m[2].__name__}" for m in MISTAKES])
def test_checker_rejects_a_plausible_mistake(number, checker, wrong, first_case, text):
    result = SPECS[number].checkers[checker](wrong, strict=False)
    assert not result.passed, f"{wrong.__name__} was accepted"
    assert result.failures[0].case == first_case, str(result)
    report = str(result)
    assert f"FAILED case '{first_case}" in report, report
    assert text in report, report


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_checker_raises_in_strict_mode(number, monkeypatch):
    name, wrong, message = SPECS[number].strict_example
    monkeypatch.setenv("DGM_CHECKS_STRICT", "1")
    with pytest.raises(AssertionError, match=message):
        SPECS[number].checkers[name](wrong)


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_student_notebook_has_no_solutions(number):
    spec = SPECS[number]
    nb = nbformat.read(spec.student, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for leak in (BEGIN, *spec.leaks):
        assert leak not in code, leak
    assert code.count('raise NotImplementedError("your code here")') == spec.stubs
    assert not any("Answers" in c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.slow
@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_source_notebook_passes_in_strict_mode(number, monkeypatch):
    spec = SPECS[number]
    monkeypatch.setenv("DGM_CHECKS_STRICT", "1")
    if spec.quick:
        monkeypatch.setenv("DGM_QUICK", "1")
    text = text_outputs(execute(spec.source))
    assert text.count("[PASS]") == len(spec.checkers), text
    for expected in spec.source_expect:
        assert expected in text, expected
    if spec.source_check is not None:
        spec.source_check(text)


@pytest.mark.slow
@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_student_notebook_runs_through_without_strict_mode(number, monkeypatch):
    """A learner who runs everything before finishing sees reports, not a crash."""
    spec = SPECS[number]
    monkeypatch.delenv("DGM_CHECKS_STRICT", raising=False)
    if spec.quick:
        monkeypatch.setenv("DGM_QUICK", "1")
    text = text_outputs(execute(spec.student))
    assert text.count("not implemented yet") == len(spec.checkers), text
    for expected in spec.student_expect:
        assert expected in text, expected


def test_every_chapter_has_an_assignment():
    assert ASSIGNMENTS == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_committed_student_notebook_is_up_to_date(number, tmp_path):
    source, student = SPECS[number].source, SPECS[number].student
    fix = f"run `python -m dgm.checks make-student chapters/{source.name}`"
    assert student.exists(), fix
    fresh = make_student_notebook(source, tmp_path / student.name)
    assert json.loads(student.read_text()) == json.loads(fresh.read_text()), f"{student.name} is out of date: {fix}"


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_notebooks_are_committed_without_outputs(number):
    for path in (SPECS[number].source, SPECS[number].student):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_every_checker_reports_an_unfinished_stub(number):
    checks = importlib.import_module(f"dgm.checks.a{number}")
    checkers = [getattr(checks, name) for name in dir(checks) if name.startswith("check_")]
    assert checkers

    def stub(*args, **kwargs):
        raise NotImplementedError("your code here")

    for check in checkers:
        result = check(stub, strict=False)
        assert not result.passed and "not implemented yet" in str(result), check.__name__


@pytest.mark.slow
@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_student_notebook_fails_in_strict_mode(number, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("DGM_CHECKS_STRICT", "1")
    with pytest.raises(CellExecutionError, match="not implemented yet"):
        execute(SPECS[number].student)


def _all_checkers():
    for number in ASSIGNMENTS:
        checks = importlib.import_module(f"dgm.checks.a{number}")
        for name in sorted(dir(checks)):
            if name.startswith("check_"):
                yield f"a{number}.{name}", getattr(checks, name)


CHECKERS = list(_all_checkers())


def _deep_error(*args, **kwargs):
    import torch

    return torch.zeros(3) @ torch.zeros(4)  # raises inside PyTorch


class _Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")


def _method_not_value(*args, **kwargs):
    import torch

    return torch.ones(3).sum  # the method, not its value


FUZZ = {
    "None": lambda *a, **k: None,
    "a list": lambda *a, **k: [1.0, 2.0],
    "a string": lambda *a, **k: "42",
    "a float": lambda *a, **k: 0.5,
    "a bool": lambda *a, **k: True,
    "an int tensor": lambda *a, **k: __import__("torch").ones(2, 3, dtype=__import__("torch").long),
    "a tensor of the wrong shape": lambda *a, **k: __import__("torch").zeros(7, 1, 5),
    "a NaN tensor": lambda *a, **k: __import__("torch").full((2,), float("nan")),
    "an empty tuple": lambda *a, **k: (),
    "a triple": lambda *a, **k: (1, 2, 3),
    "a dict": lambda *a, **k: {"x": 1},
    "an unprintable object": lambda *a, **k: _Unprintable(),
    "a method instead of its value": _method_not_value,
    "an error deep inside PyTorch": _deep_error,
    "a ValueError": lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")),
    "SystemExit": lambda *a, **k: (_ for _ in ()).throw(SystemExit(1)),
    "a class instead of a function": type("NotAFunction", (), {}),
    "not callable at all": 3,
}


@pytest.mark.parametrize("checker_name, checker", CHECKERS, ids=[c[0] for c in CHECKERS])
def test_every_checker_reports_any_answer_without_crashing(checker_name, checker):
    for label, wrong in FUZZ.items():
        result = checker(wrong, strict=False)
        assert not result.passed, f"{checker_name} accepted {label}"
        text = str(result)
        assert text.startswith("[FAIL]") and "FAILED case" in text, (checker_name, label, text)


def test_a_crash_inside_pytorch_points_at_the_learners_line():
    from dgm.checks import a03

    report = str(a03.check_kl(_deep_error, strict=False))
    assert "RuntimeError" in report and "return torch.zeros(3) @ torch.zeros(4)" in report, report
    assert "your code (test_assignments.py)" in report
