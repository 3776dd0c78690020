"""Build the workbook's notebooks from their plain-text sources.

    python scripts/build_notebooks.py            # rebuild notebooks/*.ipynb
    python scripts/build_notebooks.py --check    # exit 1 if any notebook is out of date

Each ``scripts/notebooks/NN_name.py`` becomes ``notebooks/NN_name.ipynb`` (nbformat
4.5, no outputs). The sources are "percent" files, readable and diffable:

    # %% [markdown]
    \"\"\"
    Markdown text.
    \"\"\"

    # %%
    code

    # %% answer q1            an nbgrader answer cell for exercise q1 of kquant.exercises.nbNN
    def to_fixed(x, frac_bits):
        ### BEGIN SOLUTION
        ### END SOLUTION

    # %% check q1             its nbgrader check cell (points come from the exercise)
    ex.q1.check(to_fixed)

The solution region is written empty in the source; the build puts nbgrader's stub
there (see kquant/exercises/notebook.py for why), and refuses a notebook whose
exercises do not match its ``kquant.exercises`` module one to one.

Every notebook also gets, from the build and never from its source, an "Open in Colab"
badge under the title of its first markdown cell and the setup cell (``setup_cell``) as
its first code cell: on Colab it runs kquant/colab.py, which installs what Colab lacks
and fetches the bundled model; elsewhere it does nothing. Both are made from the
repository's address in pyproject.toml (``[project.urls] Repository``). The cell installs
llama-cpp-python (a prebuilt wheel, or minutes of compiling) only in a notebook that runs
llama.cpp: one whose code imports a module of ``NEEDS_LLAMA`` (``needs_llama``).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kquant import colab  # noqa: E402
from kquant.exercises.notebook import STUB, exercises_of, replace_regions  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli on 3.10
    import tomli as tomllib

SOURCES = ROOT / "scripts" / "notebooks"
TARGET = ROOT / "notebooks"
_MARKER = re.compile(r"^# %%(?: \[(markdown)\]| (answer|check) (q\d+))?\s*$")

KERNEL = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def repository() -> str:
    """The repository's address, from its one home: pyproject.toml's [project.urls] Repository."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"].rstrip(
        "/"
    )


def colab_url(notebook: str) -> str:
    """Where Colab opens ``notebook`` (a file name in notebooks/) from GitHub's main branch."""
    return f"https://colab.research.google.com/github/{colab.github_path(repository())}/blob/main/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


# The kquant modules that run llama.cpp: a notebook importing one gets llama-cpp-python on Colab. Not in the list:
# kquant.reference.recorded, whose comparisons work without llama.cpp (against its recorded digests), and the
# modules that only write or read files. kquant.selftest checks llama.cpp's quantizer (notebook 00).
NEEDS_LLAMA = {
    "kquant.llamacpp",
    "kquant.reference",
    "kquant.reference.ggml",
    "kquant.reference.llama_quantize",
    "kquant.model.runner",
    "kquant.model.evaluate",
    "kquant.model.cache",
    "kquant.model.calibrate",
    "kquant.demo",
    "kquant.selftest",
}


def needs_llama(modules: list[str]) -> bool:
    """Does a notebook importing ``modules`` (``modules_used``) run llama.cpp?"""
    return bool(NEEDS_LLAMA & set(modules))


def setup_cell(llama: bool = True) -> str:
    """The first code cell of every notebook; ``llama``: it runs llama.cpp, so Colab installs llama-cpp-python.

    On Colab it runs kquant/colab.py (the steps are there); elsewhere it does nothing.
    """
    repo = repository()
    return "\n".join(
        [
            "import importlib.util, runpy, sys, urllib.request",
            'if "google.colab" in sys.modules:  # install what Colab lacks (kquant/colab.py; minutes, once)',
            f'    try: urllib.request.urlretrieve("{colab.raw_url(repo, "kquant/colab.py")}", "/tmp/kquant_colab.py")',
            '    except OSError as e: raise SystemExit(f"kquant: could not download the setup ({e}): check the network '
            f"and that {repo} is the workbook's repository, then run this cell again\") from None",
            f'    runpy.run_path("/tmp/kquant_colab.py")["setup"]("{repo}", llama={llama})',
            'elif importlib.util.find_spec("kquant") is None:',
            '    print("kquant is not installed: run `make lab` from the repository")',
        ]
    )


def _split(text: str):
    """(kind, exercise name or None, body) for each cell of a percent source."""
    cells, current = [], None
    for line in text.split("\n"):
        m = _MARKER.match(line)
        if m:
            if current:
                cells.append(current)
            kind = "markdown" if m.group(1) else (m.group(2) or "code")
            current = [kind, m.group(3), []]
        elif current is None:
            if line.strip():
                raise ValueError(f"text before the first '# %%' marker: {line!r}")
        else:
            current[2].append(line)
    if current:
        cells.append(current)
    return [(kind, name, "\n".join(body).strip("\n")) for kind, name, body in cells]


