"""Reading a GGUF file with gguf-py's GGUFReader: one clear error for a missing, truncated or corrupt file.

A GGUF file is a header, metadata (key, typed value) pairs, a table of tensor infos
(name, shape, ggml type, offset) and then the tensor data, each tensor aligned to 32
bytes. ``GGUFReader`` maps the file read-only and hands back numpy views, so nothing
here can modify the source.

Every problem is reported as one KQuantError line that names the file and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from kquant.errors import KQuantError

T = GGMLQuantizationType


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


def scalar_value(reader: GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[-1]).decode("utf-8", errors="replace")
    if f.types[0] == GGUFValueType.ARRAY:
        raise KQuantError(f"metadata key {key} is an array where llama.cpp expects a single value")
    return f.parts[-1][0].item()


def first_value(reader: GGUFReader, key: str):
    """A per-layer value: llama.cpp accepts one number or an array with one per layer (it uses layer 0)."""
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types[0] == GGUFValueType.ARRAY:
        return f.parts[f.data[0]][0].item() if f.data else None
    return f.parts[-1][0].item()
