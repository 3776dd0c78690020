# %% [markdown]
"""
# 06 · The Q4_K_M recipe

"Q4_K_M" names a whole file, not a block format: a *mix* in which each tensor of the model
gets its own format by llama.cpp's rules. This notebook draws the plan for the workbook's
bundled model, tensor by tensor, with the reason for every choice, compares it with
Q4_K_S and Q5_K_M, and measures what the whole file costs per weight.

**After this notebook you will be able to**

* read a mix's plan as a picture: layers × tensor kinds, coloured by format;
* say which tensors Q4_K_M gives more bits, and why (`use_more_bits`);
* tell what the "M" does and does not mean, and check claims about it against the plan;
* compute the average bits per weight of a whole quantized file, and how much smaller it is than F16 and F32.

Words such as *ggml*, *block*, *K-quant*, *GQA* and *KV head* are defined in the
[glossary](../docs/glossary.md).
"""

# %%
import math
import os
import tempfile
from collections import Counter

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from ipywidgets import Dropdown, fixed, interact

import kquant
from kquant import quantize_file
from kquant.gguf import reader, summary
from kquant.model import hub
from kquant import mixes, viz
from kquant.exercises import nb06 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 1. The bundled model

The plan depends only on the tensors' names and shapes and on a few hyper-parameters (the
number of layers, of attention heads). Here they are for the bundled model:
"""

# %%
model = quantize_file.read_model(hub.bundled())
print(model.path.name, "|", model.arch, "|", model.params)
kinds = Counter(c.name.split(".")[2] if c.name.startswith("blk.") else c.name for c in model.tensors)
print(f"{len(model.tensors)} tensors:", dict(kinds))
print("has a separate output.weight:", any(t.name == "output.weight" for t in model.tensors))

# %% [markdown]
"""
## 2. The Q4_K_M plan, as a picture

`kquant.plan_gguf` applies llama.cpp's rules (`llama_tensor_get_type` in `src/llama-quant.cpp`,
transcribed in `kquant.mixes`) and gives each tensor a format and a reason in words:
"""

# %%
plan = kquant.plan_gguf(model.path, "Q4_K_M")
viz.plan_picture({"Q4_K_M": plan}, f"The Q4_K_M plan for {model.path.name}")

# %%
for c in plan:
    if c.type.name == "Q6_K" or c.name.startswith("blk.1.") or c.name == "output_norm.weight":
        print(f"{c.name:<26} {c.type.name:<5} {c.reason}")

# %% [markdown]
"""
The rows not printed are Q4_K ("the Q4_K_M default") or F32 norms. Two kinds of matrix in the layers get
Q6_K, attn_v and ffn_down, in the layers `mixes.use_more_bits(i, n)` picks: the first
eighth, the last eighth, and every third layer in between. For this model and for two
bigger depths:
"""

# %%
for n in [model.params.n_layer, 32, 80]:
    print(f"n = {n:>2} layers: more bits in layers {[i for i in range(n) if mixes.use_more_bits(i, n)]}")

# %% [markdown]
"""
### Exercise 1 (which layers get more bits)

Work out llama.cpp's rule from the lists above, and complete `use_more_bits(i, n)`: True for
exactly the layers `i` (0 to n − 1) of an n-layer model that get more bits, for *any* n. Look
at more depths first: `[i for i in range(20) if mixes.use_more_bits(i, 20)]` shows n = 20,
whose eighths are not whole layers (llama.cpp is C, and C divides integers). Studying
`mixes.use_more_bits` that way is allowed; calling it inside your function is not: the check
runs your rule on depths from 1 to 99 layers.
"""

# %% answer q1
def use_more_bits(i, n):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(use_more_bits)

# %% [markdown]
"""
## 3. What "M" does and does not mean

