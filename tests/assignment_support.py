"""Shared by the assignment tests: take solutions out of a source notebook, run notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat

from dgm.checks import BEGIN

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def load_solutions(source: Path) -> dict:
    """The solution functions of an assignment's source notebook.

    Runs the first code cell (imports) and every cell holding a marked solution.
    """
    nb = nbformat.read(source, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    namespace: dict = {}
    for cell_source in [code[0]] + [s for s in code if BEGIN in s]:
        exec(compile(cell_source, str(source), "exec"), namespace)  # noqa: S102 - our own notebook
    return namespace


def execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in its own folder (raises on a failing cell)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(CHAPTERS)}}).execute()
    return nb


def text_outputs(nb: nbformat.NotebookNode) -> str:
    """All text a run printed or displayed as plain text, joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@dataclass
class Assignment:
    """What the shared tests (tests/test_assignments.py) check for one assignment; each
    test_assignment_NN.py fills one in as ``SPEC`` beside its own plausible mistakes.

    ``wrong`` rows are ``(checker name, wrong function, first failing case, text in the report)``;
    ``strict_example`` is ``(checker name, wrong function, text of the AssertionError)``; ``leaks`` are
    strings of the solutions that must not reach the student notebook; ``stubs`` counts its
    ``raise NotImplementedError`` cells; ``source_expect``/``student_expect`` are texts the solved and the
    untouched notebook must print, and ``source_check`` any further check of the solved run's output.
    """

    number: str
    checkers: dict[str, Callable]
    wrong: list[tuple]
    strict_example: tuple[str, Callable, str]
    stubs: int
    leaks: tuple[str, ...] = ()
    min_hidden_cases: int = 3
    quick: bool = True
    source_expect: tuple[str, ...] = ()
    source_check: Callable[[str], None] | None = None
    student_expect: tuple[str, ...] = ()

    @property
    def source(self) -> Path:
        return CHAPTERS / f"{self.number}_assignment.ipynb"

    @property
    def student(self) -> Path:
        return CHAPTERS / f"{self.number}_assignment_student.ipynb"
