"""llama.cpp through llama-cpp-python: the one place that imports it, quietly, and its tokenizer.

llama-cpp-python prints llama.cpp's whole load log through the Python logger
"llama-cpp-python" until a ``Llama(verbose=False)`` exists; every part of kquant that
talks to llama.cpp (the runner, the oracle's whole-file quantizer, imatrix collection,
the training script) gets the module from ``load()``, which turns that log down first.
The import is slow (it loads the shared library), so nothing imports it at module level.

Notebooks 08-10 reach llama.cpp through it (via kquant.model.runner and calibrate).
"""

from __future__ import annotations

import logging

from kquant.errors import KQuantError

PIN = "llama-cpp-python==0.3.36"  # byte-exactness is promised against the llama.cpp this wheel vendors
# kquant's `llama` extra brings PIN (pyproject.toml); the one line every part that needs llama.cpp says without it.
INSTALL_HINT = f'pip install "kquant[llama]" ({PIN}: compiles llama.cpp once, with a C/C++ compiler and CMake)'


class LlamaCppMissing(KQuantError):
    """llama-cpp-python is not installed."""


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
