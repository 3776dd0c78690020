"""A GGUF file read byte by byte, with every part's byte offsets, for drawing and teaching.

The layout (GGUF version 3, little-endian; ggml's ``docs/gguf.md``)::

    header        magic "GGUF" | version uint32 | tensor_count uint64 | kv_count uint64   (24 bytes)
    metadata      kv_count times: key (string) | value type uint32 | value
    tensor infos  tensor_count times: name (string) | n_dims uint32 | ne uint64 x n_dims | type uint32 | offset uint64
    padding       zeros up to a multiple of the alignment (``general.alignment``, else 32)
    tensor data   each tensor at data start + its offset, itself a multiple of the alignment

A string is a uint64 length and that many UTF-8 bytes; an array is an item type uint32,
a uint64 count and the items. gguf-py's ``GGUFReader`` reads the same structure (and
kquant.gguf.reader uses it for real work); this module exists to show where every byte is.
Every problem is one KQuantError line that says at which byte reading stopped.

Notebook 07 walks a file with it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import NamedTuple

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from kquant.errors import KQuantError

MAGIC = b"GGUF"
HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor_count, kv_count: 24 bytes
VERSIONS = (2, 3)  # version 1 had 32-bit counts and lengths; version 2 moved to 64-bit ones
MAX_DIMS = 4  # GGML_MAX_DIMS

V = GGUFValueType
# The fixed-size value types and their struct codes (little-endian). STRING and ARRAY have a length first.
SCALAR = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.BOOL: "<?",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
}


class Header(NamedTuple):
    magic: bytes
    version: int
    tensor_count: int
    kv_count: int


class KV(NamedTuple):
    """One metadata pair and where it lies: key at ``start``, value type at ``type_at``, value up to ``end``."""

    key: str
    type: GGUFValueType
    item_type: GGUFValueType | None  # for arrays: the type of the items
    value: object  # int, float, bool, str, or a list of them
    start: int
    type_at: int
    end: int


class TensorInfo(NamedTuple):
    """One tensor's info record (bytes ``start`` to ``end``); its data is at the data start + ``offset``."""

    name: str
    n_dims: int
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length (numpy's last axis)
    type: GGMLQuantizationType
    offset: int  # relative to the start of the data section
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.ne, self.type)

    def fields(self) -> list[tuple[str, int, int]]:
        """(field, first byte, end byte) of the record, relative to ``start``: for drawing its bytes."""
        name_end = 8 + len(self.name.encode("utf-8", "surrogateescape"))
        ne_end = name_end + 4 + 8 * self.n_dims
        return [
            ("name length", 0, 8),
            ("name", 8, name_end),
            ("n_dims", name_end, name_end + 4),
            ("ne", name_end + 4, ne_end),
            ("type", ne_end, ne_end + 4),
            ("offset", ne_end + 4, ne_end + 12),
        ]


class FileLayout(NamedTuple):
    """A whole file: header, metadata, tensor infos, alignment, where the data starts, total size."""

    header: Header
    kvs: list[KV]
    tensors: list[TensorInfo]
    alignment: int
    data_start: int
    size: int

    def value(self, key: str, default=None):
        return next((kv.value for kv in self.kvs if kv.key == key), default)

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KQuantError(f"no tensor {name!r} in this file: it has {', '.join(t.name for t in self.tensors[:3])}, ...")

    def data_range(self, name: str) -> tuple[int, int]:
        """Absolute (first byte, end byte) of a tensor's data in the file."""
        t = self.tensor(name)
        return self.data_start + t.offset, self.data_start + t.offset + t.nbytes


class _Cursor:
    """Reads little-endian values from ``buf``, each one checked against the end of the bytes."""

    def __init__(self, buf, pos: int):
        self.buf, self.pos = memoryview(buf).cast("B"), pos

    def take(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        if self.pos + n > len(self.buf):
            raise KQuantError(
                f"truncated GGUF: {what} at byte {self.pos} needs {n} bytes, but the bytes end at {len(self.buf)}"
            )
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.take("<Q", f"the length of {what}")
        if self.pos + n > len(self.buf):
            raise KQuantError(
                f"truncated GGUF: {what} at byte {self.pos} is {n} bytes long, but the bytes end at {len(self.buf)}"
            )
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "surrogateescape")  # exact: invalid UTF-8 survives a round trip

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        code = self.take("<I", f"the value type of {what}")
        try:
            return GGUFValueType(code)
        except ValueError:
            raise KQuantError(
                f"corrupt GGUF: {what} has value type {code} at byte {at}; GGUF value types are 0-12"
            ) from None

    def value(self, vtype: GGUFValueType, what: str):
        if vtype == V.STRING:
            return self.string(what)
        if vtype == V.ARRAY:
            item_type = self.value_type(f"the items of {what}")
            count = self.take("<Q", f"the item count of {what}")
            return [self.value(item_type, f"item {i} of {what}") for i in range(count)]
        return self.take(SCALAR[vtype], what)


