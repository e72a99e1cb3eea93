"""The class grader (`python -m dgm.checks grade`): a folder of adversarial submissions to assignment 3
gets exactly the expected grades.csv; the declared points of every assignment are valid; the CLI
reports a user's mistakes in one line."""

import subprocess
import sys
import textwrap

import nbformat
import pytest

from assignment_support import CHAPTERS
from dgm.checks import BEGIN
from dgm.checks.grade import GradingError, definitions_source, grade_submissions, read_spec

SOURCE = CHAPTERS / "03_assignment.ipynb"
ASSIGNMENTS = sorted(CHAPTERS.glob("0*_assignment.ipynb"))


def _solution_cells(source=SOURCE):
    nb = nbformat.read(source, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return code[0], [s for s in code if BEGIN in s]


IMPORTS, SOLUTIONS = _solution_cells()
REPARAM, KL, ELBO = SOLUTIONS

KL_MISSING_HALF = """
def kl_to_standard_normal(mu, logvar):
    return (mu**2 + logvar.exp() - logvar - 1).sum(-1)
"""


def _notebook(folder, name, *cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    nbformat.write(nb, folder / name)


def _submissions(folder):
    _notebook(folder, "correct.ipynb", IMPORTS, REPARAM, KL, ELBO, "a03.check_kl(kl_to_standard_normal)")
    _notebook(folder, "partial.ipynb", IMPORTS, REPARAM, KL_MISSING_HALF, ELBO)
    _notebook(folder, "infinite_loop.ipynb", IMPORTS, REPARAM, KL, ELBO, "while True:\n    pass")
    _notebook(folder, "crash_at_import.ipynb", "import dgm_no_such_module\n" + IMPORTS, REPARAM, KL, ELBO)
    _notebook(folder, "tamper_redefines_checker.ipynb", IMPORTS, REPARAM, KL_MISSING_HALF, ELBO, """
        def check_kl(fn, strict=None):
            print("[PASS] kl_to_standard_normal: all 5 cases passed.")
        a03.check_kl = check_kl
        a03.check_kl(kl_to_standard_normal)
        """)
    _notebook(folder, "tamper_monkeypatches.ipynb", IMPORTS, REPARAM, KL_MISSING_HALF, ELBO, """
        import dgm.checks
        dgm.checks.compare = lambda *args, **kwargs: None
        dgm.checks.CheckResult.passed = property(lambda self: True)
        """)
    _notebook(folder, "tamper_fake_output.ipynb", IMPORTS, REPARAM, KL_MISSING_HALF, ELBO, """
        print("[PASS] kl_to_standard_normal: all 5 cases (2 shown in the assignment, 3 hidden) passed.")
        print('{"name": "kl_to_standard_normal", "status": "passed", "report": ""}')
        """)
    _notebook(folder, "tamper_edits_package.ipynb", IMPORTS, REPARAM, KL_MISSING_HALF, ELBO, """
        import glob, os, stat, tempfile
        patch = "\\ndef check_kl(fn, strict=None):\\n    return run_checks(lambda: 0, [])\\n"
        targets = [a03.__file__] + glob.glob(os.path.join(tempfile.gettempdir(), "dgm-grader-*", "**", "a03.py"),
                                             recursive=True)
        for target in targets:
            for folder in (os.path.dirname(target), target):
                os.chmod(folder, os.stat(folder).st_mode | stat.S_IWUSR)
            with open(target, "a") as handle:
                handle.write(patch)
        """)
    _notebook(folder, "tamper_plants_a_module.ipynb", IMPORTS, REPARAM, KL_MISSING_HALF, ELBO, """
        import glob, os, tempfile
        fake = "import sys\\nprint('[PASS]')\\nsys.exit(0)\\n"
        for root in glob.glob(os.path.join(tempfile.gettempdir(), "dgm-grader-*", "checks", "src")):
            os.chmod(root, 0o700)
            with open(os.path.join(root, "torch.py"), "w") as handle:
                handle.write(fake)
        """)
    _notebook(folder, "tamper_while_checked.ipynb", IMPORTS, REPARAM, """
        def kl_to_standard_normal(mu, logvar):
            import dgm.checks
            dgm.checks.compare = lambda *args, **kwargs: None
            return mu.sum(-1)
        """, ELBO)
    _notebook(folder, "huge_output.ipynb", IMPORTS, REPARAM, KL, ELBO, "print('x' * 3_000_000)")
    _notebook(folder, "floods_output.ipynb", IMPORTS, REPARAM, KL, ELBO, "while True:\n    print('y' * 100_000)")
    _notebook(folder, "a_deletes_files.ipynb", IMPORTS, REPARAM, KL, ELBO, """
        import os, shutil
        for root in (".", "..", os.path.dirname(os.path.dirname(a03.__file__))):
            for name in os.listdir(root):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                if os.path.exists(os.path.join(root, name)):
                    os.remove(os.path.join(root, name))
        """)
    _notebook(folder, "missing_and_renamed.ipynb", IMPORTS, REPARAM.replace("def reparameterize", "def reparametrize"),
              KL)
    _notebook(folder, "exits_while_checked.ipynb", IMPORTS, REPARAM,
              "def kl_to_standard_normal(mu, logvar):\n    import os\n    os._exit(3)", ELBO)
    _notebook(folder, "hangs_while_checked.ipynb", IMPORTS, REPARAM, KL,
              "def negative_elbo(x, logits, mu, logvar):\n    while True:\n        pass")
    (folder / "unreadable.ipynb").write_text("this is not a notebook")


# negative_elbo calls the submission's own kl_to_standard_normal: a wrong (or exiting) KL costs both
EXPECTED_CSV = """\
submission,reparameterize,kl_to_standard_normal,negative_elbo,total,possible,why reparameterize,why kl_to_standard_normal,why negative_elbo
a_deletes_files.ipynb,2,1,2,5,5,,,
correct.ipynb,2,1,2,5,5,,,
crash_at_import.ipynb,0,1,0,1,5,raised,,raised
exits_while_checked.ipynb,2,0,0,2,5,,raised,raised
floods_output.ipynb,0,0,0,0,5,output limit,output limit,output limit
hangs_while_checked.ipynb,2,1,0,3,5,,,timed out
huge_output.ipynb,2,1,2,5,5,,,
infinite_loop.ipynb,0,0,0,0,5,timed out,timed out,timed out
missing_and_renamed.ipynb,0,1,0,1,5,missing,,missing
partial.ipynb,2,0,0,2,5,,failed case 2,failed case 1
tamper_edits_package.ipynb,2,0,0,2,5,,failed case 2,failed case 1
tamper_fake_output.ipynb,2,0,0,2,5,,failed case 2,failed case 1
tamper_monkeypatches.ipynb,2,0,0,2,5,,failed case 2,failed case 1
tamper_plants_a_module.ipynb,2,0,0,2,5,,failed case 2,failed case 1
tamper_redefines_checker.ipynb,2,0,0,2,5,,failed case 2,failed case 1
tamper_while_checked.ipynb,2,0,0,2,5,,tampered,tampered
unreadable.ipynb,0,0,0,0,5,unreadable,unreadable,unreadable
"""


@pytest.mark.slow
def test_adversarial_submissions_get_exactly_the_expected_grades(tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    _submissions(submissions)
    grades = grade_submissions(SOURCE, sorted(submissions.glob("*.ipynb")), csv_path=tmp_path / "grades.csv",
                               feedback_dir=tmp_path / "feedback", time_limit=25, check_time_limit=10,
                               max_output_mb=20)
    assert (tmp_path / "grades.csv").read_text() == EXPECTED_CSV
    assert len(grades) == 17 and sorted(p.name for p in submissions.iterdir()) == sorted(
        [g.submission for g in grades])  # nothing deleted in the instructor's folder
    feedback = {p.stem: p.read_text() for p in (tmp_path / "feedback").iterdir()}
    assert len(feedback) == 17
    assert "this looks like: the 1/2 is missing" in feedback["partial"]
    assert "more bytes of output left out" in feedback["huge_output"]
    assert "not finish within 25 s" in feedback["infinite_loop"]
    assert "No module named 'dgm_no_such_module'" in feedback["crash_at_import"]
    assert "NameError" in feedback["crash_at_import"]
    assert "of your code (cell 2 of the notebook): " in feedback["crash_at_import"]  # the learner's own line
    assert "restored" in feedback["tamper_edits_package"] and "restored" in feedback["tamper_plants_a_module"]


def test_graded_definitions_leave_out_what_the_notebook_did():
    cells = ["import torch\nEPS = 1e-3\nmodel = train()\n%matplotlib inline",
             "def f(x):\n    return x\nf.calls = 0\na03.check_f = f\nscale = lambda x: torch.exp(x)",
             "def broken(:\n    pass",
             "print('[PASS]')\nclass Layer:\n    pass"]
    kept = definitions_source(cells)
    assert kept == [["import torch", "EPS = 1e-3"], ["def f(x):\n    return x", "scale = lambda x: torch.exp(x)"],
                    [], ["class Layer:\n    pass"]]


@pytest.mark.parametrize("source", ASSIGNMENTS, ids=[p.stem for p in ASSIGNMENTS])
def test_every_assignment_declares_its_points(source):
    spec = read_spec(source)
    nb = nbformat.read(source, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert spec.functions and spec.possible > 0
    for f in spec.functions:
        assert f"{spec.module.rsplit('.', 1)[1]}.{f.checker}({f.name})" in code, f
        assert f.points > 0


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(GradingError, match="declares nothing to grade"):
        bare = tmp_path / "bare.ipynb"
        nbformat.write(nbformat.v4.new_notebook(), bare)
        read_spec(bare)
    with pytest.raises(GradingError, match="no such assignment notebook"):
        read_spec(tmp_path / "missing.ipynb")
    with pytest.raises(GradingError, match="no such submission"):
        grade_submissions(SOURCE, [tmp_path / "nope.ipynb"])
    run = subprocess.run([sys.executable, "-m", "dgm.checks", "grade", str(tmp_path / "missing.ipynb"),
                          str(tmp_path / "x.ipynb")], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "no such assignment notebook" in run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("source", ASSIGNMENTS, ids=[p.stem for p in ASSIGNMENTS])
def test_every_assignment_grades_its_solution_full_and_its_hand_out_zero(source, tmp_path):
    spec = read_spec(source)
    solution, student = tmp_path / "solution.ipynb", tmp_path / "student.ipynb"
    solution.write_bytes(source.read_bytes())
    student.write_bytes(source.with_name(f"{source.stem}_student.ipynb").read_bytes())
    grades = {g.submission: g for g in grade_submissions(source, [solution, student], time_limit=300)}
    assert grades["solution.ipynb"].total == spec.possible, {n: (f.reason, f.report) for n, f in
                                                             grades["solution.ipynb"].functions.items()}
    assert grades["student.ipynb"].total == 0
    assert {f.reason for f in grades["student.ipynb"].functions.values()} == {"not implemented"}
