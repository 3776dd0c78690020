"""Record the sha256 of llama.cpp's output for every comparison the notebooks make, into the package.

    python scripts/record_digests.py            # rewrite kquant/data/llama_cpp_digests.json
    python scripts/record_digests.py --check    # exit 1 if the recorded digests are not what llama.cpp gives now

Needs llama.cpp (``pip install -e ".[lab,llama]"``): it runs the code cells of every notebook
whose source calls ``kquant.reference.recorded`` (in IPython, headless), with llama.cpp answering each call live and
``KQUANT_RECORD_DIGESTS`` naming a file where every call appends its input's key and the
sha256 of llama.cpp's output. Those digests are what the notebooks compare kquant's bytes
with where llama.cpp is not installed (kquant/reference/recorded.py). tests/test_recorded.py
runs ``--check``, so a recorded digest cannot go stale: a changed notebook input, a new
comparison or another llama.cpp makes it fail until this script is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kquant.llamacpp import PIN  # noqa: E402
from kquant.reference import recorded  # noqa: E402


def notebooks() -> list[pathlib.Path]:
    """The notebooks whose sources compare with llama.cpp through kquant.reference.recorded."""
    sources = sorted((ROOT / "scripts" / "notebooks").glob("[0-9][0-9]_*.py"))
    return [ROOT / "notebooks" / f"{s.stem}.ipynb" for s in sources if "recorded." in s.read_text(encoding="utf-8")]


def run(path: pathlib.Path, log: pathlib.Path, data: str) -> None:
    """Run the notebook's code cells top to bottom in IPython, in a Python of its own, recording into ``log``.

    IPython's shell in a subprocess, not a Jupyter kernel: the same cells, outputs and errors, without the
    kernel protocol, whose clients sometimes wait out their whole timeout after a widget cell (nbclient#312).
    """
    env = {
        **os.environ,
        recorded.RECORD_ENV: str(log),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
        "KQUANT_DATA": data,  # kquant's cache folder: a temporary one, not the user's
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--run", str(path)], cwd=path.parent, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{path.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def _run_cells(path: str) -> int:
    """(In the subprocess) every code cell of the notebook at ``path``, in order; exit 1 at the first error."""
    from IPython.core.interactiveshell import InteractiveShell

    from kquant.exercises.notebook import load, source_of

    shell = InteractiveShell.instance()
    for cell in load(path)["cells"]:
        if cell["cell_type"] == "code" and not shell.run_cell(source_of(cell), silent=True).success:
            return 1
    return 0


def record() -> dict:
    """{"llama-cpp-python": pin, "digests": {key: {"sha256", "what", "notebooks"}}} from live runs of the notebooks."""
    if not recorded.live():
        raise SystemExit(f"llama.cpp is not installed, and the digests must come from it: {PIN}")
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in notebooks():
            log = pathlib.Path(tmp) / f"{path.stem}.jsonl"
            start = time.perf_counter()
            run(path, log, tmp)
            print(f"{path.name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
            if not lines:
                raise SystemExit(f"{path.name} calls kquant.reference.recorded, but no call reached llama.cpp")
            for line in lines:
                entry = json.loads(line)
                new = {"sha256": entry["sha256"], "what": entry["what"], "notebooks": []}
                seen = found.setdefault(entry["key"], new)
                if seen["sha256"] != entry["sha256"]:
                    raise SystemExit(f"llama.cpp gave two outputs for one input ({entry['what']}): report it as a bug")
                if path.stem not in seen["notebooks"]:
                    seen["notebooks"].append(path.stem)
    return {"llama-cpp-python": PIN.split("==")[1], "digests": dict(sorted(found.items()))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded file instead of writing it")
    parser.add_argument("--run", metavar="NOTEBOOK", help=argparse.SUPPRESS)  # the subprocess of run()
    args = parser.parse_args(argv)
    if args.run:
        return _run_cells(args.run)
    fresh = record()
    if args.check:
        stored = json.loads(recorded.FILE.read_text(encoding="utf-8")) if recorded.FILE.is_file() else {}
        if stored == fresh:
            print(f"{len(fresh['digests'])} recorded digests are llama.cpp's")
            return 0
        old, new = stored.get("digests", {}), fresh["digests"]
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                what = (new.get(key) or old[key])["what"]
                state = "missing" if key not in old else "stale" if key in new else "no longer used"
                print(f"{state}: {what} ({key[:12]}…)")
        print("run python scripts/record_digests.py")
        return 1
    recorded.FILE.write_text(json.dumps(fresh, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {recorded.FILE.relative_to(ROOT)}: {len(fresh['digests'])} digests from {PIN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
