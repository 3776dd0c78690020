"""llama.cpp through llama-cpp-python: the one place that imports it, quietly, and its tokenizer.

llama-cpp-python prints llama.cpp's whole load log through the Python logger
"llama-cpp-python" until a ``Llama(verbose=False)`` exists; every part of kquant that
talks to llama.cpp (the runner, the oracle's whole-file quantizer, imatrix collection,
the training script) gets the module from ``load()``, which turns that log down first.
The import is slow (it loads the shared library), so nothing imports it at module level.

Notebooks 08-10 reach llama.cpp through it (via kquant.model.runner and calibrate).

llama-cpp-python is an extra (``pip install "kquant[llama]"``), so a notebook may run
without it. ``available()`` says whether it is here; ``needed(what)`` guards one cell (one
line saying what to install and what the cell would show); ``notebook_needs(what)`` guards
a notebook that runs models in llama.cpp throughout (08-10, 17): one line, and every later
cell is skipped so that Run All still reaches the end. Comparisons with llama.cpp's bytes
need none of these: kquant.reference.recorded checks them against recorded sha256s.
"""

from __future__ import annotations

import importlib.util
import logging

from kquant.errors import KQuantError

PIN = "llama-cpp-python==0.3.36"  # byte-exactness is promised against the llama.cpp this wheel vendors
# kquant's `llama` extra brings PIN (pyproject.toml); the one line every part that needs llama.cpp says without it.
INSTALL_HINT = f'pip install "kquant[llama]" ({PIN}: compiles llama.cpp once, with a C/C++ compiler and CMake)'


class LlamaCppMissing(KQuantError):
    """llama-cpp-python is not installed."""


def available() -> bool:
    """True when llama-cpp-python is installed (found without importing it: that loads the library, slowly)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):  # a broken or half-imported install counts as missing
        return False


def _missing(what: str, then: str) -> None:
    print(f"llama.cpp is not installed: {what}. To see it: {INSTALL_HINT}, then restart the kernel; {then}", flush=True)


def needed(what: str) -> bool:
    """Guard one cell: True if llama.cpp is here; else one printed line (install what, to see ``what``) and False."""
    if available():
        return True
    _missing(what, "this cell is skipped")
    return False


def notebook_needs(what: str) -> bool:
    """Guard a notebook that runs models in llama.cpp throughout: True if llama.cpp is here.

    Without it, one printed line says what to install and what the notebook would show, and
    every later cell this IPython kernel runs is skipped (replaced by ``pass``), so Run All
    reaches the end instead of stopping at the first cell that loads a model. Restarting the
    kernel after the install undoes it. Outside IPython only the line is printed.
    """
    if available():
        return True
    _missing(what, "until then the cells below are skipped")
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is not None and _skip not in shell.input_transformers_post:
        shell.input_transformers_post.append(_skip)
    return False


def _skip(lines: list[str]) -> list[str]:
    return ["pass\n"]


def load():
    """The ``llama_cpp`` module, with llama.cpp's log turned down to errors."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppMissing(f"llama.cpp (llama-cpp-python) is not installed: {INSTALL_HINT}") from None
    return llama_cpp


class Tokenizer:
    """A model's own tokenizer, loaded from its GGUF file without weights (``vocab_only``).

    ``tokenize(text, add_special, parse_special)`` is llama.cpp's ``llama_tokenize``:
    ``add_special`` puts BOS first (as the model's metadata asks), ``parse_special`` reads
    ``<s>`` / ``</s>`` in the text as the control tokens instead of as characters.
    """

    def __init__(self, path):
        self.path = str(path)
        self._lib = load()
        params = self._lib.llama_model_default_params()
        params.vocab_only = True  # the tokenizer only: no weights, no context
        self._model = self._lib.llama_model_load_from_file(self.path.encode(), params)
        if not self._model:
            raise KQuantError(f"llama.cpp could not read the tokenizer of {self.path}")
        self._vocab = self._lib.llama_model_get_vocab(self._model)

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode()
        room = len(data) + 2  # never more tokens than bytes, plus BOS (and EOS)
        ids = (self._lib.llama_token * room)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), ids, room, add_special, parse_special)
        if n < 0:
            raise KQuantError(f"llama.cpp could not tokenize the text ({n})")
        return list(ids[:n])

    def close(self) -> None:
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Tokenizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
