# %% [markdown]
"""
# 07 · Inside a GGUF file

Every notebook so far has read and written GGUF files through libraries. This one opens
the workbook's bundled model as raw bytes and reads it by hand with Python's `struct`:
the header, the metadata (the tokenizer and the model's settings are in there), the table
of tensors, the padding, and the tensor data. gguf-py's `GGUFReader` reads the same
bytes alongside, and the two must agree. Then we write a Q4_K_M file with kquant, check
that it is llama.cpp's file byte for byte, and see where one tensor's bytes went.

**After this notebook you will be able to**

* read a GGUF header (magic, version, tensor count, metadata count) from its first 24 bytes;
* walk the typed metadata pairs and find the tokenizer and the model's settings in them;
* decode a tensor info record (name, n_dims, ne, type, offset) and compute where the tensor's
  data starts from the alignment;
* compute a tensor's size in bytes from its type and shape, and compare one tensor in an F16
  file and in a Q4_K_M file;
* judge the claim that GGUF bundles weights, vocabulary and settings in one extensible file.

Words such as *ggml*, *block*, *mix* and *K-quant* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import json
import math
import os
import struct
import tempfile
from collections import Counter

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFReader, GGUFValueType
from ipywidgets import Dropdown, fixed, interact

import kquant
from kquant.model import bpe, hub
from kquant.gguf import anatomy, summary
from kquant import mixes, viz
from kquant.reference import recorded  # llama.cpp's file; without it, checked against its recorded sha256
from kquant.exercises import nb07 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 1. The header: the first 24 bytes

We read the whole file into memory (it is small) and look at its first 24 bytes:
"""

# %%
path = hub.bundled()
data = path.read_bytes()
print(f"{path.name}: {len(data):,} bytes")
print("first 24 bytes:", data[:24].hex(" "))

# %% [markdown]
"""
The GGUF specification (ggml's `docs/gguf.md`) fixes them: 4 magic bytes `GGUF`, a uint32
version, a uint64 tensor count and a uint64 count of metadata pairs, all little-endian.
In `struct`'s notation that is `"<4sIQQ"` (`<` little-endian, `4s` four bytes, `I` uint32,
`Q` uint64):
"""

# %%
print(struct.calcsize("<4sIQQ"), "bytes:", struct.unpack("<4sIQQ", data[:24]))
header = anatomy.parse_header(data)
print(header)

# %% [markdown]
"""
### Exercise 1 (read the header)

Complete `read_header(first24)`: return `(version, tensor_count, kv_count)` from a header's
24 bytes.
"""

# %% answer q1
def read_header(first24):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(read_header)

# %% [markdown]
"""
## 2. Metadata: typed key-value pairs

Right after the header come `kv_count` pairs. Each is a key (a string: uint64 length, then
that many UTF-8 bytes), a uint32 *value type*, and the value. These are the thirteen value
types gguf-py knows (`GGUFValueType`), with the size of the fixed-size ones:
"""

# %%
for vt in GGUFValueType:
    code = anatomy.SCALAR.get(vt)
    size = f"{struct.calcsize(code)} byte(s), struct '{code[1]}'" if code else "length-prefixed, see below"
    print(f"{int(vt):>2} {vt.name:<8} {size}")

# %% [markdown]
"""
A STRING value is a uint64 length and the bytes; an ARRAY is the items' value type
(uint32), a uint64 count, and the items. The first pair, decoded by hand from byte 24:
"""

# %%
pos = 24
(key_len,) = struct.unpack_from("<Q", data, pos)
key = data[pos + 8 : pos + 8 + key_len].decode()
pos += 8 + key_len
(value_type,) = struct.unpack_from("<I", data, pos)
(value_len,) = struct.unpack_from("<Q", data, pos + 4)
value = data[pos + 12 : pos + 12 + value_len].decode()
print(f"key length {key_len}, key {key!r}, value type {value_type} ({GGUFValueType(value_type).name}), value {value!r}")
print(f"the pair ends at byte {pos + 12 + value_len}")

# %% [markdown]
"""
`anatomy.iter_kv` does this for every pair and keeps each one's byte offsets. Arrays
are shown by their length and first items:
"""

# %%
kvs = list(anatomy.iter_kv(data, header.kv_count))


def shown(kv):
    if kv.type == GGUFValueType.ARRAY:
        return f"[{len(kv.value)} x {kv.item_type.name}] {kv.value[:4]}..."
    return repr(kv.value)[:60]


