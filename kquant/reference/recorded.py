"""llama.cpp's output for the notebooks' comparisons: live with llama.cpp, else checked against recorded sha256s.

    >>> from kquant.reference import recorded
    >>> ggml = recorded.quantize(x, "Q4_0")      # llama.cpp's bytes for x, with or without llama.cpp

With llama-cpp-python installed (``pip install "kquant[llama]"``) each function is the
oracle itself: ``kquant.reference.quantize`` / ``dequantize`` / ``model_quantize``
(ggml's ``ggml_quantize_chunk``, ``to_float`` and ``llama_model_quantize``).

Without it, the bytes llama.cpp wrote for the notebooks' own inputs are known by their
sha256, recorded from the real oracle by ``scripts/record_digests.py`` into
``kquant/data/llama_cpp_digests.json`` (tests/test_recorded.py re-records them against
llama.cpp, so they cannot go stale). Each function then computes kquant's own result
(``kquant.quantize``, ``dequantize``, ``quantize_gguf``) and hands it back only if its
sha256 is the one recorded from llama.cpp for the same input: equal digests, equal bytes.
It prints one line saying so. An input with no recorded digest (a student's own) stops
with one line naming ``pip install "kquant[llama]"``.

The key of an input is the sha256 of what the oracle reads: the operation, the type and
the array's dtype, shape and bytes (for a file: its sha256, the mix and the options), so a
changed input can never be checked against another input's digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile

import numpy as np

from kquant import formats
from kquant.errors import KQuantError
from kquant.formats import check_bytes, check_importance, check_weights, get_format
from kquant.gguf.summary import sha256 as file_sha256
from kquant.llamacpp import INSTALL_HINT, PIN
from kquant.mixes import get_mix
from kquant.quantize_file import quantize_gguf
from kquant.reference import ggml, llama_quantize

FILE = pathlib.Path(__file__).resolve().parents[1] / "data" / "llama_cpp_digests.json"
# Set by scripts/record_digests.py: every live call appends its key and llama.cpp's digest there (JSON lines).
RECORD_ENV = "KQUANT_RECORD_DIGESTS"


class NotRecorded(KQuantError):
    """llama.cpp is not installed and no output of it is recorded for this input."""


def live() -> bool:
    """True when llama.cpp itself answers (llama-cpp-python installed and loadable)."""
    return ggml.available()


def digests() -> dict:
    """{key: {"sha256": llama.cpp's output digest, "what": a description}} as recorded in the package."""
    if not FILE.is_file():
        return {}
    return json.loads(FILE.read_text(encoding="utf-8"))["digests"]


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(part.tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _array_sha256(a: np.ndarray) -> str:
    """The sha256 of the array's bytes, as ``hashlib.sha256(a.tobytes())`` gives it (the key holds shape and type)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _record(key: str, digest: str, what: str) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "sha256": digest, "what": what}) + "\n")


def _stand_in(key: str, ours_digest: str, what: str, theirs: str):
    """Check kquant's result against the recorded digest; one printed line says what was compared."""
    entry = digests().get(key)
    if entry is None:
        raise NotRecorded(
            f"llama.cpp is not installed, and the package records llama.cpp's output only for the notebooks' own "
            f"inputs; {what} is not one of them: {INSTALL_HINT}"
        )
    if entry["sha256"] != ours_digest:
        raise KQuantError(
            f"{what}: kquant's result is not llama.cpp's (its sha256 differs from the one recorded from {PIN}): "
            "report this as a bug"
        )
    print(
        f"(llama.cpp is not installed: {theirs} kquant's, whose sha256 equals the one recorded from "
        f"{PIN}'s output for this input; {INSTALL_HINT.split(' (')[0]} to compare live)",
        flush=True,
    )


def quantize(x, qtype, imatrix=None) -> np.ndarray:
    """llama.cpp's bytes for ``x`` as ``qtype`` (``reference.quantize``), or kquant's if their sha256 is the same."""
    fmt = get_format(qtype)
    x = check_weights(x, fmt)
    if imatrix is not None:
        imatrix = check_importance(imatrix, x.shape[-1])
    key = _hash("quantize", fmt.name, x, imatrix)
    what = f"{fmt.name} of a {x.shape} array" + (" with an imatrix" if imatrix is not None else "")
    if live():
        out = ggml.quantize(x, qtype, imatrix=imatrix)
        _record(key, _array_sha256(out), what)
        return out
    out = formats.quantize(x, qtype, imatrix=imatrix)
    _stand_in(key, _array_sha256(out), what, f"the {fmt.name} bytes are")
    return out


def dequantize(q, qtype) -> np.ndarray:
    """llama.cpp's float32 decoding of ``q`` (``reference.dequantize``), or kquant's if their sha256 is the same."""
    fmt = get_format(qtype)
    q = check_bytes(q, fmt)
    key, what = _hash("dequantize", fmt.name, q), f"the {fmt.name} decoding of a {q.shape} array"
    if live():
        out = ggml.dequantize(q, qtype)
        _record(key, _array_sha256(out), what)
        return out
    out = formats.dequantize(q, qtype)
    _stand_in(key, _array_sha256(out), what, "the decoded float32 weights are")
    return out


def model_quantize(src, dst, mix="Q4_K_M", *, pure=False):
    """llama-quantize's file ``dst`` (``reference.model_quantize``), or kquant's when their sha256 is llama.cpp's."""
    key = _hash("model_quantize", file_sha256(src), get_mix(mix).name, bool(pure))
    what = f"{pathlib.Path(src).name} as {mix}" + (" (pure)" if pure else "")
    if live():
        llama_quantize.model_quantize(src, dst, mix, pure=pure)
        _record(key, file_sha256(dst), what)
        return dst
    # Written beside dst and renamed once checked: nothing is left at dst unless it is llama.cpp's file.
    with tempfile.TemporaryDirectory(dir=pathlib.Path(dst).resolve().parent) as tmp:
        part = pathlib.Path(tmp) / pathlib.Path(dst).name
        quantize_gguf(src, part, mix, pure=pure, progress=False)
        _stand_in(key, file_sha256(part), what, f"the {mix} file is")
        os.replace(part, dst)
    return dst
