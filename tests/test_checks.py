"""dgm.checks: cases, comparisons, reports, strict mode and the student-notebook generator."""

import json
import math
import subprocess
import sys

import nbformat
import pytest
import torch

from dgm import checks
from dgm.checks import Case, Mistake, compare, finish, make_student_notebook, run_checks, student_path


def add(a, b):
    return a + b


def test_passing_function_reports_pass():
    cases = [
        Case("ints", (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])), expected=torch.tensor([4.0, 6.0])),
        Case("hidden", lambda: (torch.ones(3), torch.ones(3)), reference=lambda a, b: a + b, hidden=True),
    ]
    result = run_checks(add, cases, title="add")
    assert result.passed and bool(result)
    assert result.failures == []
    assert str(result).startswith("[PASS] add: all 2 cases (1 shown in the assignment, 1 hidden) passed")
    assert "PASS" in result._repr_html_()


def test_wrong_value_names_case_expected_got_and_hint():
    cases = [Case("the case", (torch.tensor([1.0]), torch.tensor([2.0])), expected=torch.tensor([3.0]), hint="add them")]
    result = run_checks(lambda a, b: a - b, cases, title="add")
    assert not result.passed
    assert result.failed_cases == ["the case"]
    text = str(result)
    assert "FAILED case 'the case'" in text and "expected:" in text and "got:" in text and "hint:     add them" in text
    assert "<pre" in result._repr_html_() and "FAIL" in result._repr_html_()


def test_known_mistake_gives_its_hint():
    case = Case("c", (torch.tensor([1.0]), torch.tensor([2.0])), expected=torch.tensor([3.0]), hint="general",
                mistakes=[Mistake("subtracting", lambda a, b: a - b, "use +")])
    result = run_checks(lambda a, b: a - b, [case])
    assert "this looks like: subtracting. use +" in result.failures[0].hint


@pytest.mark.parametrize(
    "got, message",
    [
        (torch.zeros(3), "wrong shape"),
        (torch.zeros(2, dtype=torch.long), "wrong dtype"),
        (torch.tensor([float("nan"), 0.0]), "NaN"),
        (torch.tensor([float("inf"), 0.0]), "inf"),
        ([0.0, 0.0], "expected a torch.Tensor"),
    ],
)
def test_shape_dtype_nan_inf_are_caught(got, message):
    problem = compare(got, torch.tensor([0.0, 0.0]), atol=1e-6, rtol=1e-5)
    assert problem is not None and message in problem


def test_compare_scalars_accepts_floats_and_0d_tensors_and_matching_inf():
    assert compare(1.0, 1.0, 1e-9, 0) is None
    assert compare(torch.tensor(2.0), 2.0, 1e-6, 0) is None
    assert compare(float("inf"), math.inf, 1e-6, 0) is None
    assert "NaN" in compare(float("nan"), math.inf, 1e-6, 0)
    assert "expected a number" in compare("2", 2.0, 1e-6, 0)
    assert "element 1" in compare((1.0, 3.0), (1.0, 2.0), 1e-6, 0)


def test_not_implemented_is_reported_once():
    def stub(a, b):
        raise NotImplementedError("your code here")

    cases = [Case(f"c{i}", (1.0, 2.0), expected=3.0) for i in range(3)]
    result = run_checks(stub, cases)
    assert len(result.failures) == 1
    assert "not implemented yet" in result.failures[0].message


def test_exceptions_become_failed_cases_with_the_last_traceback_line():
    def broken(a, b):
        return a[5]

    result = run_checks(broken, [Case("boom", (torch.zeros(2), torch.zeros(2)), expected=torch.zeros(2))])
    assert result.failed_cases == ["boom"]
    assert "IndexError" in result.failures[0].message
    assert "return a[5]" in result.failures[0].message


def test_judge_and_validate_hooks():
    def judge(got, args):
        return None if got > 0 else "must be positive"

    result = run_checks(lambda: -1.0, [Case("j", (), judge=judge)])
    assert result.failures[0].message == "must be positive"
    result = run_checks(lambda: 1.0, [Case("v", (), expected=1.0)], validate=lambda got, args: "nope")
    assert result.failures[0].message == "nope"


def test_seeded_case_does_not_touch_the_learners_random_state():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    run_checks(lambda: torch.rand(2), [Case("r", (), expected=torch.zeros(2), seed=7)])
    assert torch.equal(torch.rand(1), before)


def test_stop_after_limits_the_report():
    cases = [Case(f"c{i}", (), expected=1.0) for i in range(6)]
    assert len(run_checks(lambda: 0.0, cases, stop_after=2).failures) == 2
    assert len(run_checks(lambda: 0.0, cases, stop_after=None).failures) == 6


