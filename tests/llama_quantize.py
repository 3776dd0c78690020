"""llama.cpp's own whole-model quantizer, for comparison: ``llama_cpp.llama_model_quantize``.

This is what the ``llama-quantize`` tool calls. kquant's files are checked against its
output byte for byte (same sha256).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging

from gguf import GGMLQuantizationType

from kquant.mixes import get_mix


def llama_quantize(src, dst, mix, *, nthread=1, pure=False, overrides=(), output_type=None, token_embd_type=None):
    """Quantize ``src`` to ``dst`` with llama.cpp; raise RuntimeError if it reports failure."""
    import llama_cpp  # slow to import: only when a test needs it

    # llama-cpp-python prints llama.cpp's whole log to stderr unless its logger is told otherwise.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = int(get_mix(mix).file_type)
    params.pure = pure
    if output_type is not None:
        params.output_tensor_type = int(GGMLQuantizationType[output_type])
    if token_embd_type is not None:
        params.token_embedding_type = int(GGMLQuantizationType[token_embd_type])
    overrides = list(overrides.items()) if isinstance(overrides, dict) else list(overrides)
    if overrides:
        # A C array ended by a NULL pattern; kept in a local so it outlives the call.
        table = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for slot, (pattern, qtype) in zip(table, overrides):
            slot.pattern = pattern.encode()
            slot.type = int(GGMLQuantizationType[qtype])
        params.tt_overrides = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {src} -> {mix}")
    return dst


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
