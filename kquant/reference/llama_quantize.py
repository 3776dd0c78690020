"""llama.cpp's own whole-file quantizer, ``llama_model_quantize``: the oracle for kquant.quantize_gguf.

    >>> from kquant.reference import model_quantize
    >>> model_quantize("tiny-f16.gguf", "tiny-Q4_K_M.gguf", "Q4_K_M")   # what llama-quantize writes

The tests write the same model with both and compare sha256. Notebook 07 does it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys

import numpy as np

from kquant import llamacpp
from kquant.errors import KQuantError
from kquant.formats import ggml_type
from kquant.imatrix import Imatrix, quantize_keys
from kquant.imatrix import load as load_imatrix
from kquant.mixes import get_mix


def model_quantize(
    src, dst, mix="Q4_K_M", *, nthread=1, pure=False, overrides=(), output_type=None, token_embd_type=None, imatrix=None
):
    """Quantize the GGUF ``src`` into ``dst`` with llama.cpp itself (``llama_model_quantize``).

    What the ``llama-quantize`` tool calls; the options are its own (``--pure``,
    ``--tensor-type REGEX=TYPE``, ``--output-tensor-type``, ``--token-embedding-type``,
    ``--imatrix FILE``). kquant.quantize_gguf writes the same file, byte for byte. Unlike
    kquant, llama.cpp may leave a partial ``dst`` behind when it fails.

    ``imatrix`` (the path of an imatrix file, or a saved Imatrix) is read with kquant.imatrix and handed over as
    the tool does (tools/quantize/quantize.cpp): ``params.imatrix``, a C array of
    {name, floats, size} ended by a NULL name, plus the kv overrides that record the file
    (quantize.imatrix.file / dataset / entries_count / chunks_count). A dict name -> vector is
    passed as it is, with no keys, as a direct caller of llama_model_quantize would.
    """
    llama_cpp = llamacpp.load()  # slow to import, so only here

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = int(get_mix(mix).file_type)
    params.pure = pure
    if output_type is not None:
        params.output_tensor_type = int(ggml_type(output_type))
    if token_embd_type is not None:
        params.token_embedding_type = int(ggml_type(token_embd_type))
    overrides = list(overrides.items()) if isinstance(overrides, dict) else list(overrides)
    if overrides:
        # A C array ended by a NULL pattern; kept in a local so it outlives the call.
        table = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for slot, (pattern, qtype) in zip(table, overrides):
            slot.pattern = pattern.encode()
            slot.type = int(ggml_type(qtype))
        params.tt_overrides = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    keep = imatrix_params(params, imatrix, llama_cpp)  # the C arrays must outlive the call
    # llama-cpp-python prints llama.cpp's log lines with print(file=sys.stderr): a model whose rows do not
    # fit the K-quants gets one warning per tensor (180 for SmolLM2), so the log is held back, and shown on failure.
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        failed = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0
    if failed:
        print(log.getvalue(), end="", file=sys.stderr, flush=True)
        raise KQuantError(f"llama.cpp could not quantize {src} to {mix}: see its log above")
    del keep
    return dst


def imatrix_params(params, imatrix, llama_cpp) -> list:
    """Fill params.imatrix (and params.kv_overrides) as llama-quantize's main does; return what must stay alive."""
    if imatrix is None:
        return []
    if isinstance(imatrix, dict):
        vectors, loaded = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in imatrix.items()}, None
    else:
        loaded = imatrix if isinstance(imatrix, Imatrix) else load_imatrix(imatrix)
        vectors = loaded.vectors()
    table = (llama_cpp.llama_model_imatrix_data * (len(vectors) + 1))()  # zeroed: the last one ends the array
    for slot, (name, v) in zip(table, vectors.items()):
        slot.name = name.encode()
        slot.data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        slot.size = v.size
    params.imatrix = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    keep = [table, vectors]
    if loaded is None:
        return keep
    kvs = quantize_keys(imatrix, loaded, len(vectors))
    over = (llama_cpp.llama_model_kv_override * (len(kvs) + 1))()  # an empty key ends the array
    for slot, (key, value) in zip(over, kvs):
        slot.key = key.encode()
        if isinstance(value, bytes):
            slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            slot.value.val_str = value[:127]  # strncpy(kvo.val_str, ..., 127)
        else:
            slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            slot.value.val_i64 = value
    params.kv_overrides = ctypes.cast(over, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    return keep + [over]