def test_strict_mode_raises_with_the_report(monkeypatch):
    failing = run_checks(lambda: 0.0, [Case("c", (), expected=1.0)], title="t")
    monkeypatch.delenv("DGM_CHECKS_STRICT", raising=False)
    assert finish(failing) is failing  # reports, does not raise
    monkeypatch.setenv("DGM_CHECKS_STRICT", "1")
    with pytest.raises(AssertionError, match="FAILED case 'c'"):
        finish(failing)
    passing = run_checks(lambda: 1.0, [Case("c", (), expected=1.0)])
    assert finish(passing) is passing
    monkeypatch.setenv("DGM_CHECKS_STRICT", "0")
    assert finish(failing) is failing


# ---------------------------------------------------------------------------
# student notebooks
# ---------------------------------------------------------------------------
def _source_notebook(path):
    nb = nbformat.v4.new_notebook()
    cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell(
            'def f(x):\n    """Docstring stays."""\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n'
        ),
        nbformat.v4.new_code_cell("# BEGIN SOLUTION: alpha = ...\nalpha = 0.5\n# END SOLUTION\nprint(alpha)"),
        nbformat.v4.new_code_cell("answer = 42"),
        nbformat.v4.new_markdown_cell("The answer is 42."),
        nbformat.v4.new_code_cell("print(f(1))"),
    ]
    cells[1].metadata["tags"] = ["hide-input"]
    cells[3].metadata["tags"] = ["solution"]
    cells[4].metadata["tags"] = ["solution"]
    cells[5].outputs = [nbformat.v4.new_output("stream", text="2\n")]
    cells[5].execution_count = 3
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    nb.cells = cells
    nbformat.write(nb, path)


def test_make_student_notebook_strips_solutions(tmp_path):
    src = tmp_path / "hw.ipynb"
    _source_notebook(src)
    dst = make_student_notebook(src)
    assert dst == student_path(src) == tmp_path / "hw_student.ipynb"
    nb = nbformat.read(dst, as_version=4)
    sources = [c.source for c in nb.cells]
    assert "generated from" in sources[0]
    joined = "\n".join(sources)
    assert "x + 1" not in joined and "alpha = 0.5" not in joined and "answer = 42" not in joined
    assert "The answer is 42." not in joined  # markdown solution removed
    f_cell = next(c for c in nb.cells if "def f" in c.source)
    assert 'def f(x):\n    """Docstring stays."""\n    # YOUR CODE HERE\n    raise NotImplementedError(' in f_cell.source
    assert "tags" not in f_cell.metadata  # hide-input dropped so learners see the stub
    assert "alpha = ...\nprint(alpha)" in joined
    assert "raise NotImplementedError" in next(c for c in nb.cells if c.id == "cell-3").source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    # the stubbed function raises NotImplementedError
    namespace = {}
    exec(f_cell.source, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_make_student_is_deterministic_and_cli_checks_it(tmp_path):
    src = tmp_path / "hw.ipynb"
    _source_notebook(src)
    a = make_student_notebook(src, tmp_path / "a.ipynb").read_bytes()
    b = make_student_notebook(src, tmp_path / "b.ipynb").read_bytes()
    assert a == b
    from dgm.checks.__main__ import main

    out = subprocess.run([sys.executable, "-m", "dgm.checks", "make-student", str(src)],
                         capture_output=True, text=True, check=True)
    assert "hw_student.ipynb" in out.stdout
    assert main(["check-student", str(src)]) == 0
    student = student_path(src)
    data = json.loads(student.read_text())
    data["cells"].pop()
    student.write_text(json.dumps(data))
    assert main(["check-student", str(src)]) == 1
    assert main(["make-student", str(src)]) == 0
    assert main(["check-student", str(src)]) == 0


def test_unclosed_marker_is_an_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# BEGIN SOLUTION\nx = 1\n")]
    nbformat.write(nb, tmp_path / "bad.ipynb")
    with pytest.raises(ValueError, match="never closed"):
        make_student_notebook(tmp_path / "bad.ipynb")


def test_public_names():
    for name in checks.__all__:
        assert hasattr(checks, name)


def test_finite_answer_where_inf_is_expected_fails():
    assert "expected inf" in compare(27.6, math.inf, 1e-6, 1e-5)
    assert "expected inf" in compare(torch.tensor([1.0, 5.0]), torch.tensor([1.0, math.inf]), 1e-6, 1e-5)
    assert compare(torch.tensor([1.0, math.inf]), torch.tensor([1.0, math.inf]), 1e-6, 1e-5) is None


def test_in_place_changes_by_the_learner_do_not_change_the_expected_value():
    x = torch.tensor([1.0, 2.0])

    def clobber(t):
        t.mul_(10)
        return t

    result = run_checks(clobber, [Case("c", (x,), reference=lambda t: t * 10)])
    assert result.passed, str(result)
    assert torch.equal(x, torch.tensor([1.0, 2.0]))
