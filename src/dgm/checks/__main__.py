"""``python -m dgm.checks``: make (or verify) the student version of an assignment notebook.

    python -m dgm.checks make-student chapters/01_assignment.ipynb [-o OUT]
    python -m dgm.checks check-student chapters/01_assignment.ipynb

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    raise SystemExit(main())
