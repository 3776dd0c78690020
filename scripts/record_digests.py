"""Record the sha256 of llama.cpp's output for every comparison the notebooks make, into the package.

    python scripts/record_digests.py            # rewrite kquant/data/llama_cpp_digests.json
    python scripts/record_digests.py --check    # exit 1 if the recorded digests are not what llama.cpp gives now

Needs llama.cpp (``pip install -e ".[llama,test]"``): it runs, headless, every notebook whose
source calls ``kquant.reference.recorded``, with llama.cpp answering each call live and
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
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kquant.llamacpp import PIN  # noqa: E402
from kquant.reference import recorded  # noqa: E402


def notebooks() -> list[pathlib.Path]:
    """The notebooks whose sources compare with llama.cpp through kquant.reference.recorded."""
    sources = sorted((ROOT / "scripts" / "notebooks").glob("[0-9][0-9]_*.py"))
    return [ROOT / "notebooks" / f"{s.stem}.ipynb" for s in sources if "recorded." in s.read_text(encoding="utf-8")]


def record() -> dict:
    """{"llama-cpp-python": pin, "digests": {key: {"sha256", "what", "notebooks"}}} from live runs of the notebooks."""
    from notebook_tools import execute

    from kquant.exercises.notebook import load

    if not recorded.live():
        raise SystemExit(f"llama.cpp is not installed, and the digests must come from it: {PIN}")
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in notebooks():
            log = pathlib.Path(tmp) / f"{path.stem}.jsonl"
            os.environ[recorded.RECORD_ENV] = str(log)
            try:
                execute(load(path))
            finally:
                del os.environ[recorded.RECORD_ENV]
            lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
            if not lines:
                raise SystemExit(f"{path.name} calls kquant.reference.recorded, but no call reached llama.cpp")
            for line in lines:
                entry = json.loads(line)
                seen = found.setdefault(
                    entry["key"], {"sha256": entry["sha256"], "what": entry["what"], "notebooks": []}
                )
                if seen["sha256"] != entry["sha256"]:
                    raise SystemExit(
                        f"llama.cpp gave two outputs for one input ({entry['what']}): report this as a bug"
                    )
                if path.stem not in seen["notebooks"]:
                    seen["notebooks"].append(path.stem)
    return {"llama-cpp-python": PIN.split("==")[1], "digests": dict(sorted(found.items()))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded file instead of writing it")
    args = parser.parse_args(argv)
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
