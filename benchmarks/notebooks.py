"""What each notebook costs a classroom machine: kernel CPU seconds and peak memory, against a budget.

    python benchmarks/notebooks.py [NN ...]        # all notebooks, or the ones named (e.g. 08 10)

Each notebook runs top to bottom headless, as shipped, in a fresh kernel started by a child
process of its own, so that the child's resource usage (``RUSAGE_CHILDREN``) is the kernel's:
its CPU time (user + system) and its peak resident memory. CPU time, not wall time, is what
the notebook itself costs; on a busy machine the wall time includes waiting for a core.

The tests run every notebook too but assert no time (a busy machine must not fail a test);
the budgets live here. A classroom budget: at most 60 s of kernel CPU and 1 GB of memory per
notebook, so a 2-core laptop or a shared JupyterHub runs the series without a wait. Notebooks
08-10, which run the model and score whole files, have issue 19's tighter target of 25 s each
(they share one cache of quantized files and F16 scores, kquant.model.cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_CPU_S = 60.0
BUDGET_RSS_MB = 1000.0
CPU_TARGET_S = {"08": 25.0, "09": 25.0, "10": 25.0}  # by notebook number; the others: BUDGET_CPU_S

# Runs in the child: execute one notebook, then report the kernel's usage (it was our child).
_CHILD = r"""
import json, os, resource, sys
import nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
os.environ["PYTHONPATH"] = sys.argv[2] + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.pop("MPLBACKEND", None)
where = {"metadata": {"path": os.path.dirname(path)}}
NotebookClient(nb, timeout=600, kernel_name="python3", resources=where).execute()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu_s": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}))
"""


def measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(ROOT)], capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="two-digit numbers (default: all)")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in args.notebooks]
    over = 0
    tighter = ", ".join(f"{k}: {v:.0f} s" for k, v in CPU_TARGET_S.items())
    budget = f"budget: {BUDGET_CPU_S:.0f} s ({tighter}), {BUDGET_RSS_MB:.0f} MB"
    print(f"{'notebook':<36} {'kernel CPU s':>12} {'peak MB':>8}   {budget}")
    for p in paths:
        r = measure(p)
        if "error" in r:
            print(f"{p.name:<36} failed: {r['error']}")
            over += 1
            continue
        cpu_budget = CPU_TARGET_S.get(p.name[:2], BUDGET_CPU_S)
        flag = "  OVER" if r["cpu_s"] > cpu_budget or r["rss_mb"] > BUDGET_RSS_MB else ""
        over += bool(flag)
        print(f"{p.name:<36} {r['cpu_s']:>12.1f} {r['rss_mb']:>8.0f}{flag}")
    print(f"{over} notebook(s) over budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