for kv in kvs:
    print(f"{kv.start:>6}-{kv.end - 1:<6} {kv.key:<40} {kv.type.name:<7} {shown(kv)}")

# %% [markdown]
"""
## 3. The tokenizer and the settings are in there

A common claim (C15) says GGUF bundles the weights, the vocabulary and the settings in one
file, with extensible metadata. The settings are the `llama.*` keys above: the context
length, the widths, the number of layers and heads, the RoPE base, the norm epsilon. The
vocabulary is the `tokenizer.ggml.*` keys:
"""

# %%
layout = anatomy.read_layout(data)
tokens, merges = layout.value("tokenizer.ggml.tokens"), layout.value("tokenizer.ggml.merges")
print(f"tokenizer model {layout.value('tokenizer.ggml.model')!r}, pre-tokenizer {layout.value('tokenizer.ggml.pre')!r}")
print(f"{len(tokens)} tokens; first 6: {tokens[:6]}; last 6: {tokens[-6:]}")
print(f"{len(merges)} merges; first 5: {merges[:5]}")
print("token types:", dict(Counter(layout.value("tokenizer.ggml.token_type"))), "(1 = normal, 3 = control)")
print("BOS, EOS ids:", layout.value("tokenizer.ggml.bos_token_id"), layout.value("tokenizer.ggml.eos_token_id"))

# %% [markdown]
"""
The tokens are written in GPT-2's byte alphabet (`bytes_to_unicode` in OpenAI's GPT-2
`encoder.py`, reimplemented in `kquant.model.bpe`), where every byte is a printable character: the space
is `Ġ`. Mapped back to bytes, the last tokens read as text:
"""

# %%
to_byte = {ch: b for b, ch in bpe.bytes_to_unicode().items()}
print("the space byte 0x20 is written", repr(bpe.bytes_to_unicode()[0x20]))
print([bytes(to_byte[ch] for ch in tok).decode() for tok in tokens[-6:]])

# %% [markdown]
"""
And "extensible": a writer may add any key it likes. The bundled model carries one of
its own, `kquant.training`, which `kquant.model.export` writes with the settings the model was
trained with (`scripts/train_model.py`):
"""

# %%
training = json.loads(layout.value("kquant.training"))
print(sorted(training))
print({k: training[k] for k in list(training)[:4]})

# %% [markdown]
"""
So far C15 holds for this file: one file, vocabulary and settings included, and a key of
our own. Two limits: the tokenizer's pre-tokenizer is stored only as a *name*
(`"gpt-2"`); the rules it stands for are code in llama.cpp (`src/llama-vocab.cpp`), so a
reader that does not know the name cannot tokenize the same way. And section 6 will show
that a key of our own survives llama.cpp's quantizer, which copies metadata it does not use.

## 4. Tensor infos, alignment and data offsets

After the last pair come `tensor_count` *tensor info* records: name (string), n_dims
(uint32), n_dims uint64 sizes `ne` (ggml order: `ne[0]` is the row length), the ggml type
(uint32) and an offset (uint64). The first one, by hand:
"""

# %%
pos = kvs[-1].end
(name_len,) = struct.unpack_from("<Q", data, pos)
name = data[pos + 8 : pos + 8 + name_len].decode()
pos += 8 + name_len
(n_dims,) = struct.unpack_from("<I", data, pos)
ne = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
pos += 4 + 8 * n_dims
ggml_type, offset = struct.unpack_from("<IQ", data, pos)
print(f"name {name!r}, n_dims {n_dims}, ne {ne}, type {ggml_type} ({GGMLQuantizationType(ggml_type).name}), offset {offset}")
print(f"the record ends at byte {pos + 12}")
print(f"ne {ne} in ggml order is numpy shape {tuple(reversed(ne))}")

# %% [markdown]
"""
ggml lists sizes fastest-varying first: `ne[0]` is the length of one row, `ne[1]` the number of
rows. numpy lists them the other way round, so a matrix of `ne (256, 958)` is a numpy array of
shape `(958, 256)`: 958 rows of 256 values. Notebook 06 printed numpy shapes; the records here
are in ggml order.
"""

# %% [markdown]
"""
All of them, with `anatomy.tensor_infos`:
"""

