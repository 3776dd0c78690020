"""Reading a GGUF model with gguf-py's GGUFReader, and refusing what kquant cannot quantize.

A GGUF file is a header, metadata (key, typed value) pairs, a table of tensor infos
(name, shape, ggml type, offset) and then the tensor data, each tensor aligned to 32
bytes. ``GGUFReader`` maps the file read-only and hands back numpy views, so nothing
here can modify the source.

Every problem is reported as one KQuantError line that names the file and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFReader, GGUFValueType, Keys

from .errors import KQuantError
from .mixes import ModelParams, TensorSpec

T = GGMLQuantizationType

# kquant quantizes from these (llama-quantize also takes them; it refuses quantized input by default).
SOURCE_TYPES = (T.F32, T.F16, T.BF16)
# The architectures whose mix rules kquant.mixes implements.
SUPPORTED_ARCHS = ("llama",)
# Keys llama.cpp cannot load a llama model without (so llama-quantize fails without them too).
_REQUIRED = ("context_length", "embedding_length", "block_count", "attention.layer_norm_rms_epsilon")


def open_gguf(path) -> GGUFReader:
    """Open any GGUF file read-only; a missing, truncated or corrupt file is one clear error."""
    path = Path(path)
    if not path.exists():
        raise KQuantError(f"{path}: no such file")
    if path.is_dir():
        raise KQuantError(f"{path} is a folder, not a GGUF file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise KQuantError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OverflowError) as e:  # what GGUFReader raises on bad bytes
        raise KQuantError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); download or convert it again"
        ) from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise KQuantError(
                f"{path} is truncated: tensor {t.name} ends past the end of the file; download or convert it again"
            )
    return reader


@dataclass
class Model:
    """A source model, checked: where it is, its reader, hyper-parameters and tensors (file order)."""

    path: Path
    reader: GGUFReader
    arch: str
    params: ModelParams
    tensors: list[TensorSpec]


def read_model(path) -> Model:
    """Open a model kquant can quantize: a little-endian llama GGUF of F32 / F16 / BF16 tensors."""
    reader = open_gguf(path)
    path = Path(path)
    if reader.byte_order != "I":
        raise KQuantError(f"{path} is a big-endian GGUF: llama.cpp and kquant read little-endian files only")
    arch = _scalar(reader, Keys.General.ARCHITECTURE)
    if arch is None:
        raise KQuantError(f"{path} has no general.architecture key, so llama.cpp cannot load it")
    if arch not in SUPPORTED_ARCHS:
        raise KQuantError(
            f"{path}: architecture {arch!r} is not supported; kquant follows llama.cpp's mix rules for "
            f"{', '.join(SUPPORTED_ARCHS)} models"
        )
    for key in _REQUIRED:
        if f"{arch}.{key}" not in reader.fields:
            raise KQuantError(f"{path} lacks the metadata key {arch}.{key}, which llama.cpp needs to load the model")
    if (_scalar(reader, Keys.Split.LLM_KV_SPLIT_COUNT) or 1) > 1:
        raise KQuantError(f"{path} is one shard of a split model: merge the shards first (llama-gguf-split --merge)")
    alignment = _scalar(reader, Keys.General.ALIGNMENT)
    if alignment not in (None, GGUF_DEFAULT_ALIGNMENT):
        raise KQuantError(f"{path} uses general.alignment = {alignment}; llama-quantize writes 32-byte alignment only")
    if not reader.tensors:
        raise KQuantError(f"{path} holds no tensors: nothing to quantize")

    tensors = []
    for t in reader.tensors:
        if t.tensor_type not in SOURCE_TYPES:
            if GGML_QUANT_SIZES[t.tensor_type][0] > 1:
                raise KQuantError(
                    f"{path} is already quantized ({t.name} is {t.tensor_type.name}): start from the F32, F16 or "
                    "BF16 model"
                )
            raise KQuantError(
                f"{path}: tensor {t.name} has type {t.tensor_type.name}; kquant reads F32, F16 and BF16 tensors only"
            )
        tensors.append(TensorSpec(t.name, shape_of(t), t.tensor_type))

    n_head = _first(reader, f"{arch}.attention.head_count") or 0
    n_head_kv = _first(reader, f"{arch}.attention.head_count_kv")
    params = ModelParams(
        n_layer=_scalar(reader, f"{arch}.block_count"),
        n_head=n_head,
        n_head_kv=n_head if n_head_kv is None else n_head_kv,  # llama.cpp's default: no GQA
        n_expert=_scalar(reader, f"{arch}.expert_count") or 0,
    )
    return Model(path, reader, arch, params, tensors)


def shape_of(t) -> tuple[int, ...]:
    """A reader tensor's shape in numpy order, as ggml sees it (outer axes of size 1 dropped)."""
    ne = [int(n) for n in t.shape]  # GGUF stores ne[0] (the row length) first
    while len(ne) > 1 and ne[-1] == 1:
        ne.pop()
    return tuple(reversed(ne))


