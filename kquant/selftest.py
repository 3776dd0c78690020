"""Is everything the workbook needs here? One line per item, and a one-line fix for anything missing.

    >>> from kquant import selftest
    >>> selftest.report()        # in notebook 00

Each check returns instead of raising, so a missing package shows up as a line of
the report, not as a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pathlib
import sys
from typing import NamedTuple

from kquant import colab
from kquant.llamacpp import INSTALL_HINT

# The packages the notebooks import (distribution name -> module). Their version specifiers
# are read from kquant's installed metadata (colab.requirements), so they are pyproject.toml's.
MODULES = {
    "numpy": "numpy",
    "matplotlib": "matplotlib",
    "ipywidgets": "ipywidgets",
    "gguf": "gguf",
    "llama-cpp-python": "llama_cpp",
}
PYTHON = (3, 10)
# Packages that come with one of kquant's extras: installing the extra is the fix.
EXTRA = {"llama-cpp-python": "llama"}
LLAMA_FIX = INSTALL_HINT

OK, MISSING, NOT_YET = "ok", "missing", "not yet available"
_MARK = {OK: "✔", MISSING: "✘", NOT_YET: "…"}


class Check(NamedTuple):
    item: str
    status: str
    detail: str
    fix: str = ""

    def __repr__(self) -> str:
        fix = f"  →  fix: {self.fix}" if self.fix else ""
        return f"{_MARK[self.status]} {self.item}: {self.detail}{fix}"


class Report(list):
    """The checks, displayed one per line; truthy when nothing is missing."""

    def __bool__(self) -> bool:
        return all(c.status != MISSING for c in self)

    def __repr__(self) -> str:
        verdict = "everything the notebooks need is here" if self else "fix the lines marked ✘, then restart the kernel"
        return "\n".join([*(repr(c) for c in self), verdict])


def _version_tuple(v: str) -> tuple:
    """ "3.11.2" -> (3, 11, 2); stops at the first part that is not a plain number ("0rc1", "3+local")."""
    parts = []
    for p in v.split("."):
        digits = ""
        for ch in p:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if digits != p:
            break
    return tuple(parts)


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` meets a specifier made of ``>=``, ``<`` and ``==`` clauses, comma-separated."""
    v = _version_tuple(version)
    for clause in filter(None, spec.split(",")):  # an empty specifier asks for nothing
        for op in (">=", "==", "<"):
            if clause.startswith(op):
                bound = _version_tuple(clause[len(op) :])
                width = max(len(v), len(bound))
                a, b = v + (0,) * (width - len(v)), bound + (0,) * (width - len(bound))
                if not {">=": a >= b, "==": a == b, "<": a < b}[op]:
                    return False
                break
        else:
            raise ValueError(f"unsupported version clause {clause!r}")
    return True


def check_package(name: str, spec: str | None = None) -> Check:
    """One package: installed, recent enough and importable. ``spec`` defaults to kquant's own pin."""
    module = MODULES.get(name, name.replace("-", "_"))
    spec = spec or colab.requirements().get(name, "")
    fix = f'pip install "{name}{spec}"'
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        extra = EXTRA.get(name)
        return Check(name, MISSING, "not installed", LLAMA_FIX if extra == "llama" else fix)
    if not satisfies(version, spec):
        return Check(name, MISSING, f"version {version}, the workbook needs {spec}", fix)
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken install is reported, whatever broke
        return Check(
            name,
            MISSING,
            f"installed but cannot be imported ({type(e).__name__}: {e})",
            f'pip install --force-reinstall "{name}{spec}"',
        )
    return Check(name, OK, f"version {version}")


def check_python() -> Check:
    v = sys.version_info
    if v < PYTHON:
        return Check(
            "Python",
            MISSING,
            f"{v.major}.{v.minor}, the workbook needs {PYTHON[0]}.{PYTHON[1]} or newer",
            "use Python 3.10+ (make PYTHON=python3.11 lab)",
        )
    return Check("Python", OK, f"{v.major}.{v.minor}.{v.micro}")


def check_oracle() -> Check:
    """llama.cpp's own quantizer loads and agrees with kquant on one block."""
    try:
        import numpy as np

        from kquant import quantize, reference

        x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
        same = np.array_equal(quantize(x, "Q4_K"), reference.quantize(x, "Q4_K"))
    except Exception as e:
        from kquant.reference import OracleUnavailable

        missing = isinstance(e, OracleUnavailable) and importlib.util.find_spec("llama_cpp") is None
        return Check(
            "llama.cpp's quantizer",
            MISSING,
            "not installed (08-10 and 17 run models in it; 01-07 check kquant's bytes against its recorded digests)"
            if missing
            else f"cannot be called ({type(e).__name__}: {e})",
            LLAMA_FIX,
        )
    if not same:
        return Check(
            "llama.cpp's quantizer",
            MISSING,
            "loads, but its Q4_K bytes differ from kquant's: a different llama.cpp build?",
            'pip install --force-reinstall "llama-cpp-python==0.3.36"',
        )
    return Check("llama.cpp's quantizer", OK, "loads, and its Q4_K bytes equal kquant's")


def check_model(data: pathlib.Path | None = None) -> Check:
    if data is None:  # kquant's package data, or the folder kquant.colab downloaded the model to
        from kquant.model import hub

        data = hub.BUNDLED.parent
    found = sorted(p for p in data.glob("*.gguf") if not p.name.startswith(".")) if data.is_dir() else []
    if not found:
        return Check(
            "bundled model",
            MISSING,
            f"no .gguf file in {data} (notebooks 01-04 use synthetic weights meanwhile)",
            "pip install --force-reinstall kquant (in a checkout: git checkout kquant/data); "
            "on Colab: run the notebook's first code cell",
        )
    sizes = ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in found)
    return Check("bundled model", OK, sizes)


def report() -> Report:
    """Every check, in the order a fix would be needed."""
    return Report([check_python(), *(check_package(name) for name in MODULES), check_oracle(), check_model()])


def main() -> int:
    """``python -m kquant.selftest``: the report, and exit status 1 if anything is marked ✘."""
    checks = report()
    print(repr(checks))
    return 0 if checks else 1


if __name__ == "__main__":
    sys.exit(main())