A common claim (C8) says the S/M/L suffix decides how precision is spread over the layers,
and that "M" keeps the *attention* layers at 5 or 6 bits and squeezes the others. Count the
formats per kind of matrix in the plan:
"""

# %%
per_kind = {}
for c in plan:
    if c.name.startswith("blk."):
        per_kind.setdefault(c.name.split(".")[2], Counter())[c.type.name] += 1
for kind, types in per_kind.items():
    print(f"{kind:<12} {dict(types)}")

# %% [markdown]
"""
Half right. The suffix does choose how bits are spread (Q4_K_S and Q4_K_M share the Q4_K
default and differ only in these bumps), but "M" does not keep attention at 5-6 bits: on this
model, of the four attention matrices only attn_v gets Q6_K, and only in some layers; attn_q,
attn_k and attn_output stay Q4_K everywhere. The other bump is a feed-forward matrix, ffn_down.
The embedding (here tied: it doubles as the output layer, since the model has no output.weight)
gets Q6_K in every mix but Q8_0.

The claim is usually made about 70B models, and there one more rule applies. In
`llama_tensor_get_type` (`src/llama-quant.cpp`), a model llama.cpp classes as 70B
(`LLM_TYPE_70B`: 80 layers, grouped-query attention) has every attn_v that would be Q3_K or Q4_K
raised to Q5_K. The plan of a Llama-2-70B-shaped model (its published shapes, no weights needed):
"""

# %%
def llama_shapes(n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab):
    """The TensorSpecs of a plain llama model: what the rules see (names and shapes only)."""
    hd, F16 = n_embd // n_head, GGMLQuantizationType.F16
    specs = [mixes.TensorSpec("token_embd.weight", (n_vocab, n_embd), F16),
             mixes.TensorSpec("output.weight", (n_vocab, n_embd), F16)]
    for i in range(n_layer):
        for kind, shape in [("attn_q", (n_embd, n_embd)), ("attn_k", (n_head_kv * hd, n_embd)),
                            ("attn_v", (n_head_kv * hd, n_embd)), ("attn_output", (n_embd, n_embd)),
                            ("ffn_gate", (n_ff, n_embd)), ("ffn_up", (n_ff, n_embd)), ("ffn_down", (n_embd, n_ff))]:
            specs.append(mixes.TensorSpec(f"blk.{i}.{kind}.weight", shape, F16))
    return specs


seventy = mixes.ModelParams(n_layer=80, n_head=64, n_head_kv=8)  # Llama-2-70B's config.json
plan_70b = mixes.plan(llama_shapes(80, 8192, 28672, 64, 8, 32000), seventy, "Q4_K_M")
for kind in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_down"]:
    print(f"70B {kind:<12}", dict(Counter(c.type.name for c in plan_70b if f".{kind}." in c.name)))
print(next(c.reason for c in plan_70b if c.name == "blk.1.attn_v.weight"))

# %% [markdown]
"""
On a 70B model, then, attn_v is at 5 or 6 bits in *every* layer: for attn_v the claim holds there,
and still not for attn_q, attn_k or attn_output.

### Exercise 2 (the Q4_K_M type of a matrix)

Complete `q4_k_m_type(kind, i, n)`: the format Q4_K_M gives matrix `kind` (`"attn_q"`,
`"attn_k"`, `"attn_v"`, `"attn_output"`, `"ffn_gate"`, `"ffn_up"`, `"ffn_down"`) of layer
`i` in a plain llama model of `n` layers, as a name such as `"Q4_K"`.
"""

# %% answer q2
def q4_k_m_type(kind, i, n):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(q4_k_m_type)

# %% [markdown]
"""
## 4. Q4_K_S, Q4_K_M, Q5_K_M side by side

Same model, three mixes. The bits per weight come from the plan alone: each tensor's
weights times its format's bytes per weight (`summary.plan_summary`):
"""

# %%
three = {mix: kquant.plan_gguf(model.path, mix) for mix in ["Q4_K_S", "Q4_K_M", "Q5_K_M"]}
viz.plan_picture(three, f"Three mixes for {model.path.name}")
for mix, choices in three.items():
    s = summary.plan_summary(model.path, choices)
    print(f"{mix}: {s.bpw:.4f} bits per weight over {s.n_weights:,} weights;  llama.cpp's own note: {mixes.get_mix(mix).summary}")

# %% [markdown]
"""
The last column is llama-quantize's own one-line description of each mix
(`QUANT_OPTIONS` in llama.cpp's `tools/quantize/quantize.cpp`): the file size and the
perplexity increase measured on Llama-3-8B. Q4_K_S's bumps are Q5_K on a few attn_v and
ffn_down tensors at the start; Q5_K_M is Q4_K_M's recipe one step up (Q5_K default, the
same Q6_K bumps).