def _markdown(body: str) -> str:
    if not (body.startswith('"""') and body.endswith('"""')):
        raise ValueError(f"a markdown cell must be one triple-quoted string: {body[:60]!r}")
    return body[3:-3].strip("\n")


def _is_module(name: str) -> bool:
    """Is ``name`` a module (not a function or class taken from one)?"""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent is a module, not a package: so name is an attribute
        return False


def modules_used(cells) -> list[str]:
    """Every kquant module the notebook's code cells import, read from their import statements."""
    found = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse(replace_regions(cell["source"], STUB))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "kquant"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kquant":
                for a in node.names:  # "from kquant.model import corpus" uses the module kquant.model.corpus
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if _is_module(sub) else node.module)
    return sorted(found)


def build(source: pathlib.Path) -> dict:
    notebook_id = "nb" + source.name[:2]
    exercises = {ex.name: ex for ex in exercises_of(notebook_id)}
    seen = {"answer": [], "check": []}
    cells = []
    text = source.read_text(encoding="utf-8")
    if "google.colab" in text:
        raise ValueError(f"{source.name}: the build writes every notebook's Colab setup cell; remove the source's own")
    for i, (kind, name, body) in enumerate(_split(text)):
        cell_id = f"{notebook_id}-{i:03d}"
        if kind == "markdown":
            cells.append({"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": _markdown(body)})
            continue
        meta = {}
        if kind in ("answer", "check"):
            ex = exercises.get(name)
            if ex is None:
                raise ValueError(
                    f"{source.name}: {kind} cell for {name}, which kquant.exercises.{notebook_id} does not define"
                )
            seen[kind].append(name)
            cell_id = f"{ex.grade_id}-{kind}"
            if kind == "answer":
                if f"def {ex.signature}:" not in body:
                    raise ValueError(f"{source.name}: the answer cell of {name} must define `def {ex.signature}:`")
                body = replace_regions(body, STUB)
                meta = {
                    "grade": False,
                    "grade_id": cell_id,
                    "locked": False,
                    "schema_version": 3,
                    "solution": True,
                    "task": False,
                }
            else:
                if body.strip() != f"ex.{name}.check({ex.function_name})":
                    raise ValueError(
                        f"{source.name}: the check cell of {name} must be exactly `ex.{name}.check({ex.function_name})`"
                    )
                meta = {
                    "grade": True,
                    "grade_id": cell_id,
                    "locked": True,
                    "points": ex.points,
                    "schema_version": 3,
                    "solution": False,
                    "task": False,
                }
            meta = {"nbgrader": meta}
        cells.append(
            {
                "cell_type": "code",
                "execution_count": None,
                "id": cell_id,
                "metadata": meta,
                "outputs": [],
                "source": body,
            }
        )
    for kind, names in seen.items():
        if sorted(names) != sorted(exercises):
            raise ValueError(
                f"{source.name}: {kind} cells {sorted(names)} do not match the exercises {sorted(exercises)}"
            )
    if not cells or cells[0]["cell_type"] != "markdown":
        raise ValueError(f"{source.name}: a notebook opens with a markdown cell (its title)")
    title, _, rest = cells[0]["source"].partition("\n")
    modules = modules_used(cells)
    used = ", ".join(f"`{m}`" for m in modules)
    cells[0]["source"] = (
        f"{title}\n\n{badge(target_of(source).name)}\n\n{rest.lstrip(chr(10))}".rstrip("\n")
        + f"\n\n*The kquant modules this notebook uses:* {used}."
    )
    setup = {
        "cell_type": "code",
        "execution_count": None,
        "id": f"{notebook_id}-setup",
        "metadata": {},
        "outputs": [],
        "source": setup_cell(llama=needs_llama(modules)),
    }
    cells.insert(1, setup)
    return {"cells": cells, "metadata": KERNEL, "nbformat": 4, "nbformat_minor": 5}


def target_of(source: pathlib.Path) -> pathlib.Path:
    return TARGET / (source.stem + ".ipynb")


def main(argv=None) -> int:
    from kquant.exercises.notebook import load, save

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    args = parser.parse_args(argv)
    stale = 0
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        nb, target = build(source), target_of(source)
        if args.check:
            if not target.exists() or load(target) != nb:
                print(f"out of date: {target.relative_to(ROOT)} (run python scripts/build_notebooks.py)")
                stale += 1
        else:
            save(nb, target)
            print(f"wrote {target.relative_to(ROOT)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