# %%
infos = anatomy.tensor_infos(data, header.tensor_count, kvs[-1].end)
for t in infos[:7] + infos[-2:]:
    print(f"bytes {t.start:>6}-{t.end - 1:<6} {t.name:<24} ne {str(t.ne):<11} {t.type.name:<4} offset {t.offset:>10,}")

# %% [markdown]
"""
The offsets count from the start of the *data section*, which begins after the last
record, rounded up to a multiple of the alignment: the value of `general.alignment`, or 32
when the file has no such key (`GGUF_DEFAULT_ALIGNMENT` in gguf-py, the same default in
ggml's `docs/gguf.md`). This file has none:
"""

# %%
alignment = layout.value("general.alignment", GGUF_DEFAULT_ALIGNMENT)
infos_end = infos[-1].end
data_start = anatomy.align(infos_end, alignment)
print(f"alignment {alignment}; the last record ends at byte {infos_end}; the data starts at byte {data_start}")
print(f"{data_start - infos_end} padding bytes, all zero: {set(data[infos_end:data_start]) <= {0}}")

# %% [markdown]
"""
### Exercise 2 (where a tensor's data starts)

Complete `data_offset(infos_end, alignment, offset)`: the absolute byte at which a tensor's
data starts, given where the tensor infos end, the alignment, and the tensor's own offset.
"""

# %% answer q2
def data_offset(infos_end, alignment, offset):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(data_offset)

# %% [markdown]
"""
Each tensor's data takes whole blocks: `ne[0]` weights per row, a row a whole number of
blocks, and `GGML_QUANT_SIZES[type]` gives (weights per block, bytes per block). The next
tensor starts at the next multiple of the alignment:
"""

# %%
for t in infos[:4]:
    print(f"{t.name:<24} {t.type.name}: {math.prod(t.ne):>7,} weights, (block, bytes) = {GGML_QUANT_SIZES[t.type]}, {t.nbytes:>7,} bytes")
gaps_ok = all(b.offset == anatomy.align(a.offset + a.nbytes, alignment) for a, b in zip(infos, infos[1:]))
print("every tensor starts where the one before ends, rounded up to the alignment:", gaps_ok)
print(f"the last tensor's data ends at byte {layout.data_range(infos[-1].name)[1]:,}; the file is {len(data):,} bytes")

# %% [markdown]
"""
### Exercise 3 (a tensor's size in bytes)

Complete `tensor_nbytes(ne, type_name)`: the bytes of a tensor's data, for `ne` in ggml order
and a type name such as `"Q4_K"`.
"""

# %% answer q3
def tensor_nbytes(ne, type_name):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(tensor_nbytes)

# %% [markdown]
"""
### Exercise 4 (write a tensor info record)

Complete `tensor_info_bytes(name, ne, type_name, offset)`: the bytes of the record, in the
order of section 4. The check compares your bytes by their SHA-256 and names the first field
that differs (a non-ASCII name and numbers above 2³² included).
"""

# %% answer q4
def tensor_info_bytes(name, ne, type_name, offset):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q4
ex.q4.check(tensor_info_bytes)

# %% [markdown]
"""
## 5. The same answers as gguf-py's GGUFReader

Everything so far was read with `struct` alone. gguf-py's `GGUFReader` (what
`kquant.gguf.reader` uses) reads the file its own way; every offset and value must agree:
"""

# %%
reader = GGUFReader(path)
fields = list(reader.fields.values())[3:]  # GGUFReader lists the header's three values first
print("keys, in order:", [kv.key for kv in kvs] == [f.name for f in fields])
print("key offsets and types:", all((kv.start, kv.type) == (f.offset, f.types[0]) for kv, f in zip(kvs, fields)))
print("values:", all(kv.value == f.contents() for kv, f in zip(kvs, fields)))
print("tensor names, types, ne:", [(t.name, t.type, t.ne) for t in infos] == [(r.name, r.tensor_type, tuple(int(n) for n in r.shape)) for r in reader.tensors])
print("data start and alignment:", (layout.data_start, layout.alignment) == (reader.data_offset, reader.alignment))
print("each tensor's data offset and size:", all(layout.data_range(t.name) == (r.data_offset, r.data_offset + r.n_bytes) for t, r in zip(infos, reader.tensors)))

# %% [markdown]
"""
## 6. A Q4_K_M file, byte for byte llama.cpp's

kquant writes the Q4_K_M file; llama.cpp's own quantizer (`llama_model_quantize`, what the
`llama-quantize` tool calls) writes another, into a temporary folder. Same bytes means the
same SHA-256:
"""

