"""Instructor tools for the workbook's exercises.

python -m kquant.exercises instructor notebooks/*.ipynb --out source/kquant
    write each notebook with its solutions filled in (nbgrader's "source" version)
python -m kquant.exercises student source/kquant/*.ipynb --out release/kquant
    write each notebook with the solutions cleared (the shipped version)
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from kquant.errors import KQuantError
from kquant.exercises.notebook import as_shipped, load, save, with_solutions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kquant.exercises", description=__doc__.split("\n\n")[0])
    parser.add_argument("version", choices=["instructor", "student"], help="which version to write")
    parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder to write the notebooks to")
    args = parser.parse_args(argv)
    convert = with_solutions if args.version == "instructor" else as_shipped
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        try:
            nb = convert(load(path))
        except (OSError, ValueError) as e:  # KQuantError and json errors are ValueErrors
            print(f"{path}: {e}", file=sys.stderr)
            return 1
        target = args.out / path.name
        if target.resolve() == path.resolve():
            print(f"{path}: refusing to overwrite the input; choose another --out", file=sys.stderr)
            return 1
        save(nb, target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KQuantError as e:
        sys.exit(str(e))