### Why these two matrices?

llama.cpp's source gives its reason in words only for the 70B attn_v rule (the comment above it
in `llama_tensor_get_type`): with grouped-query attention several query heads share one KV head,
so attn_v is several times smaller than attn_q and more bits for it cost little. Two things can be
measured here. First, the size: what attn_v's and ffn_down's bumps cost. Second, what the
matrices meet: notebook 10's importance (the mean square of each input column, collected on
calibration text) shows how unevenly each kind's inputs are spread. A matrix whose error is
multiplied by a few very loud input columns is more sensitive to rounding there:
"""

# %%
from kquant import llamacpp
from kquant.model import calibrate, forward

sizes = {t.name: math.prod(t.shape) for t in model.tensors}
for kind in ["attn_q", "attn_v", "ffn_down"]:
    n = next(v for k, v in sizes.items() if f".{kind}." in k)
    print(f"{kind:<9} one layer: {n:,} weights ({n / sizes['blk.0.attn_q.weight']:.2f}× attn_q)")
if llamacpp.needed("how unevenly each kind of matrix's inputs are spread (the text is cut by llama.cpp's tokenizer)"):
    im = calibrate.collect(forward.Llama.load(model.path), calibrate.calibration_text(), n_chunks=2)
    loud = {}
    for name, v in im.vectors().items():
        v = np.sort(np.asarray(v))[::-1]
        loud.setdefault(name.split(".")[2], []).append(v[: len(v) // 10].sum() / v.sum())
    for kind, shares in loud.items():
        print(f"{kind:<12} the loudest 10 % of input columns hold {min(shares):.0%}–{max(shares):.0%} of the importance")

# %% [markdown]
"""
What this shows, on this model: ffn_down's inputs (the SwiGLU product) are far more uneven than
any other matrix's, so its rounding error lands on a few loud columns; that fits giving it more
bits. attn_v's inputs are exactly attn_q's and attn_k's (the same normalised hidden state), so
importance does not single it out; its case is the size argument (here half of attn_q, on 70B an
eighth). What it does not show: that these bumps are the best use of the bits. That would take the
whole-model comparison of notebooks 08 and 10, mix against mix at equal size.

### Try it: every mix

Pick any of llama.cpp's mixes. The title gives the whole file's average bits per weight.
"""

# %%
interact(viz.mix_view, tensors=fixed(model.tensors), params=fixed(model.params),
         mix=Dropdown(options=list(mixes.MIXES), value="Q4_K_M", description="mix"));

# %% [markdown]
"""
## 5. The real file: bits per weight and size

