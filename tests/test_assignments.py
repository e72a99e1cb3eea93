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
