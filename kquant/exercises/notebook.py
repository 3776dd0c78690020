"""The two versions of a workbook notebook, and how to turn one into the other.

**As shipped** (what is in ``notebooks/``): every answer cell is an nbgrader
"autograded answer" cell whose solution region holds nbgrader's own stub::

    def to_fixed(x, frac_bits):
        ### BEGIN SOLUTION
        # YOUR CODE HERE
        raise NotImplementedError()
        ### END SOLUTION

The notebook runs top to bottom without an error (defining the function cannot
fail) and every check reports "not attempted yet".

**With solutions** (for instructors, and for the tests): the same notebook with
each region filled from the exercise's ``solution_code`` in ``kquant.exercises``,
so the package is the single home of every solution. This is nbgrader's *source*
version: ``nbgrader generate_assignment`` replaces each region, markers included,
with its default stub, which is the shipped code less the two marker lines. To make it::

    python -m kquant.exercises instructor notebooks/*.ipynb --out source/kquant

Cells are found by their nbgrader ``grade_id``: ``nb01-q1-answer`` holds exercise
``q1`` of ``kquant.exercises.nb01``, ``nb01-q1-check`` runs its check. Notebooks
are handled as plain JSON (nbformat 4), so this needs no Jupyter package.
"""

from __future__ import annotations

import copy
import importlib
import json
import pathlib

from kquant.errors import KQuantError
from kquant.exercises.core import Exercise, exercises_in

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's ClearSolutions.code_stub default


def load(path) -> dict:
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


def save(nb: dict, path) -> None:
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    pathlib.Path(path).write_text(text, encoding="utf-8")


def source_of(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def exercise_for(grade_id: str) -> Exercise:
    """The exercise an nbgrader id belongs to: ``nb01-q1-answer`` -> kquant.exercises.nb01.q1."""
    try:
        notebook, name, _role = grade_id.split("-")
        module = importlib.import_module(f"{__package__}.{notebook}")
        ex = getattr(module, name)
    except (ValueError, ImportError, AttributeError):
        raise KQuantError(f"nbgrader id {grade_id!r} names no exercise: expected the form nb01-q1-answer") from None
    return ex


def exercises_of(notebook: str) -> list[Exercise]:
    """All exercises of one notebook id (``"nb01"``)."""
    return exercises_in(importlib.import_module(f"{__package__}.{notebook}"))


def answer_cells(nb: dict):
    """(cell, exercise) for every nbgrader answer cell of a notebook."""
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            yield cell, exercise_for(meta["grade_id"])


def replace_regions(source: str, body: str) -> str:
    """Put ``body`` between every BEGIN/END SOLUTION pair, indented like the BEGIN line."""
    lines = source.split("\n")
    out, inside = [], False
    for line in lines:
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise KQuantError(f"nested {BEGIN!r}: close the first region with {END!r}")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(line)
            out.extend((indent + b) if b else b for b in body.split("\n"))
            inside = True
        elif marker == END:
            if not inside:
                raise KQuantError(f"{END!r} without a {BEGIN!r} before it")
            out.append(line)
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise KQuantError(f"a solution region is not closed: add {END!r}")
    return "\n".join(out)


def _rewrite(nb: dict, body_of) -> dict:
    nb = copy.deepcopy(nb)
    for cell, ex in answer_cells(nb):
        src = source_of(cell)
        if BEGIN not in src:
            raise KQuantError(f"answer cell {ex.grade_id} has no {BEGIN!r} region")
        cell["source"] = replace_regions(src, body_of(ex))
        cell["outputs"], cell["execution_count"] = [], None
    return nb


def with_solutions(nb: dict) -> dict:
    """The instructor (nbgrader source) version: every region holds the exercise's solution."""
    return _rewrite(nb, lambda ex: ex.solution_code)


def as_shipped(nb: dict) -> dict:
    """The student version: every region holds nbgrader's stub (what generate_assignment writes)."""
    return _rewrite(nb, lambda ex: STUB)
