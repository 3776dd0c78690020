"""The classroom round trip, through nbgrader itself (docs/teaching.md tells a teacher how).

In a throwaway course directory (its own nbgrader_config.py and sqlite gradebook, no
exchange, offline) the test does what an instructor does:

1. ``python -m kquant.exercises instructor notebooks/*.ipynb --out source/kquant``
2. ``nbgrader generate_assignment kquant``: the release version must be the notebooks
   shipped in notebooks/, cell for cell, less what nbgrader legitimately changes
   (it drops the two solution marker lines, and adds a checksum, the cell type and
   "deletable"/"editable" flags to the graded cells' metadata).
3. five students hand in: "correct" (every stub replaced by the published solution),
   "wrong" (every stub replaced by a runnable answer of the right type and shape whose
   values are wrong), "blank" (the release version, untouched), "flipper" (answers that
   return None and set NBGRADER_EXECUTION=off, at the top of each answer cell and inside
   each function, to turn failing checks into passes) and "looper" (the first exercise
   loops forever, the others are right);
4. ``nbgrader autograde kquant``; the gradebook must give "correct" every point of every
   check cell, "wrong", "blank" and "flipper" none, and "looper" every point but the
   looping exercise's, with nothing but the check cells failing.

Autograding runs every notebook, which takes minutes on two cores, so only "correct"
hands in every notebook (glob notebooks/*.ipynb: a new notebook is included by itself),
proving that every check passes under nbgrader. "wrong" and "blank" hand in the first
HANDED_IN_BY_OTHERS notebooks, the quickest to run; nbgrader scores the notebooks they
did not hand in 0, which the test checks too; "flipper" and "looper" hand in notebook 00
only. The wrong answers of every exercise are checked in-process by
test_every_wrong_answer_is_marked_wrong.
"""

from __future__ import annotations

import copy
import inspect
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest
from notebook_tools import NOTEBOOKS, ROOT, import_namespace

from kquant.exercises.core import INCORRECT
from kquant.exercises.notebook import STUB, exercise_for, exercises_of, load, save, source_of

ASSIGNMENT = "kquant"
STUDENTS = ("correct", "wrong", "blank", "flipper", "looper")
HANDED_IN_BY_OTHERS = 3  # notebooks 00-02 for "wrong" and "blank"; see the module's docstring
HANDED_IN = {
    "correct": len(NOTEBOOKS),
    "wrong": HANDED_IN_BY_OTHERS,
    "blank": HANDED_IN_BY_OTHERS,
    "flipper": 1,
    "looper": 1,
}
FLIP = 'import os\nos.environ["NBGRADER_EXECUTION"] = "off"  # "practice mode": print instead of fail?\n'
LOOPS = "nb00-q1"  # the exercise whose answer never returns
CELL_TIMEOUT_S = 120  # nbgrader's per-cell limit; the slowest cell takes about 20 s on two cores
RUN_TIMEOUT_S = 900  # all of autograde, as a guard against a hung kernel

CONFIG = f"""\
c = get_config()
c.CourseDirectory.course_id = "kquant-test"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
c.Execute.timeout = {CELL_TIMEOUT_S}
"""

# A wrong answer that runs: the published solution computes the right value, and the
# answer returns something of the same type and shape with the wrong contents.
WRONG = """\
def _right({params}):
{solution}
def _off(v):  # the right type and shape, the wrong values
    import numpy
    if isinstance(v, (bool, numpy.bool_)):
        return not v
    if isinstance(v, (bytes, bytearray)):
        return bytes(len(v))
    if isinstance(v, str):
        return v[::-1] if v[::-1] != v else v + "?"
    if isinstance(v, (tuple, list)):
        return type(v)(_off(x) for x in v)
    if isinstance(v, numpy.ndarray):
        return numpy.zeros_like(v)
    return type(v)(0)
return _off(_right({params}))"""


def wrong_body(ex) -> str:
    ns: dict = {}
    exec(f"def f({ex.signature.split('(', 1)[1]}: pass", ns)  # our own signature
    params = ", ".join(inspect.signature(ns["f"]).parameters)
    return WRONG.format(params=params, solution=textwrap.indent(ex.solution_code, "    "))


def answered(nb: dict, body_of, top: str = "") -> dict:
    """A release notebook with every stub replaced by ``body_of(exercise)``, as a student would.

    ``top`` goes at the top of every answer cell.
    """
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            ex = exercise_for(meta["grade_id"])
            src = source_of(cell)
            stub_line = next(line for line in src.split("\n") if line.strip() == STUB.split("\n")[0])
            indent = stub_line[: len(stub_line) - len(stub_line.lstrip())]
            stub = textwrap.indent(STUB, indent)
            assert src.count(stub) == 1, f"{meta['grade_id']}: no single stub to replace in {src!r}"
            cell["source"] = top + src.replace(stub, textwrap.indent(body_of(ex), indent))
    return nb


