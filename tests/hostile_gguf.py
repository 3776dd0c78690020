"""Hostile variants of a small GGUF model, and the two referees that judge them.

``Gguf`` is a GGUF file taken apart into editable pieces (header numbers, raw key-value
records, tensor infos, tensor bytes) and written back byte by byte with ``to_bytes``, so
a variant can lie anywhere: counts, lengths, types, shapes, offsets. It is parsed from
an honest file with gguf-py's GGUFReader, not with kquant, so the builder does not share
kquant's reader's mistakes.

``variants(base, folder)`` writes every variant and returns (name, path, llama_verdict)
triples; ``llama_verdict`` is what llama_model_quantize (llama.cpp 0c1e57098) answered
when these tests were written: "accept" or "refuse".

``llama_verdicts(paths)`` asks llama.cpp itself, each file in a forked child of one worker
process under a memory cap and an alarm, since llama.cpp may abort, hang (a FIFO) or
allocate without bound on such input. ``kquant_verdicts(paths)`` does the same for kquant's
reader in forked children of the calling process.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType

V = GGUFValueType
_FMT = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.BOOL: "<B",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
}


# --- raw encoders: exactly the bytes the GGUF spec lays out, with no checks (lying is the point)


def u32(v):
    return struct.pack("<I", v % 2**32)


def i32(v):
    return struct.pack("<i", v)


def u64(v):
    return struct.pack("<Q", v % 2**64)


def gstr(b: bytes, length: int | None = None) -> bytes:
    """A GGUF string; ``length`` overrides the stored length (a lie when it differs)."""
    return u64(len(b) if length is None else length) + b


def scalar(vtype: V, value) -> bytes:
    """The raw value of a key (type tag + value)."""
    if vtype == V.STRING:
        return i32(V.STRING) + gstr(value if isinstance(value, bytes) else value.encode())
    return i32(vtype) + struct.pack(_FMT[vtype], value)


def array(item_type: V, values, count: int | None = None) -> bytes:
    """The raw value of an array key; ``count`` overrides the stored item count."""
    n = len(values) if count is None else count
    if item_type == V.STRING:
        body = b"".join(gstr(v if isinstance(v, bytes) else v.encode()) for v in values)
    else:
        body = b"".join(struct.pack(_FMT[item_type], v) for v in values)
    return i32(V.ARRAY) + i32(item_type) + u64(n) + body


@dataclass
class TensorInfo:
    name: bytes
    ne: list[int]
    type: int
    data: bytes  # the tensor's bytes, laid out by Gguf.to_bytes
    n_dims: int | None = None  # a lie when it differs from len(ne)
    offset: int | None = None  # a lie when set: otherwise the packed offset is written


@dataclass
class Gguf:
    kvs: list[tuple[bytes, bytes]]  # (key, raw value: type tag + value)
    tensors: list[TensorInfo]
    version: int = 3
    magic: bytes = b"GGUF"
    alignment: int = 32
    n_tensors: int | None = None  # lies when set
    n_kv: int | None = None
    marks: dict = field(default_factory=dict)  # offsets of each structure, filled by to_bytes

    @classmethod
    def parse(cls, path) -> Gguf:
        r = GGUFReader(path)
        kvs = []
        for f in list(r.fields.values())[3:]:  # the first three are GGUFReader's header pseudo-fields
            kvs.append((bytes(f.parts[1]), b"".join(p.tobytes() for p in f.parts[2:])))
        tensors = [
            TensorInfo(t.name.encode(), [int(n) for n in t.shape], int(t.tensor_type), t.data.tobytes())
            for t in r.tensors
        ]
        return cls(kvs, tensors)

    def copy(self) -> Gguf:
        return replace(self, kvs=list(self.kvs), tensors=[replace(t) for t in self.tensors], marks={})

    def set(self, key: str, raw: bytes) -> Gguf:
        k = key.encode()
        for i, (name, _) in enumerate(self.kvs):
            if name == k:
                self.kvs[i] = (k, raw)
                return self
        self.kvs.append((k, raw))
        return self

    def drop(self, key: str) -> Gguf:
        self.kvs = [(k, v) for k, v in self.kvs if k != key.encode()]
        return self

    def to_bytes(self) -> bytes:
        out = bytearray(self.magic + u32(self.version))
        out += struct.pack("<q", len(self.tensors) if self.n_tensors is None else self.n_tensors)
        out += struct.pack("<q", len(self.kvs) if self.n_kv is None else self.n_kv)
        self.marks = {"kv": [], "tensor_info": []}
        for k, raw in self.kvs:
            self.marks["kv"].append(len(out))
            out += gstr(k) + raw
        offsets, pos = [], 0
        for t in self.tensors:
            offsets.append(pos)
            pos += -(-len(t.data) // self.alignment) * self.alignment
        for t, off in zip(self.tensors, offsets):
            self.marks["tensor_info"].append(len(out))
            n_dims = len(t.ne) if t.n_dims is None else t.n_dims
            out += gstr(t.name) + u32(n_dims) + b"".join(struct.pack("<q", n) for n in t.ne)
            out += i32(t.type) + u64(off if t.offset is None else t.offset)
        out += bytes(-len(out) % self.alignment)
        self.marks["data"] = len(out)
        for t, off in zip(self.tensors, offsets):
            out += bytes(self.marks["data"] + off - len(out)) + t.data
        out += bytes(-len(out) % self.alignment)  # the end padding gguf-py writes too
        return bytes(out)


# --- the variants


def variants(base: Path, folder: Path) -> list[tuple[str, Path, str]]:
    """Write every hostile variant of ``base`` into ``folder``: (name, path, llama.cpp's verdict)."""
    folder.mkdir(parents=True, exist_ok=True)
    g0 = Gguf.parse(base)
    honest = g0.to_bytes()
    marks = g0.marks
    out: list[tuple[str, Path, str]] = []

    def add(name: str, content, verdict: str) -> None:
        path = folder / (name.replace(" ", "_").replace("/", "-") + ".gguf")
        path.write_bytes(content.to_bytes() if isinstance(content, Gguf) else content)
        out.append((name, path, verdict))

    def edit(fn) -> Gguf:
        g = g0.copy()
        r = fn(g)
        return r if isinstance(r, Gguf) else g

    add("honest", honest, "accept")

    # Header: magic, version, byte order, counts.
    add("empty file", b"", "refuse")
    add("not gguf", b"GGML" + honest[4:], "refuse")
    add("version 0", edit(lambda g: setattr(g, "version", 0)), "refuse")
    add("version 1", edit(lambda g: setattr(g, "version", 1)), "refuse")
    add("version 2", edit(lambda g: setattr(g, "version", 2)), "accept")
    add("version 4", edit(lambda g: setattr(g, "version", 4)), "refuse")
    add("big-endian", honest[:4] + struct.pack(">I", 3) + honest[8:], "refuse")
    add("tensor count 2^40", edit(lambda g: setattr(g, "n_tensors", 2**40)), "refuse")
    add("tensor count -1", edit(lambda g: setattr(g, "n_tensors", -1)), "refuse")
    add("kv count 2^40", edit(lambda g: setattr(g, "n_kv", 2**40)), "refuse")
    add("kv count -1", edit(lambda g: setattr(g, "n_kv", -1)), "refuse")
    add("kv count one too many", edit(lambda g: setattr(g, "n_kv", len(g.kvs) + 1)), "refuse")
    add("no tensors", edit(lambda g: setattr(g, "tensors", [])), "accept")

    # Truncation at many offsets: in the header, in and between key-value pairs, in the tensor
    # infos, at the data section and inside the data. Only the final padding may go.
    cuts = {3, 4, 7, 8, 16, 23, 24}
    for k in marks["kv"][::3]:
        cuts |= {k + 1, k + 9, k + 12}
    for k in marks["tensor_info"][::4]:
        cuts |= {k, k + 5, k + 30}
    last = g0.tensors[-1]
    end_of_data = len(honest) - (-len(last.data) % 32)
    cuts |= {marks["data"], marks["data"] + 1, (marks["data"] + len(honest)) // 2, end_of_data - 1}
    for cut in sorted(cuts):
        add(f"truncated at {cut}", honest[:cut], "refuse")
    add("end padding removed", honest[:end_of_data], "accept")

    # Lying lengths and counts.
    add(
        "key length 2^40",
        edit(lambda g: g.kvs.insert(0, (b"x", b""))).to_bytes().replace(gstr(b"x"), u64(2**40) + b"x", 1),
        "refuse",
    )
    add("string value length 2^40", edit(lambda g: g.set("general.name", i32(V.STRING) + gstr(b"x", 2**40))), "refuse")
    add(
        "string value length 2^64-1",
        edit(lambda g: g.set("general.name", i32(V.STRING) + gstr(b"x", 2**64 - 1))),
        "refuse",
    )
    add("u8 array count 2^40", edit(lambda g: g.set("kquant.test.lie", array(V.UINT8, [1, 2], count=2**40))), "refuse")
    add("u64 array count 2^62", edit(lambda g: g.set("kquant.test.lie", array(V.UINT64, [1], count=2**62))), "refuse")
    add(
        "string array count 2^40",
        edit(lambda g: g.set("kquant.test.lie", array(V.STRING, ["a"], count=2**40))),
        "refuse",
    )
    add(
        "string array item length lies",
        edit(
            lambda g: g.set("kquant.test.lie", i32(V.ARRAY) + i32(V.STRING) + u64(2) + gstr(b"a") + gstr(b"b", 2**40))
        ),
        "refuse",
    )
    add(
        "array count one too many", edit(lambda g: g.set("kquant.test.lie", array(V.UINT32, [1, 2], count=3))), "refuse"
    )

    # Types: invalid, nested arrays, empty and duplicate keys.
    add("value type 13", edit(lambda g: g.set("kquant.test.bad", i32(13) + u32(0))), "refuse")
    add("value type -1", edit(lambda g: g.set("kquant.test.bad", i32(-1) + u32(0))), "refuse")
    nested = i32(V.ARRAY) + i32(V.ARRAY) + u64(1) + i32(V.UINT32) + u64(1) + u32(7)
    add("array of arrays", edit(lambda g: g.set("kquant.test.nested", nested)), "refuse")
    deep = i32(V.ARRAY) + (i32(V.ARRAY) + u64(1)) * 10000 + i32(V.UINT8) + u64(0)
    add("arrays nested 10000 deep", edit(lambda g: g.set("kquant.test.nested", deep)), "refuse")
    add("empty key", edit(lambda g: g.kvs.insert(0, (b"", scalar(V.UINT8, 1)))), "refuse")
    add("duplicate key", edit(lambda g: g.kvs.append(g.kvs[0])), "refuse")
    add("bool value 7", edit(lambda g: g.set("kquant.test.bool", i32(V.BOOL) + b"\x07")), "accept")
    add(
        "empty arrays",
        edit(lambda g: g.set("kquant.test.e1", array(V.UINT8, [])).set("kquant.test.e2", array(V.STRING, []))),
        "accept",
    )
    add("invalid utf-8 string", edit(lambda g: g.set("general.name", scalar(V.STRING, b"\xff\xfe"))), "accept")

    # general.alignment: u32, a power of two.
    add(
        "alignment 64",
        edit(lambda g: (g.set("general.alignment", scalar(V.UINT32, 64)), setattr(g, "alignment", 64))),
        "accept",
    )
    add("alignment as u64", edit(lambda g: g.set("general.alignment", scalar(V.UINT64, 32))), "refuse")
    add("alignment 0", edit(lambda g: g.set("general.alignment", scalar(V.UINT32, 0))), "refuse")
    add(
        "alignment 1",
        edit(lambda g: (g.set("general.alignment", scalar(V.UINT32, 1)), setattr(g, "alignment", 1))),
        "accept",
    )
    add("alignment 2^31", edit(lambda g: g.set("general.alignment", scalar(V.UINT32, 2**31))), "refuse")
    add(
        "alignment 48",
        edit(lambda g: (g.set("general.alignment", scalar(V.UINT32, 48)), setattr(g, "alignment", 48))),
        "refuse",
    )

    # The llama hyper-parameters: wrong types and absurd values.
    L = "llama."
    for name, key, raw, verdict in [
        ("block_count 0", "block_count", scalar(V.UINT32, 0), "refuse"),
        ("block_count -1 as i32", "block_count", scalar(V.INT32, -1), "refuse"),
        ("block_count 2 as i32", "block_count", scalar(V.INT32, 2), "refuse"),
        ("block_count 1e9", "block_count", scalar(V.UINT32, 10**9), "refuse"),
        ("block_count 513", "block_count", scalar(V.UINT32, 513), "refuse"),
        ("block_count 512", "block_count", scalar(V.UINT32, 512), "accept"),
        ("block_count as u64", "block_count", scalar(V.UINT64, 2), "refuse"),
        ("block_count as string", "block_count", scalar(V.STRING, "2"), "refuse"),
        ("block_count as float", "block_count", scalar(V.FLOAT32, 2.0), "refuse"),
        ("head_count as i32", "attention.head_count", scalar(V.INT32, 4), "refuse"),
        ("head_count as string", "attention.head_count", scalar(V.STRING, "4"), "refuse"),
        ("head_count array of 2 u32", "attention.head_count", array(V.UINT32, [4, 4]), "accept"),
        ("head_count array of 2 i32", "attention.head_count", array(V.INT32, [4, 4]), "accept"),
        ("head_count array of 3", "attention.head_count", array(V.UINT32, [4, 4, 4]), "refuse"),
        ("head_count array of f32", "attention.head_count", array(V.FLOAT32, [4.0, 4.0]), "refuse"),
        ("head_count_kv as u64", "attention.head_count_kv", scalar(V.UINT64, 4), "refuse"),
        ("context_length as i32", "context_length", scalar(V.INT32, 256), "refuse"),
        ("context_length as float", "context_length", scalar(V.FLOAT32, 256.0), "refuse"),
        ("embedding_length 0", "embedding_length", scalar(V.UINT32, 0), "refuse"),
        ("embedding_length as u64", "embedding_length", scalar(V.UINT64, 256), "refuse"),
        ("rms eps as f64", "attention.layer_norm_rms_epsilon", scalar(V.FLOAT64, 1e-5), "refuse"),
        ("rope dimension wrong", "rope.dimension_count", scalar(V.UINT32, 32), "refuse"),
        ("rope scaling type bogus", "rope.scaling.type", scalar(V.STRING, "bogus"), "refuse"),
        ("rope freq_base as f64", "rope.freq_base", scalar(V.FLOAT64, 1e4), "refuse"),
        ("vocab_size as string", "vocab_size", scalar(V.STRING, "300"), "refuse"),
        ("expert_count 4 without used", "expert_count", scalar(V.UINT32, 4), "refuse"),
        ("feed_forward_length as i64", "feed_forward_length", scalar(V.INT64, 512), "refuse"),
        ("block_count 1 (tensors of 2)", "block_count", scalar(V.UINT32, 1), "accept"),
        ("context_length 0", "context_length", scalar(V.UINT32, 0), "accept"),
        ("head_count 0", "attention.head_count", scalar(V.UINT32, 0), "accept"),
        ("head_count_kv 0", "attention.head_count_kv", scalar(V.UINT32, 0), "accept"),
        ("head_count_kv 3", "attention.head_count_kv", scalar(V.UINT32, 3), "accept"),
        ("key_length 32", "attention.key_length", scalar(V.UINT32, 32), "refuse"),
        ("key_length 64", "attention.key_length", scalar(V.UINT32, 64), "accept"),
        ("key_length as i32", "attention.key_length", scalar(V.INT32, 64), "refuse"),
        ("nextn_predict_layers 3", "nextn_predict_layers", scalar(V.UINT32, 3), "refuse"),
        ("expert_used_count as string", "expert_used_count", scalar(V.STRING, "2"), "refuse"),
        ("expert_group_count 2 without experts", "expert_group_count", scalar(V.UINT32, 2), "refuse"),
        ("expert_count 2000", "expert_count", scalar(V.UINT32, 2000), "refuse"),
        ("rope scaling factor as string", "rope.scaling.factor", scalar(V.STRING, "2"), "refuse"),
        ("rope scale_linear as string", "rope.scale_linear", scalar(V.STRING, "2"), "refuse"),
        ("rope scaling type yarn", "rope.scaling.type", scalar(V.STRING, "yarn"), "accept"),
        ("rms eps NaN", "attention.layer_norm_rms_epsilon", scalar(V.FLOAT32, float("nan")), "accept"),
        ("classifier labels as u32", "classifier.output_labels", scalar(V.UINT32, 1), "accept"),
        ("classifier labels as u32 array", "classifier.output_labels", array(V.UINT32, [1]), "refuse"),
        ("pooling_type as i32", "pooling_type", scalar(V.INT32, 0), "refuse"),
        ("causal as u8", "attention.causal", scalar(V.UINT8, 1), "refuse"),
        ("vocab_size 300", "vocab_size", scalar(V.UINT32, 300), "accept"),
    ]:
        add(name, edit(lambda g, key=key, raw=raw: g.set(L + key, raw)), verdict)
    for name, key in [
        ("no block_count", "block_count"),
        ("no context_length", "context_length"),
        ("no embedding_length", "embedding_length"),
        ("no rms eps", "attention.layer_norm_rms_epsilon"),
    ]:
        add(name, edit(lambda g, key=key: g.drop(L + key)), "refuse")
    add("no architecture", edit(lambda g: g.drop("general.architecture")), "refuse")
    add("architecture unknown", edit(lambda g: g.set("general.architecture", scalar(V.STRING, "gpt99"))), "refuse")
    add("architecture as u32", edit(lambda g: g.set("general.architecture", scalar(V.UINT32, 1))), "refuse")
    add("general.name as u32", edit(lambda g: g.set("general.name", scalar(V.UINT32, 1))), "refuse")
    add("file_type as string", edit(lambda g: g.set("general.file_type", scalar(V.STRING, "F32"))), "refuse")
    add("split.count as string", edit(lambda g: g.set("split.count", scalar(V.STRING, "1"))), "refuse")
    add("split.count 1 as u32", edit(lambda g: g.set("split.count", scalar(V.UINT32, 1))), "refuse")
    add("split.count 1 as u16", edit(lambda g: g.set("split.count", scalar(V.UINT16, 1))), "accept")
    add("split.count 2", edit(lambda g: g.set("split.count", scalar(V.UINT16, 2))), "refuse")
    # Keys and names with a NUL byte: llama.cpp compares whole keys for duplicates, but looks keys up
    # with strcmp, so the first key equal up to the NUL is the one it reads.
    shadow = (b"llama.block_count\0x", scalar(V.STRING, "2"))
    add("a bad key shadowing block_count up to a NUL", edit(lambda g: g.kvs.insert(0, shadow)), "refuse")
    add("key starting with a NUL", edit(lambda g: g.kvs.append((b"\0kquant", scalar(V.UINT8, 1)))), "refuse")
    add(
        "general.alignment NUL x as a string",
        edit(lambda g: g.kvs.append((b"general.alignment\0x", scalar(V.STRING, "32")))),
        "refuse",
    )
    add(
        "architecture llama NUL junk",
        edit(lambda g: g.set("general.architecture", scalar(V.STRING, b"llama\0junk"))),
        "accept",
    )
    add(
        "tokens as a string with vocab_size",
        edit(
            lambda g: g.set("tokenizer.ggml.tokens", scalar(V.STRING, "a")).set(
                "llama.vocab_size", scalar(V.UINT32, 300)
            )
        ),
        "accept",
    )
    add("split.count 0", edit(lambda g: g.set("split.count", scalar(V.UINT16, 0))), "accept")
    add(
        "experts 4, 2 used",
        edit(
            lambda g: g.set("llama.expert_count", scalar(V.UINT32, 4)).set(
                "llama.expert_used_count", scalar(V.UINT32, 2)
            )
        ),
        "accept",
    )
    add(
        "experts 4, 5 used",
        edit(
            lambda g: g.set("llama.expert_count", scalar(V.UINT32, 4)).set(
                "llama.expert_used_count", scalar(V.UINT32, 5)
            )
        ),
        "refuse",
    )
    add(
        "expert_used_count array of 2",
        edit(
            lambda g: g.set("llama.expert_count", scalar(V.UINT32, 4)).set(
                "llama.expert_used_count", array(V.INT32, [2, 2])
            )
        ),
        "accept",
    )
    add("tokens as a string", edit(lambda g: g.set("tokenizer.ggml.tokens", scalar(V.STRING, "a"))), "refuse")

    # Tensor infos.
    def tensor(i, **changes):
        def fn(g):
            g.tensors[i] = replace(g.tensors[i], **changes)

        return edit(fn)

    norm = next(i for i, t in enumerate(g0.tensors) if t.name.endswith(b"norm.weight"))
    mat = next(i for i, t in enumerate(g0.tensors) if t.name.endswith(b"attn_q.weight"))
    add("n_dims 0", tensor(norm, ne=[], n_dims=0, data=g0.tensors[norm].data[:4]), "accept")
    add("n_dims 5", tensor(mat, ne=g0.tensors[mat].ne + [1, 1, 1]), "refuse")
    add("n_dims 4", tensor(mat, ne=g0.tensors[mat].ne + [1, 1]), "accept")
    add("dimension 0 in a matrix", tensor(mat, ne=[256, 0], data=b""), "accept")
    add("dimension 0 in a norm", tensor(norm, ne=[0], data=b""), "refuse")
    add("negative dimension", tensor(mat, ne=[256, -1]), "refuse")
    add("element count overflow", tensor(mat, ne=[2**32, 2**32]), "refuse")
    add("byte size overflow", tensor(mat, ne=[2**31, 2**31]), "refuse")
    add("unknown ggml type 43", tensor(mat, type=43), "refuse")
    add("removed ggml type 4", tensor(mat, type=4), "refuse")
    add("ggml type -1", tensor(mat, type=-1), "refuse")
    rows = g0.tensors[mat].ne[1]
    add("ggml type 42 (Q2_0)", tensor(mat, type=42, data=bytes(rows * 256 // 64 * 18)), "refuse")
    add("row not a multiple of the block", tensor(norm, type=12), "refuse")  # Q4_K needs rows of 256
    add("tensor name of 64 bytes", tensor(mat, name=b"x" * 64), "refuse")
    add("tensor name of 63 bytes", tensor(mat, name=b"x" * 63), "accept")
    add("duplicate tensor name", tensor(mat + 1, name=g0.tensors[mat].name), "refuse")
    add("tensor names equal up to a NUL", tensor(mat + 1, name=g0.tensors[mat].name + b"\0k"), "refuse")

    # Tensor offsets: gguf.cpp requires the packed layout exactly.
    data0 = len(g0.tensors[0].data)
    add("misaligned offset", tensor(1, offset=-(-data0 // 32) * 32 + 4), "refuse")
    add("overlapping offsets", tensor(1, offset=0), "refuse")
    add("gap between tensors", tensor(1, offset=-(-data0 // 32) * 32 + 32), "refuse")
    add("offset past the end", tensor(len(g0.tensors) - 1, offset=2**40), "refuse")
    add("offset wraps around 2^64", tensor(len(g0.tensors) - 1, offset=2**64 - 64), "refuse")

    def swap(g):
        # attn_k and attn_v of one block have the same size: swapping their offsets keeps every range
        # aligned, in bounds and disjoint; only the order differs from the order of the infos.
        k = next(i for i, t in enumerate(g.tensors) if t.name.endswith(b"attn_k.weight"))
        g.tensors[k].data, g.tensors[k + 1].data = g.tensors[k + 1].data, g.tensors[k].data
        pos = [sum(-(-len(t.data) // 32) * 32 for t in g.tensors[:i]) for i in (k, k + 1)]
        g.tensors[k].offset, g.tensors[k + 1].offset = pos[1], pos[0]

    add("offsets out of order", edit(swap), "refuse")

    # Not regular files.
    fifo = folder / "fifo.gguf"
    if not fifo.exists():
        os.mkfifo(fifo)
    out.append(("fifo", fifo, "refuse"))
    d = folder / "a_folder.gguf"
    d.mkdir(exist_ok=True)
    out.append(("folder", d, "refuse"))
    out.append(("/dev/zero", Path("/dev/zero"), "refuse"))
    out.append(("missing file", folder / "missing.gguf", "refuse"))
    link = folder / "symlink.gguf"
    if not link.is_symlink():
        link.symlink_to(folder / "honest.gguf")
    out.append(("symlink to the honest file", link, "accept"))
    return out


def mutants(base: Path, folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` copies of ``base`` with random damage in the header, metadata or tensor infos: flipped bits,
    random bytes, or a u32 / u64 overwritten with a boundary value. No verdict is recorded: llama.cpp judges."""
    import random

    folder.mkdir(parents=True, exist_ok=True)
    honest = base.read_bytes()
    g = Gguf.parse(base)
    g.to_bytes()
    end = g.marks["data"]  # damage before the data: the data itself is the quantizer's business
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        b = bytearray(honest)
        kind = rng.choice(["flip", "byte", "u32", "u64", "several flips"])
        for _ in range(rng.choice([2, 3]) if kind == "several flips" else 1):
            pos = rng.randrange(4, end - 8)
            if kind in ("flip", "several flips"):
                b[pos] ^= 1 << rng.randrange(8)
            elif kind == "byte":
                b[pos] = rng.randrange(256)
            elif kind == "u32":
                b[pos : pos + 4] = u32(rng.choice([0, 1, 9, 13, 255, 2**31, 2**32 - 1, rng.randrange(2**32)]))
            else:
                b[pos : pos + 8] = u64(rng.choice([0, 1, 2**32, 2**63, 2**64 - 1, rng.randrange(2**64)]))
        path = folder / f"mutant{i}.gguf"
        path.write_bytes(bytes(b))
        paths.append(path)
    return paths


# --- the referees


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _run_forked(fn, path: str, timeout: float, extra_mem: int) -> dict:
    """Run fn(path) -> dict in a forked child under RLIMIT_AS and an alarm; a crash or hang is a verdict too."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            vm = _vm_bytes()
            if vm:  # Linux: cap the address space a little above what the child starts with
                resource.setrlimit(resource.RLIMIT_AS, (vm + extra_mem, vm + extra_mem))
            signal.alarm(int(timeout))  # SIGALRM's default action ends the child, even inside C code
            result = fn(path)
        except BaseException as e:
            result = {"verdict": "crash", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        try:
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    # Read while waiting: a child whose answer is larger than the pipe's buffer must not block.
    deadline = time.monotonic() + timeout + 10
    hung = False
    chunks = []
    while True:
        ready, _, _ = select.select([r], [], [], 0.05)
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:  # the child is gone (or closed the pipe)
                break
            chunks.append(chunk)
        elif time.monotonic() > deadline:  # the alarm did not end it: a last resort
            os.kill(pid, signal.SIGKILL)
            hung = True
            break
    os.close(r)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - t0
    result = None
    if chunks and not hung:
        try:
            result = json.loads(b"".join(chunks))
        except ValueError:  # cut off by the alarm or a crash while writing
            result = None
    if result is not None:
        pass
    elif hung or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM):
        result = {"verdict": "hang", "error": f"still running after {timeout} s"}
    elif os.WIFSIGNALED(status):
        result = {"verdict": "killed", "error": f"killed by {signal.Signals(os.WTERMSIG(status)).name}"}
    else:
        result = {"verdict": "crash", "error": f"exit status {os.WEXITSTATUS(status)}"}
    result["seconds"] = seconds
    return result


def _kquant_open(path: str) -> dict:
    import tracemalloc

    from kquant.errors import KQuantError
    from kquant.gguf.llama_keys import check_llama
    from kquant.gguf.reader import open_gguf

    tracemalloc.start()
    try:
        with open_gguf(path) as f:
            check_llama(f)
            for t in f.tensors:  # every view must be constructible
                _ = t.data.shape
            _ = [f.get(k) for k in f.fields]
        verdict, error = "accept", ""
    except KQuantError as e:
        verdict, error = "refuse", str(e)
    peak = tracemalloc.get_traced_memory()[1]
    return {"verdict": verdict, "error": error, "peak_bytes": peak}


def kquant_verdicts(paths, timeout: float = 30, extra_mem: int = 1 << 30) -> dict[str, dict]:
    """kquant's reader on each path, in a forked child (memory cap ``extra_mem`` above the current size)."""
    import kquant.gguf.reader  # noqa: F401 -- imported once here, not in every child

    return {str(p): _run_forked(_kquant_open, str(p), timeout, extra_mem) for p in paths}


def _llama_quantize(path: str) -> dict:
    """In the forked child: llama_model_quantize(path) to Q4_K_M, its log into a file."""
    out = path + ".out"
    log = os.open(path + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    from kquant import reference

    try:
        reference.model_quantize(path, out, "Q4_K_M")
        return {"verdict": "accept", "error": ""}
    except Exception as e:
        return {"verdict": "refuse", "error": str(e)}
    finally:
        if os.path.lexists(out) and not os.path.isdir(out):
            os.unlink(out)


def _llama_worker(paths: list[str], timeouts: list[float]) -> None:
    import llama_cpp  # noqa: F401 -- imported once, before the forks

    from kquant import reference  # noqa: F401

    results = {}
    for p, t in zip(paths, timeouts):
        res = _run_forked(_llama_quantize, p, t, 4 << 30)
        if res["verdict"] != "accept":
            res["verdict"], res["how"] = "refuse", res["verdict"]
            res["log"] = _last_error_line(p + ".log")
        results[p] = res
    print(json.dumps(results))


def _last_error_line(log: str) -> str:
    try:
        lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    hits = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower() or "assert" in ln.lower()]
    return (hits or lines or [""])[-1][:300]


def llama_verdicts(paths, timeout: float = 60) -> dict[str, dict]:
    """llama_model_quantize's verdict on each path (one worker process, one fork per file).

    A FIFO would block llama.cpp's fopen forever: its alarm is short, and a hang counts as a refusal.
    """
    paths = [str(p) for p in paths]
    timeouts = [3 if Path(p).is_fifo() else timeout for p in paths]
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import hostile_gguf; "
        "hostile_gguf._llama_worker(json.loads(sys.argv[2]), json.loads(sys.argv[3]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(paths), json.dumps(timeouts)],
        capture_output=True,
        text=True,
        timeout=sum(timeouts) + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the llama.cpp worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vocab_model(path: Path, n_tokens: int = 256 * 1024) -> Path:
    """A GGUF holding only a vocabulary of ``n_tokens`` strings (plus their types and scores)."""
    toks = [f"tok{i}".encode() for i in range(n_tokens)]
    lens = np.array([len(t) for t in toks], np.uint64)
    body = bytearray(i32(V.ARRAY) + i32(V.STRING) + u64(n_tokens))
    inter = np.empty(n_tokens * 2, dtype=object)
    inter[0::2] = [x.tobytes() for x in lens]
    inter[1::2] = toks
    body += b"".join(inter)
    g = Gguf(
        [
            (b"general.architecture", scalar(V.STRING, "llama")),
            (b"tokenizer.ggml.tokens", bytes(body)),
            (b"tokenizer.ggml.scores", i32(V.ARRAY) + i32(V.FLOAT32) + u64(n_tokens) + bytes(4 * n_tokens)),
            (b"tokenizer.ggml.token_type", i32(V.ARRAY) + i32(V.INT32) + u64(n_tokens) + bytes(4 * n_tokens)),
        ],
        [],
    )
    path.write_bytes(g.to_bytes())
    return path
