"""The one GGUF reader: every structure checked, as llama.cpp checks it, before it is used.

Read this beside the GGUF spec (ggml/docs/gguf.md) and llama.cpp's own reader,
``gguf_init_from_reader`` in ggml/src/gguf.cpp (llama.cpp 0c1e57098, the one
llama-cpp-python 0.3.36 vendors). A GGUF file is, all little-endian::

    magic        4 bytes  b"GGUF"
    version      u32      2 or 3 (1 had 32-bit counts and is refused, like llama.cpp does)
    n_tensors    i64
    n_kv         i64
    n_kv times:  key (string), value type (i32), value
                 a string is a u64 byte length and the bytes (no terminating NUL)
                 an array is: item type (i32), u64 count, the items
    n_tensors times (the tensor infos):
                 name (string), n_dims (u32), ne[0..n_dims) (i64 each, ggml order: ne[0] is the row
                 length), ggml type (i32), offset (u64, relative to the data section)
    padding      up to a multiple of general.alignment (default 32)
    data         each tensor's bytes at its offset, each padded to the alignment

A hostile file can lie in every one of those numbers. So this reader never trusts one:
every length and count is checked against the bytes that remain *before* anything is
allocated or looped over, and the checks are llama.cpp's (each cites its source): a file
that passes ``open_gguf`` and ``check_llama`` is one ``llama_model_quantize`` reads, and one
it refuses is refused here too (kquant's deliberate extra refusals are listed in
``DELIBERATE``). The file is mapped read-only (mmap): numeric arrays and tensor data are
numpy views of the mapping, not copies, and string arrays (a 256 K-token vocabulary) are
indexed once and decoded only when asked for.

Every failure is one ``KQuantError`` line: the file, the problem, and the fix.

One limit of any mmap reader: if another program truncates the file while it is open, reading the
missing pages ends the process (SIGBUS). kquant never writes its input, so only a third party can.

Notebooks 07, 09 and 10 open files with it; so does every other part of kquant.
"""

from __future__ import annotations

import gc
import mmap
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from kquant.errors import KQuantError
from kquant.formats.cops import fp16_nonfinite, widen_fp16

V = GGUFValueType
T = GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3  # the newest version llama.cpp reads (gguf.h)
GGUF_DEFAULT_ALIGNMENT = 32
GGUF_MAX_STRING_LENGTH = 1024 * 1024 * 1024  # gguf.cpp: longer strings are refused even when present
GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024  # gguf.cpp: so are longer arrays
GGML_MAX_DIMS = 4  # ggml.h
GGML_MAX_NAME = 64  # ggml.h: a tensor name must be shorter (it is stored in a char[64] with its NUL)
INT64_MAX = 2**63 - 1
SIZE_MAX = 2**64 - 1

# Where kquant refuses a file that llama_model_quantize accepts, on purpose (the tests check the list).
DELIBERATE = {
    "n_dims 0": "a 0-dimensional tensor (gguf.cpp reads it as shape [1]); no GGUF writer produces one",
    "dimension 0": "a tensor with no elements: llama.cpp copies an empty tensor, kquant has nothing to quantize",
    # llama.cpp refuses a Q2_0 tensor it would requantize ("requantizing from type q2_0 is disabled") but
    # copies one it keeps (say, a 1-D tensor): kquant refuses both, as it cannot size a Q2_0 row.
    "ggml type gguf-py lacks": "a ggml type newer than gguf-py's table (Q2_0, type 42)",
}

# The fixed-size value types and their numpy dtypes (gguf.cpp's GGUF_TYPE_SIZE).
_DTYPES = {
    V.UINT8: np.dtype("<u1"),
    V.INT8: np.dtype("<i1"),
    V.UINT16: np.dtype("<u2"),
    V.INT16: np.dtype("<i2"),
    V.UINT32: np.dtype("<u4"),
    V.INT32: np.dtype("<i4"),
    V.FLOAT32: np.dtype("<f4"),
    V.BOOL: np.dtype("<i1"),  # one byte; any value other than 0 is true (gguf_reader::read(bool &))
    V.UINT64: np.dtype("<u8"),
    V.INT64: np.dtype("<i8"),
    V.FLOAT64: np.dtype("<f8"),
}
# llama.cpp's short type names (GGUF_TYPE_NAME), used in messages so they match its log.
TYPE_NAMES = {
    V.UINT8: "u8",
    V.INT8: "i8",
    V.UINT16: "u16",
    V.INT16: "i16",
    V.UINT32: "u32",
    V.INT32: "i32",
    V.FLOAT32: "f32",
    V.BOOL: "bool",
    V.STRING: "str",
    V.ARRAY: "arr",
    V.UINT64: "u64",
    V.INT64: "i64",
    V.FLOAT64: "f64",
}
# The smallest record each count can stand for, to check a count against the bytes left before looping:
# a key-value pair is at least a key length (8), a 1-byte key, a type (4) and a 1-byte value;
# a tensor info at least a name length (8), n_dims (4), a type (4) and an offset (8) (n_dims may be 0).
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8

