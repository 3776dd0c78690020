"""Exercises of notebook 07, inside a GGUF file."""

import math
import struct

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kquant.exercises.core import Exercise, Wrong, as_bytes, as_number, call, digest, same_bytes
from kquant.gguf import anatomy


def _random_header(rng) -> bytes:
    version = int(rng.choice([2, 3]))
    return struct.pack("<4sIQQ", b"GGUF", version, int(rng.integers(1, 2**40)), int(rng.integers(1, 2**33)))


def _check_read_header(fn, rng):
    headers = [
        struct.pack("<4sIQQ", b"GGUF", 3, 2**32 + 5, 7),  # a count above 2**32: 32-bit reads lose it
        struct.pack("<4sIQQ", b"GGUF", 3, 291, 2**33 + 1),
    ] + [_random_header(rng) for _ in range(8)]
    for k, raw in enumerate(headers):
        what = f"read_header(<24 bytes>) (header {k + 1})"
        got = call(fn, raw)
        want = tuple(anatomy.parse_header(raw)[1:])
        if not isinstance(got, (tuple, list)):
            as_number(got, what)  # None and other odd values get their own message
            raise Wrong(f"{what} should return a tuple (version, tensor_count, kv_count), not a single number")
        if len(got) == 4 and isinstance(got[0], (bytes, bytearray)) and bytes(got[0]) == b"GGUF":
            raise Wrong(f"{what}: leave the magic out, return the three numbers (version, tensor_count, kv_count)")
        if len(got) != 3:
            raise Wrong(f"{what} should return 3 numbers (version, tensor_count, kv_count), got {len(got)} values")
        got = tuple(as_number(v, f"{what}[{i}]") for i, v in enumerate(got))
        if got == want:
            continue
        if got == struct.unpack(">IQQ", raw[4:24]):
            raise Wrong(f"{what} = {got}: GGUF is little-endian, use '<' in the struct format")
        if got == struct.unpack("<III", raw[4:16]):
            raise Wrong(
                f"{what}: the two counts are 64-bit (uint64, 'Q'), not 32-bit: version at byte 4, tensor count at "
                "8, kv count at 16"
            )
        raise Wrong(f"{what} = {got}; the header says otherwise (bytes 4-7 version, 8-15 tensor count, 16-23 kv count)")
    return f"the right version and counts for {len(headers)} random headers"


q1 = Exercise(
    "nb07",
    "q1",
    "read_header(first24)",
    _check_read_header,
    hints=[
        "After the 4 magic bytes: a uint32 version, then two uint64 counts, all little-endian.",
        "struct.unpack('<4sIQQ', first24) gives (magic, version, tensor_count, kv_count).",
    ],
    solution="""
    magic, version, tensor_count, kv_count = struct.unpack("<4sIQQ", bytes(first24[:24]))
    return version, tensor_count, kv_count
    """,
    forbidden=(anatomy.parse_header, anatomy.read_layout, "gguf.gguf_reader"),
    task="the header parsing",
)


def _check_data_offset(fn, rng):
    cases = []
    for _ in range(10):
        alignment = int(rng.choice([16, 32, 64, 256]))
        end = int(rng.integers(24, 100_000))
        cases.append((end, alignment, alignment * int(rng.integers(0, 1000))))
    cases.append((64 * 100, 32, 0))  # the metadata already ends on a multiple of the alignment
    cases.append((64 * 100 + 1, 32, 32 * 7))
    for end, alignment, offset in cases:
        what = f"data_offset({end}, {alignment}, {offset})"
        got = as_number(call(fn, end, alignment, offset), what)
        start = anatomy.align(end, alignment)
        want = start + offset
        if got == want:
            continue
        if got == end + offset and end % alignment:
            raise Wrong(
                f"{what} = {got:g}: the data section starts at the next multiple of {alignment} after byte {end}, "
                f"not at {end}"
            )
        if got == end - end % alignment + offset:
            raise Wrong(f"{what} = {got:g}: that rounds down; padding can only add bytes, so round up")
        if got == end + alignment - end % alignment + offset and end % alignment == 0:
            raise Wrong(f"{what} = {got:g}: {end} is already a multiple of {alignment}, so no padding is added")
        if got == start:
            raise Wrong(f"{what} = {got:g}: that is where the data section starts; add the tensor's own offset")
        raise Wrong(f"{what} = {got:g}; the tensor's data starts at another byte")
    return f"the right absolute data offset in {len(cases)} cases, an already aligned end included"


q2 = Exercise(
    "nb07",
    "q2",
    "data_offset(infos_end, alignment, offset)",
    _check_data_offset,
    hints=[
        "The data section starts at infos_end rounded *up* to a multiple of alignment; a tensor's offset counts "
        "from there.",
        "Rounding up: infos_end + (-infos_end) % alignment (Python's % of a negative number is never negative).",
    ],
    solution="""
    start = infos_end + (-infos_end) % alignment
    return start + offset
    """,
    forbidden=(anatomy.align, anatomy.read_layout),
    task="the alignment arithmetic",
)