def _environment(course: pathlib.Path) -> dict:
    """This Python first on PATH (nbgrader runs `alembic` from it, and the kernel is this
    Python's ipykernel), this checkout importable, no user Jupyter config or kernels, offline."""
    env = dict(os.environ)
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
    ):
        env[var] = str(course.parent / "jupyter" / sub)
    env.pop("JUPYTER_PATH", None)
    env.pop("NBGRADER_EXECUTION", None)
    env.pop("MPLBACKEND", None)  # let ipykernel choose its headless inline backend
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run(course: pathlib.Path, *args: str) -> str:
    result = subprocess.run(
        args, cwd=course, env=_environment(course), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{log[-6000:]}"
    return log


def _notebook_names(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ipynb"))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course taken through generate_assignment and autograde: its folder, autograde's log, the times."""
    course = tmp_path_factory.mktemp("nbgrader") / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(CONFIG)
    nbgrader = (sys.executable, "-m", "nbgrader")

    source = course / "source" / ASSIGNMENT
    _run(course, sys.executable, "-m", "kquant.exercises", "instructor", *map(str, NOTEBOOKS), "--out", str(source))
    t0 = time.perf_counter()
    _run(course, *nbgrader, "generate_assignment", ASSIGNMENT)
    t1 = time.perf_counter()

    release = course / "release" / ASSIGNMENT
    assert _notebook_names(release) == [p.name for p in NOTEBOOKS]
    hand_ins = {
        "correct": lambda nb: answered(nb, lambda ex: ex.solution_code),
        "wrong": lambda nb: answered(nb, wrong_body),
        "blank": lambda nb: nb,
        "flipper": lambda nb: answered(nb, lambda ex: FLIP + "return None", top=FLIP),
        "looper": lambda nb: answered(
            nb, lambda ex: "while True:\n    pass" if ex.grade_id == LOOPS else ex.solution_code
        ),
    }
    for student, hand_in in hand_ins.items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        for path in NOTEBOOKS[: HANDED_IN[student]]:
            save(hand_in(load(release / path.name)), folder / path.name)
        (folder / "timestamp.txt").write_text("2026-01-01 12:00:00.000000 UTC")
    t2 = time.perf_counter()
    log = _run(course, *nbgrader, "autograde", ASSIGNMENT)
    t3 = time.perf_counter()
    print(
        f"\ngenerate_assignment {t1 - t0:.0f} s, autograde {t3 - t2:.0f} s ({len(NOTEBOOKS)} notebooks"
        f" from 'correct', {HANDED_IN_BY_OTHERS} each from 'wrong' and 'blank', 1 each from 'flipper' and 'looper')"
    )
    return {"root": course, "log": log, "seconds": {"generate": t1 - t0, "autograde": t3 - t2}}


def _scores(course: pathlib.Path) -> dict:
    """student -> {check cell grade_id: (score, max score)}, from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in STUDENTS:
            submission = gb.find_submission(ASSIGNMENT, student)
            out[student] = {g.name: (g.score, g.max_score) for nb in submission.notebooks for g in nb.grades}
    return out


def _points() -> dict:
    """check cell grade_id -> its points, as the shipped notebooks set them."""
    points = {}
    for path in NOTEBOOKS:
        for cell in load(path)["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                points[meta["grade_id"]] = meta["points"]
    return points


def _handed_in_checks(student: str = "wrong") -> list[str]:
    """The check cells of the notebooks ``student`` hands in."""
    prefixes = tuple(f"nb{p.name[:2]}-" for p in NOTEBOOKS[: HANDED_IN[student]])
    return [gid for gid in _points() if gid.startswith(prefixes)]


def _errors(course: pathlib.Path, student: str) -> dict:
    """grade_id or cell id -> the first error output of that cell, in the autograded notebooks."""
    errors = {}
    for path in sorted((course / "autograded" / student / ASSIGNMENT).glob("*.ipynb")):
        for cell in load(path)["cells"]:
            for out in cell.get("outputs", []):
                if out["output_type"] == "error" or out["output_type"] == "stream" and out["name"] == "stderr":
                    key = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", cell.get("id"))
                    errors.setdefault(key, f"{out.get('ename', 'stderr')}: {out.get('evalue', out.get('text', ''))}")
    return errors


# --- the release version ---------------------------------------------------------------

ADDED_BY_NBGRADER = {"checksum", "cell_type"}  # in metadata.nbgrader of answer and check cells


def _without_markers(source: str) -> str:
    return "\n".join(
        line for line in source.split("\n") if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_generate_assignment_releases_the_shipped_notebooks(course, path):
    released, shipped = load(course["root"] / "release" / ASSIGNMENT / path.name), load(path)
    assert {k: v for k, v in released.items() if k != "cells"} == {k: v for k, v in shipped.items() if k != "cells"}
    assert [c["id"] for c in released["cells"]] == [c["id"] for c in shipped["cells"]]
    for got, want in zip(released["cells"], shipped["cells"]):
        meta, want_meta = dict(got["metadata"]), want["metadata"]
        graded = "nbgrader" in want_meta
        if graded:
            ours = dict(meta.pop("nbgrader"))
            assert ours.pop("cell_type") == want["cell_type"] and len(ours.pop("checksum")) == 32
            assert ours == want_meta["nbgrader"], got["id"]
            assert meta.pop("deletable") is False
            if want_meta["nbgrader"]["locked"]:
                assert meta.pop("editable") is False
            meta["nbgrader"] = want_meta["nbgrader"]
        assert meta == want_meta, got["id"]
        solution = graded and want_meta["nbgrader"]["solution"]
        assert source_of(got) == (_without_markers(source_of(want)) if solution else source_of(want)), got["id"]
        rest = {k: v for k, v in got.items() if k not in ("metadata", "source")}
        assert rest == {k: v for k, v in want.items() if k not in ("metadata", "source")}, got["id"]


# --- the simulated class -----------------------------------------------------------------


def test_autograde_gives_the_correct_student_every_point(course):
    scores = _scores(course["root"])["correct"]
    assert scores == {gid: (float(p), float(p)) for gid, p in _points().items()}
    assert sum(s for s, _ in scores.values()) == sum(_points().values())
    assert _errors(course["root"], "correct") == {}, "the solutions ran into errors under nbgrader"


def test_autograde_gives_wrong_answers_no_points_and_says_why(course):
    scores = _scores(course["root"])["wrong"]
    assert scores == {gid: (0.0, float(p)) for gid, p in _points().items()}
    errors = _errors(course["root"], "wrong")
    assert sorted(errors) == sorted(_handed_in_checks()), "only the check cells may fail"
    for gid, message in errors.items():
        assert message.startswith("AssertionError: ✘ ") and "could not check" not in message, (gid, message)


def test_autograde_gives_blank_notebooks_no_points_without_crashing(course):
    scores = _scores(course["root"])["blank"]
    assert scores == {gid: (0.0, float(p)) for gid, p in _points().items()}
    errors = _errors(course["root"], "blank")
    assert sorted(errors) == sorted(_handed_in_checks()), "only the check cells may fail"
    assert all(m.startswith("AssertionError: … ") and "not attempted yet" in m for m in errors.values()), errors
    for student in STUDENTS:
        handed_in = NOTEBOOKS[: HANDED_IN[student]]
        assert _notebook_names(course["root"] / "autograded" / student / ASSIGNMENT) == [p.name for p in handed_in]


def test_a_student_who_switches_grading_off_from_an_answer_cell_scores_zero(course):
    """NBGRADER_EXECUTION=off at the top of every answer cell and inside every function: still 0 points."""
    scores = _scores(course["root"])["flipper"]
    assert scores == {gid: (0.0, float(p)) for gid, p in _points().items()}
    errors = _errors(course["root"], "flipper")
    assert sorted(errors) == sorted(_handed_in_checks("flipper")), "only the check cells may fail"
    assert all(m.startswith("AssertionError: ✘ ") and "returned None" in m for m in errors.values()), errors


def test_an_answer_that_never_returns_scores_zero_and_the_rest_is_graded(course):
    scores = _scores(course["root"])["looper"]
    done = set(_handed_in_checks("looper"))
    want = {
        gid: ((0.0 if gid.startswith(LOOPS) or gid not in done else float(p)), float(p)) for gid, p in _points().items()
    }
    assert scores == want
    errors = _errors(course["root"], "looper")
    assert list(errors) == [f"{LOOPS}-check"], errors
    assert "did not finish within" in errors[f"{LOOPS}-check"]


def test_a_passing_check_gives_nbgrader_no_value_to_read_as_partial_credit(course):
    assert "cannot be converted to" not in course["log"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_wrong_answer_is_marked_wrong(path):
    """The wrong student's answers, checked in-process: each is wrong and told so, for every exercise."""
    namespace = import_namespace(path)
    for ex in exercises_of("nb" + path.name[:2]):
        ns = dict(namespace)
        exec(f"def {ex.signature}:\n" + textwrap.indent(wrong_body(ex), "    "), ns)
        result = ex.evaluate(ns[ex.function_name], seed=0)
        assert result.status == INCORRECT and "could not check" not in result.message, repr(result)