def parse_header(buf) -> Header:
    """The first 24 bytes: magic, version, tensor count, metadata pair count."""
    if len(buf) < HEADER.size:
        raise KQuantError(f"truncated GGUF: the header is {HEADER.size} bytes, got only {len(buf)}")
    header = Header(*HEADER.unpack_from(buf, 0))
    if header.magic != MAGIC:
        raise KQuantError(f"not a GGUF file: it starts with {header.magic!r}, not b'GGUF'")
    if header.version & 0xFFFF == 0 and header.version:
        raise KQuantError(
            f"big-endian GGUF (version bytes {bytes(buf[4:8]).hex()}): this reader reads little-endian files only"
        )
    if header.version not in VERSIONS:
        raise KQuantError(f"GGUF version {header.version} is not supported: this reader reads versions {VERSIONS}")
    return header


def iter_kv(buf, count: int, start: int = HEADER.size) -> Iterator[KV]:
    """The ``count`` metadata pairs that begin at byte ``start``, in file order."""
    cur = _Cursor(buf, start)
    for i in range(count):
        at = cur.pos
        key = cur.string(f"the key of metadata pair {i}")
        type_at = cur.pos
        vtype = cur.value_type(key)
        value = cur.value(vtype, key)
        item_type = GGUFValueType(struct.unpack_from("<I", cur.buf, type_at + 4)[0]) if vtype == V.ARRAY else None
        yield KV(key, vtype, item_type, value, at, type_at, cur.pos)


def tensor_infos(buf, count: int, start: int) -> list[TensorInfo]:
    """The ``count`` tensor info records that begin at byte ``start`` (right after the metadata)."""
    cur, infos = _Cursor(buf, start), []
    for i in range(count):
        at = cur.pos
        name = cur.string(f"the name of tensor {i}")
        n_dims = cur.take("<I", f"n_dims of {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise KQuantError(
                f"corrupt GGUF: tensor {name} has n_dims {n_dims} at byte {cur.pos - 4}; ggml allows 1-{MAX_DIMS}"
            )
        ne = tuple(cur.take("<Q", f"ne[{d}] of {name}") for d in range(n_dims))
        code = cur.take("<I", f"the type of {name}")
        try:
            ttype = GGMLQuantizationType(code)
        except ValueError:
            raise KQuantError(
                f"corrupt GGUF: tensor {name} has type {code} at byte {cur.pos - 4}, which is no ggml type"
            ) from None
        offset = cur.take("<Q", f"the data offset of {name}")
        infos.append(TensorInfo(name, n_dims, ne, ttype, offset, at, cur.pos))
    return infos


def align(offset: int, alignment: int) -> int:
    """``offset`` rounded up to a multiple of ``alignment``."""
    return offset + (-offset) % alignment


def tensor_nbytes(ne, ttype) -> int:
    """Bytes of a tensor's data: rows of ``ne[0]`` weights, each row a whole number of blocks."""
    ttype = GGMLQuantizationType[ttype] if isinstance(ttype, str) else GGMLQuantizationType(ttype)
    block, type_size = GGML_QUANT_SIZES[ttype]
    if ne[0] % block:
        raise KQuantError(f"a row of {ne[0]} weights is not a whole number of {ttype.name} blocks of {block}")
    return math.prod(ne) // block * type_size


def encode_tensor_info(name: str, ne, ttype, offset: int) -> bytes:
    """The bytes of one tensor info record, as a GGUF writer puts them in the file."""
    ttype = GGMLQuantizationType[ttype] if isinstance(ttype, str) else GGMLQuantizationType(ttype)
    raw = name.encode("utf-8", "surrogateescape")
    return struct.pack(f"<Q{len(raw)}sI{len(ne)}QIQ", len(raw), raw, len(ne), *ne, int(ttype), offset)


def read_layout(buf) -> FileLayout:
    """Header, metadata, tensor infos and data offsets of a whole GGUF file held in ``buf``."""
    header = parse_header(buf)
    kvs = list(iter_kv(buf, header.kv_count))
    infos_start = kvs[-1].end if kvs else HEADER.size
    tensors = tensor_infos(buf, header.tensor_count, infos_start)
    alignment = next((kv.value for kv in kvs if kv.key == "general.alignment"), GGUF_DEFAULT_ALIGNMENT)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise KQuantError(f"corrupt GGUF: general.alignment is {alignment!r}; it must be a power of two")
    data_start = align(tensors[-1].end if tensors else infos_start, alignment)
    for t in tensors:
        if t.offset % alignment:
            raise KQuantError(
                f"corrupt GGUF: tensor {t.name}'s data offset {t.offset} is not a multiple of the alignment {alignment}"
            )
        end = data_start + t.offset + t.nbytes
        if end > len(buf):
            raise KQuantError(
                f"truncated GGUF: tensor {t.name}'s data ends at byte {end}, but the bytes end at {len(buf)}"
            )
    return FileLayout(header, kvs, tensors, alignment, data_start, len(buf))