_VTYPES = {int(t): t for t in V}
# One value as a Python int / float (struct: faster than numpy for a single item).
_SCALARS = {
    t: struct.Struct(f) for t, f in zip(_DTYPES, ("<B", "<b", "<H", "<h", "<I", "<i", "<f", "<b", "<Q", "<q", "<d"))
}
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


class StringArray(Sequence):
    """An array of GGUF strings, indexed once and decoded on demand: ``arr[i]`` is bytes.

    ``starts`` and ``lengths`` (int64, one per item) locate each string in the mapped file, so
    a 256 K-token vocabulary costs 4 MB of index and no Python object until an item is read.
    """

    def __init__(self, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
        self._buf, self.starts, self.lengths = buf, starts, lengths

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s = int(self.starts[i])
        return self._buf[s : s + int(self.lengths[i])].tobytes()

    def __iter__(self) -> Iterator[bytes]:
        # tobytes of one slice of the map, then cut it: far faster than one numpy slice per item.
        if len(self) == 0:
            return
        lo, hi = int(self.starts[0]), int(self.starts[-1] + self.lengths[-1])
        blob = self._buf[lo:hi].tobytes()
        for s, n in zip((self.starts - lo).tolist(), self.lengths.tolist()):
            yield blob[s : s + n]

    def decode(self, errors: str = "replace") -> list[str]:
        """Every item as str (UTF-8; invalid bytes replaced unless ``errors`` says otherwise)."""
        return [b.decode("utf-8", errors) for b in self]


@dataclass(eq=False, slots=True)
class Field:
    """One metadata key-value pair.

    ``type`` is the value type; ``item_type`` the item type of an array (None otherwise).
    ``value``: int / float / bool for numbers, bytes for a string, a read-only numpy array
    (shape (count,), little-endian dtype; bool arrays as numpy bool) for an array of numbers,
    a ``StringArray`` (a sequence of bytes) for an array of strings.
    ``raw``: the bytes after the key exactly as stored (type, [item type, count,] value): the
    key's length-prefixed bytes followed by ``raw`` re-create the record byte for byte.
    """

    name: str
    type: GGUFValueType
    item_type: GGUFValueType | None
    value: object
    _buf: np.ndarray = field(repr=False)
    _span: tuple[int, int] = field(repr=False)  # [start, end) of raw in the file

    @property
    def raw(self) -> bytes:
        return self._buf[self._span[0] : self._span[1]].tobytes()

    @property
    def type_name(self) -> str:
        """llama.cpp's name for the type: u32, str, arr[str], ..."""
        if self.type == V.ARRAY:
            return f"arr[{TYPE_NAMES[self.item_type]}]"
        return TYPE_NAMES[self.type]


@dataclass(eq=False)
class Tensor:
    """One tensor info, checked, and a read-only view of its data.

    ``ne`` is ggml's order (ne[0] is the row length), ``shape`` numpy's (reversed ne), both with
    the n_dims entries the file stores. ``offset`` is absolute in the file.
    """

    name: str
    ne: tuple[int, ...]
    type: GGMLQuantizationType
    offset: int
    n_elements: int
    n_bytes: int
    _buf: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.ne))

    @property
    def data(self) -> np.ndarray:
        """The stored values, read-only, shaped in numpy order: float32 for F32, float16 for F16,
        uint16 (the raw bits) for BF16; otherwise uint8 with the last axis the bytes of one row."""
        raw = self._buf[self.offset : self.offset + self.n_bytes]
        if self.type == T.F32:
            return raw.view("<f4").reshape(self.shape)
        if self.type == T.F16:
            return raw.view("<f2").reshape(self.shape)
        if self.type == T.BF16:
            return raw.view("<u2").reshape(self.shape)
        block, size = GGML_QUANT_SIZES[self.type]
        return raw.reshape((*self.shape[:-1], self.ne[0] // block * size))


class GGUFFile:
    """An open, structurally valid GGUF file (see ``open_gguf``); close it, or use ``with``.

    ``fields``: every key-value pair by name, in file order. ``tensors``: the tensor infos in
    file order. ``data_offset``: where the data section starts (absolute). Everything refers
    to the read-only mapping of the file, which ``close`` releases.
    """

    def __init__(self, path, version, alignment, data_offset, fields, tensors, buf, mm):
        self.path = path
        self.version: int = version
        self.alignment: int = alignment
        self.data_offset: int = data_offset
        self.fields: dict[str, Field] = fields
        self.tensors: list[Tensor] = tensors
        self._buf, self._mmap = buf, mm

    def get(self, key: str, default=None):
        """A key's value as plain Python: int / float / bool, str (UTF-8, invalid bytes replaced),
        a numpy array for an array of numbers, list[str] for an array of strings."""
        f = self.fields.get(key)
        if f is None:
            return default
        if isinstance(f.value, bytes):
            return f.value.decode("utf-8", "replace")
        if isinstance(f.value, StringArray):
            return f.value.decode()
        return f.value

    def release(self, t: Tensor) -> None:
        """Let the kernel drop the pages of a tensor that has been read, so that reading a whole
        model in turn keeps memory bounded by its largest tensor, not by the file's size. The data
        stays readable: a page touched again is read again from the file."""
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED"):  # not on every platform
            return
        page = mmap.PAGESIZE
        start = t.offset // page * page
        end = min(len(self._mmap), -(-(t.offset + t.n_bytes) // page) * page)
        if end > start:
            self._mmap.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        self.fields, self.tensors, self._buf = {}, [], None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a caller still holds a view of the data: the map goes when that view does
                pass
            self._mmap = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, v{self.version}, {len(self.fields)} keys, {len(self.tensors)} tensors)"


def open_gguf(path) -> GGUFFile:
    """Open and check a GGUF file; a ``GGUFFile``, or one ``KQuantError`` line saying what is wrong.

    The checks are ``gguf_init_from_reader``'s (ggml/src/gguf.cpp) plus the tensor bounds check of
    ``llama_tensor_weight`` (src/llama-model-loader.h), so a file that passes loads in llama.cpp as
    far as its structure goes; ``check_llama`` adds the hyper-parameter checks of llama's loader.
    """
    path = os.fspath(path)
    shown = printable(path)  # the path as messages show it
    fd = _open_regular(path, shown)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise KQuantError(f"{shown} is empty (0 bytes), not a GGUF file; download or convert it again")
        if size < 4:
            raise KQuantError(f"{shown} is not a GGUF file ({size} bytes: too short to start with 'GGUF')")
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # the map keeps its own reference to the file
    except OSError as e:
        raise KQuantError(f"{shown}: could not read it ({e.strerror or e})") from None
    finally:
        os.close(fd)
    buf = np.frombuffer(mm, dtype=np.uint8)  # read-only: the map is ACCESS_READ
    # The parse makes one small object per key and tensor and frees none: the cyclic garbage collector
    # would only rescan them (a third of the time on a file of a million keys).
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _parse(path, shown, buf, mm)
    except BaseException:
        del buf
        try:
            mm.close()
        except BufferError:
            pass
        raise
    finally:
        if gc_was_on:
            gc.enable()


def _open_regular(path: str, shown: str) -> int:
    """A read-only descriptor of the regular file at ``path``: a FIFO, device or folder is refused
    before anything could block on it (stat first; O_NONBLOCK in case it changes in between)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KQuantError(f"{shown}: no such file") from None
    except OSError as e:
        raise KQuantError(f"{shown}: cannot open it ({e.strerror or e})") from None
    _require_regular(shown, st.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise KQuantError(f"{shown}: cannot open it ({e.strerror or e})") from None
    try:
        _require_regular(shown, os.fstat(fd).st_mode)  # the file opened is the file checked
    except BaseException:
        os.close(fd)
        raise
    return fd


def _require_regular(path: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise KQuantError(f"{path} is a folder, not a GGUF file: give the path of the .gguf file in it")
    kind = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise KQuantError(f"{path} is {kind}, not a GGUF file: kquant reads regular files only")


class _Cursor:
    """Reads little-endian values from the mapped file, refusing any read past its end."""

    def __init__(self, path: str, buf: np.ndarray, mm):
        self.path, self.buf, self.mm, self.pos, self.size = path, buf, mm, 0, len(buf)

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def fail(self, problem: str, fix: str = "download or convert the file again") -> KQuantError:
        return KQuantError(f"{self.path}: {problem}; {fix}")

    def need(self, n: int, what) -> None:
        """Refuse unless ``n`` bytes remain; ``what`` (a str, or a function making one, so the message is
        only formatted when it is needed) names the structure for the message."""
        if n > self.size - self.pos:
            what = what() if callable(what) else what
            raise self.fail(
                f"truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, {self.remaining} remain"
            )

    def unpack(self, s: struct.Struct, what) -> int:
        self.need(s.size, what)
        (v,) = s.unpack_from(self.mm, self.pos)
        self.pos += s.size
        return v

    def string(self, what) -> tuple[int, int]:
        """A GGUF string's [start, end) in the file (gguf_reader::read(std::string &))."""
        n = self.unpack(_U64, lambda: f"the length of {what() if callable(what) else what}")
        if n > GGUF_MAX_STRING_LENGTH:
            what = what() if callable(what) else what
            raise self.fail(f"{what} claims a length of {n} bytes, over llama.cpp's limit of {GGUF_MAX_STRING_LENGTH}")
        self.need(n, what)
        self.pos += n
        return self.pos - n, self.pos

    def text(self, what) -> str:
        s, e = self.string(what)
        # surrogateescape: two different byte strings never become the same name.
        return self.mm[s:e].decode("utf-8", "surrogateescape")


def _parse(path: str, shown: str, buf: np.ndarray, mm) -> GGUFFile:
    """gguf_init_from_reader, step by step, then the loader's bounds check."""
    c = _Cursor(shown, buf, mm)

    # --- magic and version (gguf_init_from_reader: "file magic", "header")
    if buf[:4].tobytes() != GGUF_MAGIC:
        raise KQuantError(f"{shown} is not a GGUF file (it does not start with the bytes 'GGUF')")
    c.pos = 4
    version = c.unpack(_U32, "the version")
    if version == 0:
        raise c.fail("bad GGUF version 0")
    if version & 0x0000FFFF == 0:  # how gguf.cpp recognises a byte-swapped version
        raise c.fail(
            f"version {version:#010x} reads as a big-endian GGUF file",
            "llama.cpp and kquant read little-endian files only: convert it again without --bigendian",
        )
    if version == 1:
        raise c.fail(
            "GGUF version 1 is no longer supported by llama.cpp", "convert the model again with a current llama.cpp"
        )
    if version > GGUF_VERSION:
        raise c.fail(f"GGUF version {version} is newer than llama.cpp {GGUF_VERSION}", "upgrade llama.cpp and kquant")

    n_tensors = c.unpack(_I64, "the tensor count")
    n_kv = c.unpack(_I64, "the key-value count")
    if n_tensors < 0 or n_kv < 0:
        raise c.fail(f"negative counts in the header ({n_tensors} tensors, {n_kv} key-value pairs)")
    # gguf.cpp finds a lying count when its reads run out; kquant refuses it before looping.
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > c.remaining:
        raise c.fail(
            f"truncated or corrupt: the header claims {n_kv} key-value pairs and {n_tensors} tensors, "
            f"more than the {c.size} bytes of the file can hold"
        )

    fields = _read_kvs(c, n_kv)

    # --- general.alignment (gguf_init_from_reader, after the KV pairs)
    alignment = GGUF_DEFAULT_ALIGNMENT
    a = find_key(fields, "general.alignment")
    if a is not None:
        if a.type != V.UINT32:
            raise c.fail(f"general.alignment must be of type u32 but is {a.type_name}")
        alignment = a.value
        if alignment == 0 or alignment & (alignment - 1):
            raise c.fail(f"general.alignment {alignment} is not a power of 2")

    tensors = _read_tensor_infos(c, n_tensors)

    # --- the data section starts at the next multiple of the alignment (gguf.cpp: GGML_PAD, then seek,
    # which fails past the end of the file); with no tensors there is no padding.
    data_offset = c.pos
    if n_tensors > 0:
        data_offset = _pad(c.pos, alignment)
        if data_offset > c.size:
            raise c.fail(f"truncated: the data section would start at {data_offset}, past the end ({c.size} bytes)")

    # --- tensor offsets: gguf.cpp requires each to be exactly where the previous one ends, padded
    # ("tensor '%s' has offset %" PRIu64 ", expected %zu"): so data is in file order, aligned, never
    # overlapping, and no offset can wrap around 2^64.
    expected = 0
    for t in tensors:
        if t.offset != expected:
            raise c.fail(
                f"tensor {show_name(t.name)} has data offset {t.offset}, but llama.cpp requires {expected} "
                f"(tensor data packed in file order, each padded to {alignment} bytes): misaligned, overlapping or "
                "out of order"
            )
        if t.n_bytes > SIZE_MAX - (alignment - 1) or expected + _pad(t.n_bytes, alignment) > SIZE_MAX:
            raise c.fail(f"tensor {show_name(t.name)}: its size overflows the data section")
        expected += _pad(t.n_bytes, alignment)
    # --- and each tensor must lie in the file (llama_tensor_weight, src/llama-model-loader.h:
    # "tensor '%s' data is not within the file bounds, model is corrupted or incomplete").
    for t in tensors:
        t.offset += data_offset  # absolute from here on
        if t.offset + t.n_bytes > c.size:
            raise c.fail(
                f"truncated: tensor {show_name(t.name)} needs bytes {t.offset}..{t.offset + t.n_bytes}, "
                f"but the file has {c.size}"
            )
    return GGUFFile(path, version, alignment, data_offset, fields, tensors, buf, mm)


def find_key(fields: dict[str, Field], key: str) -> Field | None:
    """gguf_find_key: the first pair whose key equals ``key`` as a C string (up to its first NUL byte).

    A file may hold both "general.alignment" and "general.alignment\\0x" (gguf.cpp compares whole
    keys for duplicates), but every lookup llama.cpp makes uses strcmp, so the first one wins.
    """
    f = fields.get(key)
    if f is not None and not any("\0" in k for k in fields):
        return f
    return next((f for k, f in fields.items() if k.split("\0", 1)[0] == key), None)


def show_name(name: str, limit: int = 80) -> str:
    """A key or tensor name as it goes into a message: as it is when it is short and printable, else
    its repr cut to ``limit`` characters, so a hostile name cannot make a message long or multi-line."""
    if name and name.isprintable() and " " not in name and len(name) <= limit:
        return name
    r = repr(name)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def printable(path) -> str:
    """A path for a message: control characters (a newline in a file name) escaped, so it stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in os.fspath(path))


def c_str(b: bytes) -> str:
    """A string value as llama.cpp's std::string(gguf_get_val_str(...)) sees it: cut at the first NUL."""
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment  # GGML_PAD


def _value_type(c: _Cursor, what) -> GGUFValueType:
    t = c.unpack(_I32, lambda: f"the type of {what()}")
    vtype = _VTYPES.get(t)
    if vtype is None:
        raise c.fail(f"{what()} has invalid GGUF type {t}")
    return vtype


def _read_kvs(c: _Cursor, n_kv: int) -> dict[str, Field]:
    """The key-value pairs (gguf_init_from_reader, "KV pairs", and gguf_read_emplace_helper).

    The common case (a key and a number) is read inline: a model may hold a million pairs, and a
    function call per value would cost seconds. Anything unusual goes through the cursor's checked
    reads, which also word the errors.
    """
    fields: dict[str, Field] = {}
    mm, size, buf = c.mm, c.size, c.buf
    u64, i32 = _U64.unpack_from, _I32.unpack_from
    pos = c.pos
    for i in range(n_kv):
        # the key: a u64 length and that many bytes
        n = u64(mm, pos)[0] if pos + 8 <= size else None
        if n is None or n > GGUF_MAX_STRING_LENGTH or n > size - pos - 8:
            c.pos = pos
            c.string(lambda i=i: f"key {i}")  # raises, saying what is wrong
        key = mm[pos + 8 : pos + 8 + n].decode("utf-8", "surrogateescape")
        pos += 8 + n
        if not key:
            raise c.fail(f"key {i} is empty")
        if key in fields:
            raise c.fail(f"duplicate key {show_name(key)} (key-value pair {i})")
        start = pos
        vtype = _VTYPES.get(i32(mm, pos)[0]) if pos + 4 <= size else None
        scalar = _SCALARS.get(vtype)
        if scalar is not None and pos + 4 + scalar.size <= size:
            value = scalar.unpack_from(mm, pos + 4)[0]
            pos += 4 + scalar.size
            if vtype == V.BOOL:
                value = value != 0
            fields[key] = Field(key, vtype, None, value, buf, (start, pos))
            continue
        c.pos = pos
        item_type = None
        vtype = _value_type(c, lambda key=key: f"key {show_name(key)}")
        if vtype == V.ARRAY:
            item_type = _value_type(c, lambda key=key: f"the items of key {show_name(key)}")
            if item_type == V.ARRAY:  # gguf.cpp: "key '%s' has invalid GGUF type" for an array of arrays
                raise c.fail(
                    f"key {show_name(key)} is an array of arrays, which llama.cpp refuses (invalid GGUF type 9)"
                )
            n = c.unpack(_U64, lambda key=key: f"the item count of key {show_name(key)}")
            if n > GGUF_MAX_ARRAY_ELEMENTS:
                raise c.fail(
                    f"key {show_name(key)} claims {n} items, over llama.cpp's limit of {GGUF_MAX_ARRAY_ELEMENTS}"
                )
            value = _read_array(c, key, item_type, n)
        elif vtype == V.STRING:
            s, e = c.string(lambda key=key: f"the value of key {show_name(key)}")
            value = mm[s:e]
        else:  # a number cut off by the end of the file
            value = c.unpack(_SCALARS[vtype], lambda key=key: f"the value of key {show_name(key)}")
        pos = c.pos
        fields[key] = Field(key, vtype, item_type, value, buf, (start, pos))
    c.pos = pos
    return fields


def _read_array(c: _Cursor, key: str, item_type: GGUFValueType, n: int):
    if item_type == V.STRING:
        # Each string is at least its 8-byte length: a lying count is refused before the loop.
        c.need(8 * n, f"the {n} strings of key {show_name(key)}")
        starts = np.empty(n, np.int64)
        lengths = np.empty(n, np.int64)
        pos, size, mm, unpack = c.pos, c.size, c.mm, _U64.unpack_from
        # One pass in plain Python (each length says where the next string starts); ~0.1 s per 256 K items.
        for i in range(n):
            if pos + 8 > size:
                c.pos = pos
                c.need(8, f"string {i} of key {show_name(key)}")
            (ln,) = unpack(mm, pos)
            pos += 8
            if ln > GGUF_MAX_STRING_LENGTH or ln > size - pos:
                c.pos = pos
                raise c.fail(
                    f"truncated or corrupt: string {i} of key {show_name(key)} claims {ln} bytes, {size - pos} remain"
                )
            starts[i] = pos
            lengths[i] = ln
            pos += ln
        c.pos = pos
        return StringArray(c.buf, starts, lengths)
    dt = _DTYPES[item_type]
    c.need(n * dt.itemsize, f"the {n} items of key {show_name(key)}")
    arr = np.frombuffer(c.mm, dt, n, c.pos)
    c.pos += n * dt.itemsize
    return arr != 0 if item_type == V.BOOL else arr


def _read_tensor_infos(c: _Cursor, n_tensors: int) -> list[Tensor]:
    """The tensor infos (gguf_init_from_reader, "read the tensor info")."""
    tensors: list[Tensor] = []
    names: set[str] = set()
    c_names: set[str] = set()  # cut at the first NUL, as ggml_set_name stores them
    for i in range(n_tensors):
        s, e = c.string(lambda i=i: f"the name of tensor {i}")
        name = c.mm[s:e].decode("utf-8", "surrogateescape")
        if e - s >= GGML_MAX_NAME:
            raise c.fail(f"tensor {i}'s name is {e - s} bytes long; llama.cpp allows at most {GGML_MAX_NAME - 1}")
        if name in names:
            raise c.fail(f"duplicate tensor name {show_name(name)} (tensor {i})")
        names.add(name)
        c_name = name.split("\0", 1)[0]
        if c_name in c_names:  # llama_model_loader: "invalid model: tensor '%s' is duplicated"
            raise c.fail(f"two tensors are named {show_name(c_name)} (up to a NUL byte), which llama.cpp refuses")
        c_names.add(c_name)

        n_dims = c.unpack(_U32, lambda name=name: f"n_dims of tensor {show_name(name)}")
        if n_dims > GGML_MAX_DIMS:
            raise c.fail(
                f"tensor {show_name(name)} has {n_dims} dimensions; ggml allows 1 to {GGML_MAX_DIMS} (GGML_MAX_DIMS)"
            )
        if n_dims == 0:  # gguf.cpp reads it as [1, 1, 1, 1]; see DELIBERATE
            raise c.fail(f"tensor {show_name(name)} has 0 dimensions; a GGUF tensor has 1 to {GGML_MAX_DIMS}")
        ne = tuple(
            c.unpack(_I64, lambda j=j, name=name: f"dimension {j} of tensor {show_name(name)}") for j in range(n_dims)
        )
        if any(n < 0 for n in ne):
            raise c.fail(f"tensor {show_name(name)} has a negative dimension {list(ne)}")
        if 0 in ne:  # gguf.cpp accepts it; see DELIBERATE
            raise c.fail(f"tensor {show_name(name)} has a dimension of 0 {list(ne)}: it holds no data")
        n_elements = 1
        for n in ne:
            n_elements *= n
        if n_elements > INT64_MAX:  # gguf.cpp: "may cause overflow errors"
            raise c.fail(f"tensor {show_name(name)} has shape {list(ne)}: its element count overflows int64")

        t = c.unpack(_I32, lambda name=name: f"the type of tensor {show_name(name)}")
        try:
            ggml_type = T(t)
            block, type_size = GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise c.fail(
                f"tensor {show_name(name)} has unknown ggml type {t}",
                "this file needs a newer kquant, or it is corrupt",
            ) from None
        if ne[0] % block:
            raise c.fail(
                f"tensor {show_name(name)} of type {ggml_type.name} has rows of {ne[0]} elements, "
                f"not a multiple of its block size {block}"
            )
        n_bytes = n_elements // block * type_size
        if n_bytes > SIZE_MAX:
            raise c.fail(f"tensor {show_name(name)} of shape {list(ne)} has a size in bytes over 2^64")
        offset = c.unpack(_U64, lambda name=name: f"the data offset of tensor {show_name(name)}")
        tensors.append(Tensor(name, ne, ggml_type, offset, n_elements, n_bytes, c.buf))
    return tensors


def shape_of(t: Tensor) -> tuple[int, ...]:
    """A tensor's shape in numpy order as ggml sees it: outer axes of size 1 dropped (ggml_n_dims)."""
    ne = list(t.ne)
    while len(ne) > 1 and ne[-1] == 1:
        ne.pop()
    return tuple(reversed(ne))


def weights(t: Tensor, rows: slice | None = None) -> np.ndarray:
    """A float tensor's values as float32, numpy order (exact: F16 and BF16 widen without rounding).

    ``rows``: only these rows of the tensor seen as (rows, last axis), as a 2-D array; a
    whole-file quantizer reads a large tensor a slice at a time. NaN and Inf are refused, as
    llama.cpp refuses a model whose data holds them.
    """
    data = t.data if rows is None else t.data.reshape(-1, t.data.shape[-1])[rows]
    if t.type == T.F32:
        x = np.array(data, dtype=np.float32)
    elif t.type == T.F16:
        # Inf and NaN looked for in the 2-byte values (the test below would read twice the bytes)
        if fp16_nonfinite(data):
            _refuse_nonfinite(t, int(np.count_nonzero(~np.isfinite(np.asarray(data).view(np.float16)))))
        return widen_fp16(data, finite=True)  # numpy's own cast is ~4x slower, a quarter of a Q8_0 file's time
    elif t.type == T.BF16:
        # bf16 is the top half of a float32: shift its 16 bits back into place.
        x = data.astype(np.uint32)
        x <<= 16  # in place: no second temporary
        x = x.view(np.float32)
    else:
        raise KQuantError(
            f"tensor {show_name(t.name)} has type {t.type.name}; kquant reads F32, F16 and BF16 tensors here"
        )
    if not np.isfinite(x).all():
        _refuse_nonfinite(t, int(np.count_nonzero(~np.isfinite(x))))
    return x


def _refuse_nonfinite(t: Tensor, n: int):
    raise KQuantError(
        f"tensor {show_name(t.name)} holds {n} NaN or Inf value(s); llama.cpp refuses such a model too "
        '("has invalid data")'
    )
