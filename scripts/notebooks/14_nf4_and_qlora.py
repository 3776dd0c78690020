# %% [markdown]
"""
# 14 · NF4 and QLoRA: fine-tuning a 4-bit model without blowing it up

QLoRA (Dettmers et al. 2023) fine-tunes a model whose weights are stored in **NF4**, a 4-bit
format built for weights that look normally distributed, by training small **LoRA** adapters
(Hu et al. 2021) next to the frozen 4-bit matrices. This notebook does both on the bundled model:
it takes NF4 apart (bitsandbytes' own bytes, through `kquant.formats.nf4`), then teaches the
model eight facts it has never seen with rank-8 adapters trained in numpy, measures what it
forgets, and writes the result as a Q4_K_M file that llama.cpp runs.

**After this notebook you will be able to**

* derive NF4's 16 levels from normal quantiles, and say why they are not evenly spaced;
* count NF4's bits per weight with and without double quantization of its scales (4.127 vs 4.5);
* compare NF4's error with Q4_0's and Q4_K's on the model's weights, at their bits per weight;
* say why llama.cpp cannot run an NF4 file, and what running it there costs;
* write LoRA's forward pass, the gradient of its B matrix, and the merge `W + (α/r)·B A`;
* measure fine-tuning honestly: what the model learned, what it forgot, and what replaying a
  few old examples saves.

Words such as *NF4*, *double quantization*, *LoRA*, *bits per weight*, *re-quantization* and *95 % interval*
are defined in the [glossary](../docs/glossary.md).
"""

# %%
import numpy as np
from gguf import GGMLQuantizationType
from ipywidgets import Dropdown, fixed, interact

import kquant
from kquant import llamacpp, viz
from kquant.exercises import nb14 as ex
from kquant.formats import nf4
from kquant.gguf import reader
from kquant.gguf.summary import sha256
from kquant.llamacpp import Tokenizer
from kquant.methods import lora
from kquant.model import cache, corpus, evaluate, forward, hub, runner
from kquant.model.scores import paired_difference
from kquant.viz import qlora as qviz

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook tokenizes its facts with llama.cpp's tokenizer and runs the fine-tuned files in llama.cpp");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. Sixteen levels from the normal distribution