def weights(t) -> np.ndarray:
    """A reader tensor's values as float32 in numpy order (exact: F16 and BF16 widen without rounding)."""
    shape = tuple(reversed([int(n) for n in t.shape]))
    if t.tensor_type == T.F32:
        x = np.asarray(t.data, dtype=np.float32)
    elif t.tensor_type == T.F16:
        x = t.data.astype(np.float32)
    elif t.tensor_type == T.BF16:
        # bf16 is the top half of a float32: shift its 16 bits back into place.
        x = (t.data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        raise KQuantError(f"tensor {t.name} has type {t.tensor_type.name}; kquant reads F32, F16 and BF16 tensors only")
    x = x.reshape(shape)
    if not np.isfinite(x).all():
        n = int(np.count_nonzero(~np.isfinite(x)))
        raise KQuantError(
            f'tensor {t.name} holds {n} NaN or Inf value(s); llama.cpp refuses such a model too ("has invalid data")'
        )
    return x


def metadata(reader: GGUFReader) -> list[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
    """Every metadata pair as (key, value, type, array item type), in file order, ready for GGUFWriter.

    Strings stay bytes, so they are copied exactly even when they are not valid UTF-8.
    """
    pairs = []
    # GGUFReader lists three header values first (GGUF.version, GGUF.tensor_count, GGUF.kv_count).
    for f in list(reader.fields.values())[3:]:
        vtype = f.types[0]
        if vtype == GGUFValueType.ARRAY:
            if len(f.types) < 2:
                raise KQuantError(f"metadata key {f.name} is an empty array, which gguf-py's GGUFWriter cannot write")
            sub = f.types[1]
            if sub == GGUFValueType.ARRAY:
                raise KQuantError(f"metadata key {f.name} is an array of arrays, which llama.cpp cannot copy either")
            if sub == GGUFValueType.STRING:
                value = [bytes(f.parts[i]) for i in f.data]
            else:
                value = [f.parts[i][0].item() for i in f.data]
            pairs.append((f.name, value, vtype, sub))
        elif vtype == GGUFValueType.STRING:
            pairs.append((f.name, bytes(f.parts[-1]), vtype, None))
        else:
            pairs.append((f.name, f.parts[-1][0].item(), vtype, None))
    return pairs


def _scalar(reader: GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[-1]).decode("utf-8", errors="replace")
    if f.types[0] == GGUFValueType.ARRAY:
        raise KQuantError(f"metadata key {key} is an array where llama.cpp expects a single value")
    return f.parts[-1][0].item()


def _first(reader: GGUFReader, key: str):
    """A per-layer value: llama.cpp accepts one number or an array with one per layer (it uses layer 0)."""
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == GGUFValueType.ARRAY:
        return f.parts[f.data[0]][0].item() if f.data else None
    return f.parts[-1][0].item()