A common claim (C13) says "Q4" means 4 bits per weight; another (C3) that Q4_K_M makes a
model 70-75 % smaller than the original. We write the Q4_K_M file with kquant (the same
bytes llama-quantize writes; notebook 07 checks that) and measure:
"""

# %%
out = tempfile.mkdtemp()
q4km = kquant.quantize_gguf(model.path, os.path.join(out, "tiny-Q4_K_M.gguf"), "Q4_K_M", progress=False)
f16_bytes, q4km_bytes = os.path.getsize(model.path), os.path.getsize(q4km.path)
f32_data = 4 * q4km.n_weights  # every weight as float32
print(f"Q4_K block format: {kquant.get_format('Q4_K').bits_per_weight} bits per weight")
print(f"Q4_K_M file, tensor data: {q4km.bpw:.4f} bits per weight ({q4km.nbytes:,} bytes for {q4km.n_weights:,} weights)")
print(f"file sizes: F16 {f16_bytes:,} bytes, Q4_K_M {q4km_bytes:,} bytes (metadata and padding included)")
print(f"smaller than F16 by {1 - q4km_bytes / f16_bytes:.1%};  smaller than F32 (tensor data) by {1 - q4km.nbytes / f32_data:.1%}")

# %% [markdown]
"""
So "Q4" is not 4 bits: the block format alone is 4.5 (its scales), and the file averages
more, because of the Q6_K bumps and the F32 norms. The embedding (Q6_K) is one of them:
"""

# %%
by_type = Counter()
for r in q4km.rows:
    by_type[r.type.name] += r.n_weights
print({t: f"{n / q4km.n_weights:.1%} of the weights" for t, n in by_type.items()})
embd = next(r for r in q4km.rows if r.name == "token_embd.weight")
print(f"token_embd alone: {embd.n_weights / q4km.n_weights:.1%} of the weights, in {embd.type.name}")

# %% [markdown]
"""
On Llama-3.1-8B the embedding's share is *larger*: its vocabulary has 128,256 tokens of 4,096
values, and its output matrix is a second, untied copy of that size (shapes from its
`config.json`). The published figure for its Q4_K_M file is 4.8944 bits per weight, against
16.0005 for F16 (llama.cpp's `tools/quantize/README.md`, in the copy vendored by
llama-cpp-python 0.3.36):
"""

# %%
embd_8b = 128256 * 4096 / 8.03e9  # Llama-3.1-8B: 8.03 B parameters
print(f"Llama-3.1-8B: token_embd {embd_8b:.1%} of the weights, with the untied output {2 * embd_8b:.1%}"
      f" (bundled model: {embd.n_weights / q4km.n_weights:.1%})")
published = {"Q4_K_M": 4.8944, "F16": 16.0005}  # Llama-3.1-8B, llama.cpp tools/quantize/README.md
print(f"Llama-3.1-8B Q4_K_M: {1 - published['Q4_K_M'] / published['F16']:.1%} smaller than F16, {1 - published['Q4_K_M'] / 32:.1%} smaller than F32")

# %%
for name, smaller in [("bundled model", 1 - q4km_bytes / f16_bytes), ("Llama-3.1-8B", 1 - published["Q4_K_M"] / published["F16"])]:
    print(f"{name}: {smaller:.1%} smaller than F16:", "inside" if 0.70 <= smaller <= 0.75 else "outside", "the claimed 70-75 %")

# %% [markdown]
"""
So C3 is half-true (notebook 09 gives the same verdict): against F16 both files come out just under
the claimed range, about 70 % (the lines above), and against F32 it is too modest.

### Exercise 3 (the average bits per weight of a file)

Complete `average_bpw(rows)`: `rows` is a list of `(shape, type_name)` pairs, one per tensor
(for example `((256, 768), "Q6_K")`); return the file's average bits per weight, the number
`summary.FileSummary.bpw` reports for a whole file. Think about what "average" must mean for
a file whose tensors have very different sizes.
`GGML_QUANT_SIZES[GGMLQuantizationType[t]]` is `(weights per block, bytes per block)`.
"""

# %% answer q3
def average_bpw(rows):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(average_bpw)

# %% [markdown]
"""
## Summary

* A mix such as Q4_K_M is a per-tensor plan: a default block format (Q4_K) and rules that
  give some tensors more bits. For a plain llama model: Q6_K for the output / tied embedding,
  and for attn_v and ffn_down in the layers `use_more_bits` picks.
* "M" is not "attention at 5-6 bits": attn_q, attn_k and attn_output stay Q4_K; attn_v gets 5-6
  bits in every layer only on 70B-class models (llama.cpp's `LLM_TYPE_70B` rule).
* ffn_down's inputs are the most uneven of all (measured importance); attn_v's bump is cheap
  because grouped-query attention makes it small.
* A Q4_K_M file costs more than 4.5 bits per weight on average; section 5 measured the
  bundled model's file and its size against F16 and F32.
"""
