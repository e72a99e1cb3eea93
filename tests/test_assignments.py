"""What every assignment must satisfy, in one place (the per-assignment files test
their own checkers and mistakes): the committed student notebook is exactly what
the generator makes, notebooks are committed without outputs, every checker
reports an unfinished stub as "not implemented yet", and the untouched student
notebook fails under DGM_CHECKS_STRICT=1."""

import importlib
import json

import nbformat
import pytest

from assignment_support import CHAPTERS, execute
from dgm.checks import make_student_notebook

ASSIGNMENTS = sorted(p.name[:2] for p in CHAPTERS.glob("0*_assignment.ipynb"))


def _paths(number: str):
    return CHAPTERS / f"{number}_assignment.ipynb", CHAPTERS / f"{number}_assignment_student.ipynb"


def test_every_chapter_has_an_assignment():
    assert ASSIGNMENTS == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_committed_student_notebook_is_up_to_date(number, tmp_path):
    source, student = _paths(number)
    fix = f"run `python -m dgm.checks make-student chapters/{source.name}`"
    assert student.exists(), fix
    fresh = make_student_notebook(source, tmp_path / student.name)
    assert json.loads(student.read_text()) == json.loads(fresh.read_text()), f"{student.name} is out of date: {fix}"


@pytest.mark.parametrize("number", ASSIGNMENTS)
def test_notebooks_are_committed_without_outputs(number):
    for path in _paths(number):
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
        execute(_paths(number)[1])


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