def _check_tensor_nbytes(fn, rng):
    names = ["F32", "F16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q2_K"]
    for k in range(10):
        t = names[k % len(names)] if k < len(names) else names[int(rng.integers(len(names)))]
        ne = (256 * int(rng.integers(1, 5)),) + tuple(int(n) for n in rng.integers(1, 50, int(rng.integers(0, 3))))
        what = f"tensor_nbytes({ne}, {t!r})"
        got = as_number(call(fn, ne, t), what)
        want = anatomy.tensor_nbytes(ne, t)
        if got == want:
            continue
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[t]]
        n = math.prod(ne)
        if got == 8 * want:
            raise Wrong(f"{what} = {got:g}: that is bits; the answer is in bytes")
        if got == n * type_size and block > 1:
            raise Wrong(f"{what} = {got:g}: {t} stores {type_size} bytes per block of {block} weights, not per weight")
        if got == n // block:
            raise Wrong(f"{what} = {got:g}: that is the number of blocks; each takes {type_size} bytes")
        raise Wrong(f"{what} = {got:g}; a {t} tensor of {n} weights takes a different number of bytes")
    return "the right byte size for 10 tensors of 8 types, 1-D to 3-D"


q3 = Exercise(
    "nb07",
    "q3",
    "tensor_nbytes(ne, type_name)",
    _check_tensor_nbytes,
    hints=[
        "GGML_QUANT_SIZES[GGMLQuantizationType[type_name]] is (weights per block, bytes per block).",
        "Number of weights: math.prod(ne); blocks = weights // block size; bytes = blocks × bytes per block.",
    ],
    solution="""
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    return math.prod(ne) // block * type_size
    """,
    forbidden=(anatomy.tensor_nbytes, anatomy.TensorInfo.nbytes, "gguf.quants"),
    task="the size computation",
)


def _check_tensor_info_bytes(fn, rng):
    kinds = ["attn_q", "attn_v", "ffn_down", "attn_norm"]
    cases = [("blk.0.ffn_up.weight", (256, 2**33 + 3), "Q4_K", 32 * 2**30)]  # ne and offset above 32 bits
    cases.append(("blk.7.attn_k.wéight", (512, 64), "F16", 0))  # a non-ASCII name: its length in bytes
    for k in range(6):
        kind = kinds[k % len(kinds)]
        name = f"blk.{int(rng.integers(0, 40))}.{kind}.weight"
        ne = (
            (256 * int(rng.integers(1, 9)),)
            if kind == "attn_norm"
            else (256 * int(rng.integers(1, 9)), int(rng.integers(1, 3000)))
        )
        t = "F32" if kind == "attn_norm" else str(rng.choice(["F16", "Q4_K", "Q6_K"]))
        cases.append((name, ne, t, 32 * int(rng.integers(0, 10**6))))
    for name, ne, t, offset in cases:
        what = f"tensor_info_bytes({name!r}, {ne}, {t!r}, {offset})"
        want = anatomy.encode_tensor_info(name, ne, t, offset)
        got = as_bytes(call(fn, name, ne, t, offset), len(want), what)
        if digest(got) == digest(want):
            continue
        if len(ne) > 1 and digest(got) == digest(anatomy.encode_tensor_info(name, ne[::-1], t, offset)):
            raise Wrong(f"{what}: ne is written as given, ne[0] first (ggml order), not reversed")
        _diagnose_record(got, want, name, ne, what)
        same_bytes(got, want, f"the bytes of {what}", whose="the record a GGUF writer puts in the file")
    return f"your records are the bytes a GGUF writer puts in the file, for {len(cases)} tensors"


def _diagnose_record(got: bytes, want: bytes, name: str, ne, what: str) -> None:
    """Name the first field of the record that differs: length, name, n_dims, ne, type or offset."""
    n = len(name.encode("utf-8"))
    fields = [
        ("the name's length (uint64, little-endian, counted in UTF-8 bytes)", 0, 8),
        ("the name (its UTF-8 bytes, no terminating zero)", 8, 8 + n),
        ("n_dims (uint32)", 8 + n, 12 + n),
        ("the dimensions ne (uint64 each, little-endian)", 12 + n, 12 + n + 8 * len(ne)),
        ("the type (uint32: the number of the GGMLQuantizationType)", 12 + n + 8 * len(ne), 16 + n + 8 * len(ne)),
        ("the offset (uint64, little-endian)", 16 + n + 8 * len(ne), 24 + n + 8 * len(ne)),
    ]
    for label, a, b in fields:
        if got[a:b] != want[a:b]:
            raise Wrong(f"{what}: the record is the right length, but {label} at bytes {a}-{b - 1} is wrong")


q4 = Exercise(
    "nb07",
    "q4",
    "tensor_info_bytes(name, ne, type_name, offset)",
    _check_tensor_info_bytes,
    hints=[
        "In order: uint64 name length, the name's UTF-8 bytes, uint32 n_dims, n_dims uint64 ne values, uint32 "
        "type, uint64 offset.",
        "The type is its number, int(GGMLQuantizationType[type_name]); build it with struct.pack('<Q', ...) + ... "
        "pieces.",
    ],
    solution="""
    raw = name.encode("utf-8")
    out = struct.pack("<Q", len(raw)) + raw + struct.pack("<I", len(ne))
    out += struct.pack(f"<{len(ne)}Q", *ne)
    return out + struct.pack("<IQ", int(GGMLQuantizationType[type_name]), offset)
    """,
    forbidden=(anatomy.encode_tensor_info, "gguf.gguf_writer"),
    task="the tensor-info record",
)
