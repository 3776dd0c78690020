"""Test-wide settings.

The generated-input tests (hypothesis) draw the same examples on every run, so that `make test`
either passes or names a bug that anyone can reproduce, and CI does not turn red on a draw that an
unrelated change happened to meet. To search new inputs (a fuzzing session, not CI), run
``KQUANT_HYPOTHESIS=explore make test``: a failure is printed with the example that reproduces it,
and belongs in a fixed regression test (tests/test_imatrix_codecs.py has one found that way).
The NF4 oracle's venv (`make oracle-nf4`) has no hypothesis and needs none.
"""

import os

try:
    from hypothesis import settings
except ImportError:  # the oracle venv: no generated-input tests run there
    settings = None

if settings is not None:
    settings.register_profile("fixed", derandomize=True, database=None)
    settings.register_profile("explore")
    settings.load_profile("explore" if os.environ.get("KQUANT_HYPOTHESIS") == "explore" else "fixed")
