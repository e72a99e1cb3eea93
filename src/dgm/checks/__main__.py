"""``python -m dgm.checks``: make the student version of an assignment notebook, or grade a class.

    python -m dgm.checks make-student chapters/01_assignment.ipynb [-o OUT]
    python -m dgm.checks check-student chapters/01_assignment.ipynb
    python -m dgm.checks grade chapters/03_assignment.ipynb submissions/*.ipynb --csv grades.csv --feedback feedback/

``check-student`` exits with status 1 when the committed student notebook
differs from a fresh generation (run ``make-student`` and commit).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import make_student_notebook, student_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgm.checks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-student", help="write the student notebook (solutions replaced by stubs)")
    make.add_argument("source", help="assignment notebook with the solutions marked")
    make.add_argument("-o", "--output", help="where to write it (default: SOURCE with _student added)")
    check = sub.add_parser("check-student", help="fail if the student notebook is out of date")
    check.add_argument("source")
    check.add_argument("-o", "--output", help="the student notebook to compare (default: SOURCE with _student added)")
    grade = sub.add_parser("grade", help="grade submitted notebooks (see the book's Assignments page)")
    grade.add_argument("source", help="the assignment's source notebook (declares the points)")
    grade.add_argument("submissions", nargs="+", help="the submitted notebooks")
    grade.add_argument("--csv", default="grades.csv", help="where to write the grades (default: grades.csv)")
    grade.add_argument("--feedback", default="feedback", help="folder for one feedback file per submission")
    grade.add_argument("--time-limit", type=float, default=300.0, help="seconds for running one notebook (300)")
    grade.add_argument("--check-time-limit", type=float, default=120.0, help="seconds for checking one function (120)")
    grade.add_argument("--max-output-mb", type=float, default=50.0,
                       help="a notebook printing more than this gets no points (50)")
    grade.add_argument("--full", action="store_true", help="run the notebooks in full, not in quick mode (DGM_QUICK=1)")
    args = parser.parse_args(argv)

    if args.command == "grade":
        return _grade(args)

    if args.command == "make-student":
        out = make_student_notebook(args.source, args.output)
        print(f"wrote {out}")
        return 0
    committed = Path(args.output) if args.output else student_path(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = make_student_notebook(args.source, Path(tmp) / committed.name)
        same = committed.exists() and json.loads(committed.read_text()) == json.loads(fresh.read_text())
    if same:
        print(f"{committed} is up to date")
        return 0
    print(f"{committed} is out of date: run `python -m dgm.checks make-student {args.source}`", file=sys.stderr)
    return 1


def _grade(args: argparse.Namespace) -> int:
    from .grade import GradingError, grade_submissions

    for limit, flag in ((args.time_limit, "--time-limit"), (args.check_time_limit, "--check-time-limit"),
                        (args.max_output_mb, "--max-output-mb")):
        if not limit > 0:
            print(f"error: {flag} must be a positive number, got {limit:g}", file=sys.stderr)
            return 2
    try:
        grades = grade_submissions(args.source, args.submissions, csv_path=args.csv, feedback_dir=args.feedback,
                                   time_limit=args.time_limit, check_time_limit=args.check_time_limit,
                                   max_output_mb=args.max_output_mb, quick=not args.full,
                                   log=lambda line: print(line, flush=True))
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"graded {len(grades)} submission(s): {args.csv}, feedback in {args.feedback}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
