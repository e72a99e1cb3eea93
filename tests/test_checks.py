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


def test_in_place_changes_by_the_learner_fail_and_do_not_change_the_expected_value():
    x = torch.tensor([1.0, 2.0])

    def clobber(t):
        t.mul_(10)
        return t

    result = run_checks(clobber, [Case("c", (x,), reference=lambda t: t * 10)], arg_names=("t",))
    assert not result.passed and "changed its input `t` in place" in str(result), str(result)
    assert torch.equal(x, torch.tensor([1.0, 2.0]))
    assert run_checks(lambda t: t * 10, [Case("c", (x,), reference=lambda t: t * 10)]).passed


# ---------------------------------------------------------------------------
# the shared machinery: hints only when unambiguous, gradients, randomness, modules, dtypes
# ---------------------------------------------------------------------------
def test_a_hint_is_given_only_when_one_mistake_explains_every_case():
    double = Mistake("doubled", lambda a: 2 * a, "do not double")
    square = Mistake("squared", lambda a: a * a, "do not square")
    cases = [Case("two", (torch.tensor(2.0),), reference=lambda a: a, mistakes=[double, square]),  # 2a == a*a here
             Case("three", (torch.tensor(3.0),), reference=lambda a: a, mistakes=[double, square], hidden=True)]
    report = str(run_checks(lambda a: a * a, cases))
    assert "this looks like: squared" in report and "doubled" not in report
    report = str(run_checks(lambda a: 2 * a, cases))
    assert "this looks like: doubled" in report and "squared" not in report
    report = str(run_checks(lambda a: 4.0 if float(a) == 2 else 0.0, cases))  # like both on case one, like neither after
    assert "this looks like" not in report


def test_gradient_problems_are_named():
    from dgm.checks import gradient_problem

    args = (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    ref = lambda a, b: (a * b).sum()  # noqa: E731
    assert gradient_problem(ref, ref, args, (0, 1), names=("a", "b")) is None
    assert "Python number" in gradient_problem(lambda a, b: float((a * b).sum()), ref, args, (0, 1))
    assert "no gradient flows back" in gradient_problem(lambda a, b: (a * b).sum().detach(), ref, args, (0, 1))
    assert "no gradient reaches `a`" in gradient_problem(lambda a, b: (a.detach() * b).sum(), ref, args, (0, 1),
                                                           names=("a", "b"))
    assert "gradient with respect to `b`" in gradient_problem(lambda a, b: (a * b.data).sum() + 0.5 * b.sum(), ref, args,
                                                               (0, 1), names=("a", "b"))


def test_randomness_and_generator_problems():
    from dgm.checks import generator_problem, randomness_problem

    assert randomness_problem(lambda: torch.randn(3)) is None
    assert "two calls in a row" in randomness_problem(lambda: torch.randn(3, generator=torch.Generator().manual_seed(0)))
    import numpy as np

    assert "re-seeding" in randomness_problem(lambda: torch.from_numpy(np.random.randn(3)))
    assert generator_problem(lambda g: torch.randn(3, generator=g)) is None
    assert "do not follow" in generator_problem(lambda g: torch.randn(3))
    assert "global generator moved" in generator_problem(lambda g: torch.randn(3, generator=g) + 0 * torch.randn(3))


def test_module_problems():
    from torch import nn

    from dgm.checks import module_problem

    class PlainMask(nn.Linear):
        def __init__(self):
            super().__init__(3, 2)
            self.mask = torch.ones(2, 3)

        def forward(self, x):
            return nn.functional.linear(x, self.weight * self.mask, self.bias)

    class Buffered(PlainMask):
        def __init__(self):
            super().__init__()
            del self.mask
            self.register_buffer("mask", torch.ones(2, 3))

    class DeadBias(Buffered):
        def forward(self, x):
            return nn.functional.linear(x, self.weight * self.mask, self.bias.detach())

    x = torch.randn(4, 3)
    assert module_problem(Buffered(), x) is None
    assert "register_buffer('mask'" in module_problem(PlainMask(), x)
    assert "`bias`" in module_problem(DeadBias(), x)
    assert "should be a torch.nn.Module" in module_problem(lambda t: t, x)


def test_tolerance_follows_the_dtype_and_as_dtype_casts_only_what_it_is_told():
    from dgm.checks import as_dtype, input_dtype, tolerance

    assert tolerance(torch.float64) == (1e-9, 1e-7)
    assert tolerance(torch.float32, 1e-8, 1e-8) == (1e-5, 1e-4)  # a float32 answer is never held to float64
    assert tolerance(torch.float64, 1e-6, 1e-5) == (1e-6, 1e-5)
    assert input_dtype((torch.zeros(2), torch.zeros(2, dtype=torch.float64), 3)) == torch.float32
    case = Case("c", (torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)), reference=add)
    cast = as_dtype(case, torch.float32, only=(0,))
    a, b = cast.build_args()
    assert a.dtype == torch.float32 and b.dtype == torch.float64 and cast.hidden and cast.name == "c, float32"


def test_dtype_of_the_answer_must_match():
    case = Case("c", (torch.ones(2, dtype=torch.float64),), reference=lambda t: t * 2)
    assert "wrong dtype" in str(run_checks(lambda t: (t * 2).float(), [case]))
    assert run_checks(lambda t: t * 2, [case]).passed


def test_library_frames_are_filtered_from_the_report():
    def learner(a):
        return torch.zeros(2, 3) @ a  # raises inside torch

    result = run_checks(learner, [Case("c", (torch.zeros(4),), reference=lambda a: a)])
    message = result.failures[0].message
    assert "raised at line" in message and "of your code (test_checks.py): return torch.zeros(2, 3) @ a" in message
    assert result.failures[0].kind == "raised" and result.failures[0].index == 1


def test_a_probe_case_reports_its_message():
    from dgm.checks import probe_case

    result = run_checks(lambda: 1, [probe_case("probe", lambda fn: None if fn() == 1 else "fn() is not 1")])
    assert result.passed
    result = run_checks(lambda: 2, [probe_case("probe", lambda fn: None if fn() == 1 else "fn() is not 1")])
    assert result.failures[0].message == "fn() is not 1"


def test_parameter_gradient_problem_tells_each_way_a_loss_can_fail_to_train():
    from dgm.checks import parameter_gradient_problem

    def build():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2), torch.randn(5, 3)

    def reference(net, x):
        return net(x).pow(2).mean()

    assert parameter_gradient_problem(lambda net, x: net(x).pow(2).sum() / 10, reference, build) is None
    assert "Python number" in parameter_gradient_problem(lambda net, x: float(reference(net, x)), reference, build)
    with_no_grad = parameter_gradient_problem(lambda net, x: reference(net, x).detach(), reference, build)
    assert "no gradient reaches the network's parameters" in with_no_grad

    def half_cut(net, x):  # the right value, but one factor of the square is detached
        y = net(x)
        return (y * y.detach()).mean()

    assert "different gradient" in parameter_gradient_problem(half_cut, reference, build, cut="y was detached")