# %%
out = tempfile.mkdtemp()
ours = kquant.quantize_gguf(path, os.path.join(out, "kquant-Q4_K_M.gguf"), "Q4_K_M", progress=False).path
theirs = os.path.join(out, "llama-cpp-Q4_K_M.gguf")
recorded.model_quantize(path, theirs, "Q4_K_M")
print("kquant:   ", summary.sha256(ours))
print("llama.cpp:", summary.sha256(theirs))
print("the same file:", summary.sha256(ours) == summary.sha256(theirs))

# %% [markdown]
"""
What changed in the metadata? Compare the pairs of the two files:
"""

# %%
q_data = open(theirs, "rb").read()
q_layout = anatomy.read_layout(q_data)
before, after = {kv.key: kv.value for kv in layout.kvs}, {kv.key: kv.value for kv in q_layout.kvs}
print("changed:", {k: (before[k], after[k]) for k in before if k in after and before[k] != after[k]})
print("added:", {k: after[k] for k in after if k not in before}, " removed:", [k for k in before if k not in after])
print("kquant.training survived llama.cpp's quantizer:", after.get("kquant.training") == before["kquant.training"])

# %% [markdown]
"""
`general.file_type` is now llama.cpp's number for the mix (kquant.mixes keeps llama.cpp's
`LLAMA_FTYPE_*` numbers), and llama.cpp adds `general.quantization_version`. Our own key is
copied as it was. Now one tensor in both files:
"""

# %%
print("llama.cpp's file type of Q4_K_M:", repr(mixes.get_mix("Q4_K_M").file_type))
name = "blk.3.attn_q.weight"
for label, lay in [("F16", layout), ("Q4_K_M", q_layout)]:
    t = lay.tensor(name)
    start, end = lay.data_range(name)
    print(f"{label:<7} {t.type.name:<4} ne {t.ne}: data at bytes {start:>9,}-{end - 1:<9,} {t.nbytes:>7,} bytes, {8 * t.nbytes / math.prod(t.ne):.2f} bits per weight")
start = q_layout.data_range(name)[0]
print("its first Q4_K block's d and dmin (float16):", struct.unpack_from("<2e", q_data, start))

# %% [markdown]
"""
The record keeps its name and `ne`; the type and offset change, and the data shrinks from 2
bytes per weight to 144 bytes per 256 weights (Q4_K's block). The offset is smaller for two
reasons: the tensors before it shrank, and llama-quantize writes the tensors in its own order.
It walks them sorted by layer, with the tensors outside the layers first, then by name
(`weight_name_comparer` of `llama_model_loader::weights_map`, `src/llama-model-loader.h`), so
`output_norm.weight` moves to the front, before `token_embd.weight`. The first tensors of each file:
"""

# %%
for label, lay in [("F16", layout), ("Q4_K_M", q_layout)]:
    print(f"{label:<7}", [t.name for t in lay.tensors[:3]], "…")

# %% [markdown]
"""
So compare a tensor's offsets between two files only after finding it by name, never by position.

### Try it: any tensor, in both files

Pick a tensor: the top panel draws both files to scale with its data framed in red (the black
part before the data is a few tens of kB, drawn wider so it can be seen); below are its info
records in each file, coloured by field, with the tensor's position in each file's order.
"""

# %%
files = {"F16 (bundled)": (data, layout), "Q4_K_M": (q_data, q_layout)}
interact(viz.gguf_map_view, files=fixed(files), name=Dropdown(options=[t.name for t in infos], value=name, description="tensor"));

# %% [markdown]
"""
## Summary

* A GGUF file is a 24-byte header (magic, version, two uint64 counts), typed metadata pairs,
  tensor info records (name, n_dims, ne, type, offset), zero padding up to the alignment
  (`general.alignment`, default 32), then the tensor data, each tensor aligned.
* `struct` and gguf-py's `GGUFReader` find every key, value and offset at the same bytes.
* The bundled file holds the weights, the whole tokenizer (tokens, merges, types, special
  ids) and the model's settings, plus a key of our own that llama.cpp carries through
  quantization: C15 holds, with the limit that the pre-tokenizer is only named.
* kquant's Q4_K_M file has the same SHA-256 as llama.cpp's. In it a tensor keeps its name
  and shape; its type, offset and size change.
"""
