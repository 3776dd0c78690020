"""Helpers for the notebook and exercise tests: run a notebook headless, build a reader's solution."""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import textwrap

import nbformat
from nbclient import NotebookClient

from kquant.exercises.notebook import load, source_of

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Guards against a true hang only, never a budget (budgets live in benchmarks/): a busy machine
# must not fail a test. Ordinary cells take about a second; the cap also bounds nbclient's
# widget stall (below). Cells that run a model on the held-out text, quantize every mix or
# collect an imatrix take 20-60 s on a loaded 2-core machine (notebooks 08-10); measuring every matrix at
# every type (budget.measure, notebook 13) about as long.
CELL_TIMEOUT_S = 120
SLOW_CELL_TIMEOUT_S = 600
SLOW_CELLS = (
    "evaluate.compare(",
    "cache.compare(",
    "cache.quantized(",
    "calibrate.collect(",
    "gptq.cached_file(",
    "awq.search(",
    "awq.quantized(",
    "budget.measure(",
)
# The notebooks keep quantized files and scores in kquant's cache folder (kquant.model.cache): the tests
# give them one of their own, made afresh per test run, so the cold path runs and ~/.cache stays untouched.
_CACHE = None


def _test_cache() -> str:
    global _CACHE
    if _CACHE is None:
        _CACHE = tempfile.mkdtemp(prefix="kquant-test-cache-")
        atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    return _CACHE


def _cell_timeout(cell) -> int:
    return SLOW_CELL_TIMEOUT_S if any(s in cell.source for s in SLOW_CELLS) else CELL_TIMEOUT_S


def execute(nb: dict) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in a fresh kernel of this Python; (executed notebook, seconds).

    The kernel imports this checkout's kquant (PYTHONPATH), runs in notebooks/ as a
    reader's would, and draws with ipykernel's inline backend: headless (Agg renders
    it), and it puts every figure into the outputs, widget callbacks' too, so a
    broken callback shows up in the widget state.

    The seconds are the notebook's own: the sum of the cells' run times as the kernel
    reports them. Kernel start-up and the client's waiting are left out, because of a
    known nbclient bug (jupyter/nbclient#312): after a cell that shows a widget, the
    client sometimes sees the kernel's reply only when its timeout runs out. Such a
    stall is bounded by CELL_TIMEOUT_S; and if the client says it lost output
    ("Timeout waiting for IOPub output"), the run proves nothing and is repeated once.
    """
    for _attempt in range(2):
        node, lost_output = _execute_once(nb)
        if not lost_output:
            break
        print("nbclient lost IOPub output (jupyter/nbclient#312); running the notebook again", file=sys.stderr)
    return node, _cells_seconds(node)


def _execute_once(nb: dict) -> tuple[nbformat.NotebookNode, bool]:
    node = nbformat.from_dict(nb)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "MPLBACKEND", "KQUANT_DATA")}
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.setdefault("KQUANT_DATA", _test_cache())
    os.environ.pop("MPLBACKEND", None)  # let ipykernel choose its (headless) inline backend
    warnings = _Warnings()
    log = logging.getLogger("kquant-notebook-tests")
    log.addHandler(warnings)
    try:
        client = NotebookClient(
            node,
            timeout_func=_cell_timeout,
            kernel_name="python3",
            log=log,
            resources={"metadata": {"path": str(ROOT / "notebooks")}},
        )
        client.execute()
        return node, any("IOPub" in m for m in warnings.messages)
    finally:
        log.removeHandler(warnings)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _cells_seconds(nb) -> float:
    total = 0.0
    for c in nb.cells:
        e = c.metadata.get("execution", {})
        if c.cell_type == "code" and "iopub.execute_input" in e:
            t0 = datetime.datetime.fromisoformat(e["iopub.execute_input"].replace("Z", "+00:00"))
            t1 = datetime.datetime.fromisoformat(e["shell.execute_reply"].replace("Z", "+00:00"))
            total += (t1 - t0).total_seconds()
    return total


def slowest_cell(nb) -> str:
    """The cell that took longest, for a failure message: "12.3 s in cell nb01-004 (first line)"."""
    best = (0.0, "")
    for c in nb.cells:
        e = c.metadata.get("execution", {})
        if c.cell_type == "code" and "iopub.execute_input" in e:
            t0 = datetime.datetime.fromisoformat(e["iopub.execute_input"].replace("Z", "+00:00"))
            t1 = datetime.datetime.fromisoformat(e["shell.execute_reply"].replace("Z", "+00:00"))
            best = max(best, ((t1 - t0).total_seconds(), f"cell {c.id} ({c.source.splitlines()[0][:60]})"))
    return f"{best[0]:.1f} s in {best[1]}"


def check_cells(nb) -> dict[str, str]:
    """grade_id -> the text a check cell displayed."""
    out = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            out[meta["grade_id"]] = "".join(
                o.get("data", {}).get("text/plain", "") for o in cell["outputs"] if o["output_type"] == "execute_result"
            )
    return out


def widget_outputs(nb) -> list[dict]:
    """Every output the notebook's widgets (their Output areas) hold."""
    state = (
        nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    )
    return [o for m in state.values() if m.get("model_name") == "OutputModel" for o in m["state"].get("outputs", [])]


def import_namespace(notebook_path) -> dict:
    """The names a notebook's import cell defines: what its solutions may use."""
    ns: dict = {}
    for cell in load(notebook_path)["cells"]:
        src = source_of(cell)
        if cell["cell_type"] == "code" and "from kquant.exercises import" in src:
            exec(src, ns)  # our own notebook's import cell
            return ns
    raise AssertionError(f"{notebook_path} has no import cell")


def solution_function(ex, namespace: dict):
    """The exercise's solution as a function, defined in the notebook's namespace."""
    ns = dict(namespace)
    exec(f"def {ex.signature}:\n" + textwrap.indent(ex.solution_code, "    "), ns)
    return ns[ex.function_name]


def notebook_of(notebook_id: str) -> pathlib.Path:
    return next(p for p in NOTEBOOKS if p.name.startswith(notebook_id[2:]))


# --- issue 12: reading what an executed notebook printed (claims-vs-output tests) ---


def printed_text(nb) -> str:
    """Everything the notebook's code cells printed or displayed as text, in order, one string."""
    parts = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append(o.get("text", ""))
            elif "text/plain" in o.get("data", {}):
                parts.append(o["data"]["text/plain"] + "\n")
    return "".join(parts)


def printed_number(text: str, pattern: str, group: int = 1) -> float:
    """The number ``pattern``'s group captures in ``text`` (fails the test if the line is missing)."""
    import re

    m = re.search(pattern, text)
    assert m, f"the notebook no longer prints a line matching {pattern!r}"
    return float(m.group(group).replace(",", ""))


def numbers_after(text: str, label: str) -> list[float]:
    """The numbers on the first printed line that starts with ``label`` (percentages as printed)."""
    import re

    line = next(line for line in text.splitlines() if line.startswith(label))
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?", line[len(label) :])]