A 4-bit code has 16 values. Q4_0 spreads them evenly, in steps of absmax/8 from `-absmax` to
`+7/8·absmax` (or the mirror image: the block's extreme always lands on the end level).
But trained weights are not spread evenly: most sit near zero, few near the block's largest one.
NF4 ("4-bit NormalFloat") puts its levels where a **standard normal** puts equal amounts of
probability: the levels are normal quantiles, scaled so that the outermost is ±1. bitsandbytes
builds them with `create_normal_map(offset=0.9677)`: 8 quantiles for the positive side, 7 for the
negative side, and an exact 0 (so zero weights stay zero), which is why the table is lopsided.
`nf4.normal_levels()` recomputes that table; it equals the table bitsandbytes ships:
"""

# %%
levels = nf4.normal_levels()
print("NF4 levels:", [round(float(v), 4) for v in nf4.NF4_LEVELS])
print("normal_levels() == bitsandbytes' table:", bool(np.array_equal(levels, nf4.NF4_LEVELS)))
print(f"{int((nf4.NF4_LEVELS > 0).sum())} levels above 0, {int((nf4.NF4_LEVELS < 0).sum())} below, and 0 itself")
q4_0_grid = np.arange(-8, 8) / 8  # Q4_0: q·d with d = (the signed extreme) / -8, as a fraction of absmax
qviz.levels_plot({"NF4": nf4.NF4_LEVELS, "uniform 16": qviz.UNIFORM_LEVELS, "Q4_0 (q/8)": q4_0_grid})

# %% [markdown]
"""
## 2. Blocks of 64 with one absmax each

NF4 cuts the weights (row after row, flat) into blocks of 64, divides each block by its largest
absolute value (its **absmax**), and codes every weight as the level nearest to the result.
Below, the weights of one matrix of the bundled model, divided by their block's absmax, with the
levels on top. Switch to the uniform grid: the same blocks and bits, a larger error, because
the levels out in the tails serve few weights. The spikes at ±1 are one weight per
block: the absmax itself.
"""

# %%
f16 = forward.Llama.load(hub.bundled())
NAME = "blk.3.ffn_up.weight"
W = f16.weights[NAME]
interact(
    qviz.nf4_view,
    w=fixed(W),
    name=fixed(NAME),
    blocksize=Dropdown(options=[64, 128, 256], value=64),
    grid=Dropdown(options=["NF4", "uniform"], value="NF4"),
);

# %%
t = nf4.quantize_nf4(W, blocksize=64, double_quant=False)
first = W.ravel()[:64]
print(f"block 0: absmax {t.absmax[0]:.5f} (= max |w| {np.abs(first).max():.5f})")
print("codes  :", t.codes[:16].tolist(), "…")
print("decoded:", [round(float(v), 5) for v in nf4.dequantize_nf4(t).ravel()[:6]], "…")
print("weights:", [round(float(v), 5) for v in first[:6]], "…")

# %% [markdown]
"""
## 3. Double quantization: 4.127 bits, not 4.5

Each block of 64 four-bit codes carries a float32 absmax: 32 bits for 64 weights, half a bit per
weight on top of the 4. QLoRA's **double quantization** stores those absmaxes themselves in 8 bits:
their mean is subtracted, and each run of 256 absmaxes is coded with bitsandbytes' 8-bit dynamic
map against one float32 of its own. Per weight: `4 + 8/64 + 32/(64·256)`, plus one float32
offset per tensor.
"""

# %%
t_dq = nf4.quantize_nf4(W)  # double_quant=True is QLoRA's default
print(f"{NAME}: {W.size:,} weights")
print(f"NF4, float32 absmax     : {nf4.bits_per_weight(t):.4f} bits per weight")
print(f"NF4, double-quantized   : {nf4.bits_per_weight(t_dq):.4f} bits per weight")
rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
print(f"relative RMS error: {rel(nf4.dequantize_nf4(t), W):.5f} → {rel(nf4.dequantize_nf4(t_dq), W):.5f} with the scales in 8 bits")

# %% [markdown]
"""
### Exercise 1 (NF4's bits per weight)

Complete `nf4_bits_per_weight(blocksize, blocksize2)`: 4-bit codes, one 8-bit scale code per block
of `blocksize` weights, and one float32 per group of `blocksize2` block scales (leave out the one
offset per tensor).
"""

# %% answer q1
def nf4_bits_per_weight(blocksize, blocksize2):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(nf4_bits_per_weight)

# %% [markdown]
"""
## 4. NF4 against llama.cpp's 4-bit formats, on the model's weights

The same matrices (every weight matrix of the 8 blocks) through NF4, Q4_0 and Q4_K, each at its
own bits per weight. The error is relative: `‖Ŵ − W‖ / ‖W‖` over all of them.
"""

# %%
mats = {n: w for n, w in f16.weights.items() if n.startswith("blk.") and w.ndim == 2}
total = sum(np.sum(w.astype(np.float64) ** 2) for w in mats.values())
n_weights = sum(w.size for w in mats.values())


def sq_error(decode):
    """Summed squared error of every matrix through ``decode`` (a round trip)."""
    return sum(np.sum((decode(n, w) - w).astype(np.float64) ** 2) for n, w in mats.items())


def error_table():
    rows = {}
    for bs in (64, 32):
        coded = {n: nf4.quantize_nf4(w, bs) for n, w in mats.items()}
        bpw = sum(nf4.bits_per_weight(t) * t.size for t in coded.values()) / n_weights
        rows[f"NF4, blocks of {bs}"] = (bpw, sq_error(lambda n, w: nf4.dequantize_nf4(coded[n])))
    # NF4's recipe with 16 evenly spaced levels instead (QLoRA's "Int4"), float32 absmax per 64: 4.5 bits
    rows["evenly spaced, blocks of 64"] = (4 + 32 / 64, sq_error(lambda n, w: qviz.uniform_roundtrip(w, 64)))
    for qtype in ["Q4_0", "Q4_K"]:
        err = sq_error(lambda n, w: kquant.dequantize(kquant.quantize(w, qtype), qtype))
        rows[qtype] = (kquant.get_format(qtype).bits_per_weight, err)
    return {k: np.array(v) for k, v in rows.items()}


rows = cache.arrays("nf4-vs-ggml-errors", error_table, src=sha256(hub.bundled()))  # computed once, then kept
print(f"{'format':<30}{'bits/weight':>12}{'rel. RMS error':>16}")
for label, (bpw, err) in rows.items():
    print(f"{label:<30}{bpw:>12.3f}{np.sqrt(err / total):>16.4f}")

# %% [markdown]
"""
What the table says. With the same blocks of 64, NF4's levels beat 16 evenly spaced ones: that is
the comparison QLoRA made, and it holds on these weights too. But NF4 does **not** beat llama.cpp's
4-bit formats here. Part of Q4_0's lead is its smaller blocks: 32 weights share a scale, against
NF4's 64, and NF4 with blocks of 32 closes most of the gap. The rest is what the levels assume.
NF4's levels are the quantiles of a normal distribution, "information-theoretically optimal" in the
QLoRA paper's sense that each level is used equally often by normally distributed weights; that is
not the same as the least squared error. Q4_K, with 6-bit sub-block scales and minimums searched
for the least error, is lower still.

## 5. Why llama.cpp cannot run NF4

ggml, llama.cpp's tensor library, knows a fixed list of types, and every one has its own kernels.
NF4 is not among them:
"""

# %%
print("an NF4 type in ggml:", [t.name for t in GGMLQuantizationType if "NF4" in t.name] or "none")
print("ggml's 4-bit types:", [t.name for t in GGMLQuantizationType if t.name.startswith(("Q4", "IQ4"))])

# %% [markdown]
"""
So an NF4 model reaches llama.cpp only **dequantized**: its values written as F16 (16 bits a weight,
about four times the 4.127 bits it had in memory for training), and then, if you want a small file, quantized
again with one of ggml's own types. That is what the rest of this notebook does with the
fine-tuned model. Here is the NF4 base model itself, every block matrix through NF4 and back, as an
F16 file in llama.cpp (NF4's values, here float32, rounded to F16 on the way), beside the bundled F16 model:
"""

# %%
nf4_model = lora.nf4_base(f16)
key = lora.weights_digest(nf4_model)  # the cache key of everything computed from the NF4 model
f16_of_nf4 = lora.nf4_file(hub.bundled())  # every block matrix through NF4 and back, as the F16 file type
held_out = evaluate.held_out_tasks(200)
kinds = np.array([t.kind for t in held_out])


def llama_cpp_counts(path):
    """Right answers in llama.cpp: the 8 new facts, the 128 old ones, 200 held-out sums (kept in the cache)."""

    def count():
        m = runner.load(path, n_ctx=256)
        new, old = evaluate.task_results(m, lora.fact_tasks()), evaluate.task_results(m, held_out)
        m.close()
        return {"counts": np.array([new["facts"].sum(), old["facts"].sum(), old["sums"].sum()])}

    return tuple(int(c) for c in cache.arrays("lora-counts", count, file=sha256(path), n_sums=200)["counts"])


for label, path in [("F16 (the bundled model)", hub.bundled()), ("NF4 → F16", f16_of_nf4)]:
    n, f, s = llama_cpp_counts(path)
    print(f"{label:<24} {path.stat().st_size / 1e6:5.1f} MB   old facts {f}/128, sums {s}/200")

# %% [markdown]
"""
## 6. LoRA: two thin matrices beside a frozen one

LoRA keeps a weight matrix `W` (n_out × n_in) frozen and learns a correction of rank r:

`y = W x + (α/r) · B A x`, with `A` (r × n_in) random and `B` (n_out × r) zero at the start.

`B = 0` makes the adapted model start exactly as the base model; `α/r` keeps the size of the
first updates alike whatever r is. In QLoRA, `W` is stored in NF4 and dequantized for each
product; only A and B get gradients and optimiser state. `kquant.methods.lora` draws
`A ~ Normal(0, 1/n_in)` (the paper's "random Gaussian"; HF peft's default is a uniform
distribution with standard deviation `1/√(3·n_in)`).

**Which matrices.** QLoRA adapts every linear layer. Here only the **last block's FFN**
(`ffn_gate`, `ffn_up`, `ffn_down` of block 7) is adapted: everything before it is frozen and
does not depend on the adapters, so it runs once per text, and the backward pass goes from the
logits through the output norm and one SwiGLU, and stops at the adapters. It is written by hand
in `lora.loss_and_grads` (tests/test_lora.py checks it against finite differences); the
optimiser is Adam, also in numpy.
"""

# %%
fresh = lora.init(nf4_model, rank=8, alpha=16)
print(f"adapted: {[fresh.name(t) for t in fresh.targets]}, rank {fresh.rank}, α {fresh.alpha:g}, scale α/r = {fresh.scale:g}")
full = sum(nf4_model.weights[fresh.name(t)].size for t in fresh.targets)
print(f"trainable numbers: {fresh.n_params():,}, against {full:,} in the three matrices ({fresh.n_params() / full:.1%})")

# %% [markdown]
"""
### Exercise 2 (the gradient of B)

For `y = scale · (x Aᵀ) Bᵀ` (one row of `x` per token), complete `grad_B(x, A, dy, scale)`:
given `dy`, the loss's gradient with respect to `y` (same shape as `y`), return the loss's
gradient with respect to `B`. `lora.loss_and_grads` uses the same line.
"""

# %% answer q2
def grad_B(x, A, dy, scale):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(grad_B)

# %% [markdown]
"""
## 7. Eight new facts

The model learned 128 made-up facts in documents like this one (`kquant.model.corpus`): a country,
its capital, its animal, stated and then asked about. `lora.NEW_FACTS` holds eight more, with names
made of the same syllables, which the model has never seen; `lora.training_documents` writes
documents about them in the corpus's own phrasing:
"""

# %%
print(corpus.facts_document(np.random.default_rng(5)))
print("---")
print(lora.training_documents(1)[0])

# %% [markdown]
"""
Texts are tokenized with the model's own tokenizer (llama.cpp's). The frozen part of the model runs
once over every text (`lora.frozen`, kept in kquant's cache); then two runs of 120 Adam steps on 512
positions each: one on 48 documents about the new facts only, one with 64 of the model's own
training documents (stories, sums, old facts) mixed in: **replay**.
"""

# %%
tok = Tokenizer(hub.bundled())
enc = lambda s: tok.tokenize(s, add_special=False, parse_special=True)  # noqa: E731
new_set, old_set = lora.task_set(enc, lora.fact_tasks()), lora.task_set(enc, held_out)
fz_new = lora.frozen(nf4_model, new_set.sequences, model_key=key)
fz_old = lora.frozen(nf4_model, old_set.sequences, model_key=key)
runs = {}
for label, n_replay in [("new facts only", 0), ("with replay", 64)]:
    seqs = [enc(corpus.BOS + d + corpus.EOS) for d in lora.training_documents(48, n_replay)]
    runs[label] = lora.teach(nf4_model, seqs, model_key=key, rank=8, alpha=16, steps=120)
    print(f"{label:<15} {len(seqs)} documents, {sum(map(len, seqs)):,} tokens; loss {runs[label][1][0]:.2f} → {runs[label][1][-10:].mean():.3f}")
qviz.loss_curves({k: v[1] for k, v in runs.items()}, "rank-8 LoRA on the NF4 model's last FFN")

# %%
results = {"NF4 base": (lora.task_results(nf4_model, None, new_set, fz_new), lora.task_results(nf4_model, None, old_set, fz_old))}
for label, (adapters, _) in runs.items():
    results[label] = (lora.task_results(nf4_model, adapters, new_set, fz_new), lora.task_results(nf4_model, adapters, old_set, fz_old))
print(f"{'model (numpy, NF4 base)':<24}{'new facts':>10}{'old facts':>11}{'sums':>9}")
for label, (rn, ro) in results.items():
    counts = [f"{rn.sum()}/8", f"{ro[kinds == 'facts'].sum()}/128", f"{ro[kinds == 'sums'].sum()}/200"]
    print(f"{label:<24}{counts[0]:>10}{counts[1]:>11}{counts[2]:>9}")
for kind, n in [("facts", 128), ("sums", 200)]:
    for a, b in [("new facts only", "NF4 base"), ("with replay", "NF4 base"), ("with replay", "new facts only")]:
        d = paired_difference(results[a][1][kinds == kind], results[b][1][kinds == kind])
        print(f"{kind:<5} {a} − {b}: {evaluate.verdict(d, 'the difference in accuracy')}")

# %% [markdown]
"""
Read the table from the top. The base model knew none of the new facts and all the old ones.
Trained on the new facts alone, it learned all eight and **forgot most of the old facts**: the
adapters are free to move the last layer's answer to "What is the capital of …?" toward the eight
new capitals, and nothing in the training text tells them to leave the other 128 alone. Replay puts
that back in the text: the same eight facts are learned, and most old ones survive, though not
all (the paired intervals above say by how much, and that it is more than the noise of 128
questions). The held-out sums moved too, up with replay, whose documents include training sums;
the intervals above say whether that is more than noise. With 8 questions, "8/8" has no useful
interval; it is a count.

## 8. Merging, and the file llama.cpp runs

The adapters can be folded into the weights: `W' = W + (α/r)·B A` computes the same thing as the
adapted layer, with no adapter left. Which `W`? The adapters were trained beside `W_NF4`, so
`W_NF4 + (α/r)·B A` is exactly the model measured above. The other choice merges into the
**16-bit** weights, `W_F16 + (α/r)·B A`: the route of exporting a merged 16-bit model and then
converting it to GGUF, which fine-tuning tools offer. Both are then quantized once more, to Q4_K_M,
for llama.cpp. Merging into F16 leaves every matrix that was not adapted exactly as in the plain
Q4_K_M file (one rounding, F16 → Q4_K); merging into NF4 rounds every matrix twice (F16 → NF4 →
Q4_K). kquant's export is Unsloth's; the other is written too, to measure the difference.
"""

# %% [markdown]
"""
### Exercise 3 (the merge)

Complete `merge(W, A, B, alpha, r)`: the matrix that computes what the adapted layer computed.
"""

# %% answer q3
def merge(W, A, B, alpha, r):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(merge)

# %%
adapters = runs["with replay"][0]
nf4_blocks = lora.nf4_weights(f16)
files = {"Q4_K_M, no fine-tuning": cache.quantized(hub.bundled(), "Q4_K_M")}
for label, base in [("merged into F16", f16.weights), ("merged into NF4", {**f16.weights, **nf4_blocks})]:
    merged = lora.merge(base, adapters)
    weights = merged if label == "merged into F16" else {**nf4_blocks, **merged}
    files[f"Q4_K_M, {label}"] = cache.made(
        "lora-merged",
        lambda p, w=weights: kquant.quantize_gguf(hub.bundled(), p, "Q4_K_M", weights=w, overwrite=True, progress=False),
        "tiny-lora-Q4_K_M.gguf",
        src=sha256(hub.bundled()),
        nf4=key,
        adapters=adapters.digest(),
        base=label,
    )
print(f"{'file (llama.cpp)':<34}{'MB':>6}{'new facts':>11}{'old facts':>11}{'sums':>9}")
for label, path in files.items():
    n, f, s = llama_cpp_counts(path)
    print(f"{label:<34}{path.stat().st_size / 1e6:>6.2f}{f'{n}/8':>11}{f'{f}/128':>11}{f'{s}/200':>9}")
with reader.open_gguf(files["Q4_K_M, no fine-tuning"]) as a, reader.open_gguf(files["Q4_K_M, merged into F16"]) as b:
    differ = [x.name for x, y in zip(a.tensors, b.tensors) if bytes(x.data) != bytes(y.data)]
    print(f"merged into F16: {len(a.tensors) - len(differ)} of {len(a.tensors)} tensors are byte for byte the plain "
          f"Q4_K_M's; the others: {differ}")

# %% [markdown]
"""
The fine-tuned model survives the trip: NF4 for training, adapters merged, Q4_K_M for llama.cpp,
and the new facts are still answered there, the counts above say how many of the eight. The two
merges differ by at most a question or two on 8 new facts and 128 old ones, too few to tell them
apart; the argument for merging into F16 is the one above (no second rounding of the matrices that
were not trained), not a measured difference.
"""

# %% [markdown]
"""
## Summary

* NF4's 16 levels are normal quantiles (with an exact zero), so they are dense where weights are
  dense; each block of 64 has one absmax, and double quantization stores those absmaxes in 8 bits:
  4.127 bits per weight instead of 4.5.
* On the bundled model's weights NF4 beats evenly spaced levels with the same blocks, as the paper
  found, but not Q4_0 (blocks of 32) nor Q4_K (section 4).
* llama.cpp has no NF4 type: an NF4 model runs there only dequantized to F16, or re-quantized.
* LoRA trains two thin matrices per adapted weight, `y = W x + (α/r)·B A x`, B starting at 0; the
  backward pass for the last block's FFN is a few lines, checked against finite differences.
* Rank-8 adapters taught the model eight new facts; without replay it forgot most old ones, with
  64 replayed documents it kept most; merged and quantized to Q4_K_M, llama.cpp answers them too.
"""
