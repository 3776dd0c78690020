# %% [markdown]
"""
# 15 · I-quants: a 16-value lookup table

Every ggml format so far put its levels on an **even grid**: Q4_0's weights are `d · (q − 8)`, sixteen
steps of equal size. But weights are not spread evenly: most sit near zero, a few are large. The
**i-quants** of llama.cpp spend their levels where the weights are. (NF4, notebook 14, did the same with a normal distribution's
quantiles; the 1- to 3-bit i-quants pick whole groups of values from larger code books, notebook 09.)
The simplest is **IQ4_NL**
("non-linear"): Q4_0's block exactly (32 weights, one fp16 scale, 4-bit indices: 4.5 bits per
weight), but an index picks one of 16 *uneven* values from a table, `kvalues_iq4nl`.

Notebook 09 measured ggml's IQ4_NL between Q4_0 and Q4_K at the same 4.5 bits. Here you build it:
kquant's `formats/iq4_nl.py` is IQ4_NL in numpy, byte for byte what ggml writes, with and
without an importance matrix.

**After this notebook you will be able to**

* say why the table's values are closer together near zero, and measure what that buys against an even grid;
* find a weight's table value exactly as ggml does, ties included, and decode an IQ4_NL block by hand;
* follow IQ4_NL's scale search candidate by candidate, with and without importance, and fit its scale;
* measure the i-quant claim at equal size: weight error against Q4_0 and Q4_K, whole-file KL in
  llama.cpp with paired intervals, and how fast the table decodes.

Words such as *block*, *scale*, *imatrix*, *KL* and *95 % interval* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import os
import time

import gguf
import numpy as np
from ipywidgets import IntSlider, fixed, interact

import kquant
from kquant import imatrix, llamacpp, reference, viz
from kquant.formats import iq4_nl
from kquant.gguf import summary
from kquant.lessons import metrics
from kquant.model import cache, calibrate, evaluate, forward, hub
from kquant.exercises import nb15 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook compares IQ4_NL with ggml's own encoder and runs the IQ4_NL files in llama.cpp");  # without llama.cpp: one line, the rest skipped
TABLE = ex.TABLE  # kvalues_iq4nl from ggml-common.h, as int64

# %% [markdown]
"""
## 1. The table

Here are the 16 values and their gaps:
"""

# %%
print("kvalues_iq4nl:", TABLE.tolist())
print("gaps:         ", np.diff(TABLE).tolist())
print("gguf-py's copy is the same:", list(gguf.quants.IQ4_NL.kvalues) == TABLE.tolist())

# %% [markdown]
"""
The gaps are 11 to 13 in the middle and 20 to 24 at the ends, and the table is not symmetric: it
reaches −127 on one side and only 113 on the other. Why that shape? Take every block of 32 weights
of the bundled model and divide it by its largest weight (with its sign), so that weight lands on +1.
Q4_0 puts that weight on its level −8 (`d = max / −8`), and its 16 levels become the even steps
1, 7/8, …, −7/8. IQ4_NL's search usually puts it on −127, the long end (section 4 counts how often), so
its levels in the same units are the table divided by −127:
"""

# %%
f16 = forward.Llama.load(hub.bundled())
mats = {n: w for n, w in f16.weights.items() if w.ndim == 2 and w.shape[-1] % 32 == 0}
blocks = np.concatenate([w.reshape(-1, 32) for w in mats.values()]).astype(np.float32)
at = np.abs(blocks).argmax(axis=1)
big = blocks[np.arange(len(blocks)), at]
others = np.ones(blocks.shape, bool)
others[np.arange(len(blocks)), at] = False  # the largest weight itself lands on +1 in both: left out
u = (blocks / np.where(big != 0, big, 1)[:, None])[others & (big != 0)[:, None]]
levels = {"IQ4_NL": TABLE / -127.0, "Q4_0": (8 - np.arange(16)) / 8.0}
viz.table_plot(u, levels)
near = np.abs(u) < 0.25
print(f"{len(mats)} matrices, {len(blocks):,} blocks: {near.mean():.0%} of the weights lie within ±0.25 of 0"
      f" (a quarter of the range [-1, 1]: an even spread would put 25 % there)")
for name, v in levels.items():
    print(f"{name:<7} levels within ±0.25: {int((np.abs(v) < 0.25).sum())} of 16")

# %% [markdown]
"""
The weights crowd the middle, and IQ4_NL has more levels there. What does that buy, before any
search? Round every normalised weight to the nearest level of each set and compare the mean squared
rounding error:
"""

# %%
def rounding_mse(u, v):
    v = np.sort(v)
    mid = (v[:-1] + v[1:]) / 2
    return float(np.mean((u - v[np.searchsorted(mid, u)]) ** 2))


mse = {name: rounding_mse(u, v) for name, v in levels.items()}
for name, m in mse.items():
    print(f"{name:<7} mean squared rounding error {m:.3e} (in units of the block max²)")
print(f"IQ4_NL's table rounds these weights with {1 - mse['IQ4_NL'] / mse['Q4_0']:.0%} less squared error than the even grid")

# %% [markdown]
"""
That is the whole idea of a non-linear code: the same 16 levels, placed by the distribution.
(The values are fixed in ggml's `ggml-common.h`, the same for every model; the measurement above is
on the bundled model's weights.)

## 2. The nearest value

Rounding on an even grid is `round(x / d)`. With a table there is no formula: ggml's
`best_index_int8` bisects the sorted table to the two values around `x`, then keeps the lower one
**only if it is strictly closer**: `x − lower < upper − x`. A tie goes to the upper value.

### Exercise 1 (the nearest table value)

Complete `nearest_index(v)`: the index (0..15) in `TABLE` of the value nearest `v`, as ggml picks
it: a tie goes up, and beyond the ends the end. (Halfway between 1 and 13 is 7: index 9.)
"""

# %% answer q1
def nearest_index(v):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(nearest_index)

# %% [markdown]
"""
kquant's `iq4_nl.best_index` gets the same answer without a bisection: the ties fall exactly on the
midpoints between table values, which are all multiples of ½, so `floor(2x)` indexes a small table of
answers. A test checks it against a literal transcription of the C on every midpoint's neighbours.

## 3. A block, byte by byte

IQ4_NL's block is Q4_0's: the fp16 scale `d`, then 16 bytes, byte j holding the index of weight j in
its low nibble and of weight j + 16 in its high nibble. Only the decoding differs: a weight is
`d · TABLE[index]`. The first block of `blk.4.ffn_down.weight`:
"""

# %%
NAME = "blk.4.ffn_down.weight"
W = mats[NAME]
q = kquant.quantize(W, "IQ4_NL")
block = q[0, :18]
fields = iq4_nl.unpack(block[None, :])
print("bytes:", block.tobytes().hex(" "))
print(f"d = {float(fields.d[0]):.6g} (fp16 {block[:2].tobytes().hex()}), indices: {fields.q[0].tolist()}")
print("same bytes as ggml (ggml_quantize_chunk) for the whole matrix:", np.array_equal(q, reference.quantize(W, "IQ4_NL")))

# %% [markdown]
"""
### Exercise 2 (decode a block)

Complete `decode_iq4_nl(block)`: `block` is 18 bytes; return its 32 weights as float32, exactly
as llama.cpp's `dequantize_row_iq4_nl` computes them (`d` widened to float32, times the table value).
"""

# %% answer q2
def decode_iq4_nl(block):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(decode_iq4_nl)

# %% [markdown]
"""
## 4. Choosing d

Given a scale `d`, each weight takes the table value nearest `x / d`. But which `d`? ggml's
`quantize_row_iq4_nl_impl` tries 16 candidates per block, and for each candidate:

1. maps the weights with `1/d` and takes each one's nearest table value `q` (section 2);
2. fits `d` to those values by weighted least squares: `d = Σ w q x / Σ w q²`;
3. scores it by `Σ w q x · d = (Σ w q x)² / Σ w q²`, how much of the weighted signal it explains
   (the larger, the smaller the weighted error `Σ w (x − d q)²`).

The first candidate is `1/d = 127 / max`, which sends the largest weight `max` to +127 (beyond 113,
so it is clamped). The other 15 are `1/d = (itry − 127) / max`, itry = −7..7: they send `max` to
−134 … −120, around the table's **long end**. Their d has the sign opposite to `max`. The candidate
that scores highest wins (a later one only if strictly higher). The weights `w` are `x²` without an
importance matrix: large weights count more.

Move the slider through the candidates of the first block of `blk.4.ffn_down.weight` whose winner
is not the first candidate:
"""

# %%
B = next(b for b in range(W.shape[1] // 32) if iq4_nl.search_steps(W[0, 32 * b : 32 * b + 32], W[0, 32 * b : 32 * b + 32] ** 2).chosen)
x = W[0, 32 * B : 32 * B + 32].astype(np.float32)
steps = iq4_nl.search_steps(x, x * x)
interact(viz.search_view, x=fixed(x), w=fixed(x * x), steps=fixed(steps),
         k=IntSlider(min=0, max=15, value=0, description="candidate"), table=fixed(TABLE));

# %%
print(f"{'candidate':<10}{'1/d':>10}{'d':>12}{'score':>12}")
for k in range(16):
    mark = "  ← chosen" if k == steps.chosen else ""
    print(f"{k:<10}{steps.inv_d[k]:>10.1f}{steps.d[k]:>12.4g}{steps.score[k]:>12.4e}{mark}")
stored = float(iq4_nl.unpack(q[0:1, 18 * B : 18 * B + 18]).d[0])
print(f"block {B}: stored d = fp16({steps.d[steps.chosen]:.6g}) = {float(np.float16(steps.d[steps.chosen])):.6g};"
      f" the block's bytes (kquant's = ggml's) say {stored:.6g}")

# %% [markdown]
"""
After the winner, the indices are chosen once more with `1/d` of the winner's d (the float32 one,
before it is rounded to fp16), and d is stored as fp16.

### Exercise 3 (the least-squares scale)

Complete `fit_scale(x, w, q)`: the 32 weights `x`, their importances `w` and the table values `q`
they were mapped to; return the `d` that minimises `Σ w (x − d q)²`, and 0 when `Σ w q²` is 0
(ggml's rule when no weight counts).
"""

# %% answer q3
def fit_scale(x, w, q):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(fit_scale)

# %% [markdown]
"""
How often does the search pick the long end, and how far does it move from the first guess? Over
every block of the model:
"""

# %%
q_plain = {name: kquant.quantize(w, "IQ4_NL") for name, w in mats.items()}  # every matrix, kept for sections 5-7
fields_all = iq4_nl.unpack(np.concatenate([b.reshape(-1, 18) for b in q_plain.values()]))
d_all = fields_all.d.astype(np.float32)
long_end = float(np.mean((d_all * big < 0)[big != 0]))
print(f"{long_end:.0%} of the {len(d_all):,} blocks store a d whose sign is opposite to their largest weight's:"
      " that weight uses the long end, −127")
ratio = np.abs(d_all[big != 0]) / (np.abs(big[big != 0]) / 127)
print(f"|d| over the first guess |max|/127: median {np.median(ratio):.3f}, 5-95 % {np.quantile(ratio, 0.05):.3f}"
      f"-{np.quantile(ratio, 0.95):.3f}")

# %% [markdown]
"""
## 5. With an importance matrix

With an imatrix (notebook 10), ggml weighs each weight by `qw_j · sqrt(σ² + x_j²)`: `qw_j` the
importance of its column, σ² twice the block's mean square (so small weights still count). The
search is the same; the weights change, and so can the winner. The imatrix below is collected as in
notebook 10 (here on 4 chunks of calibration text) and kept in kquant's cache:
"""

# %%
def collect_imatrix(path):
    im = calibrate.collect(f16, calibrate.calibration_text(), n_chunks=4, dataset=calibrate.CALIBRATION_DATASET)
    imatrix.save(im, path)


im_path = cache.made("imatrix", collect_imatrix, "tiny.imatrix.gguf", model=summary.sha256(hub.bundled()), n_chunks=4)
vectors = imatrix.load(im_path).vectors()
qw = vectors[NAME]
w_im = iq4_nl.block_importance(x[:, None], qw[32 * B : 32 * B + 32, None])[:, 0]
steps_im = iq4_nl.search_steps(x, w_im)
print(f"block {B}, without: candidate {steps.chosen}, d = {steps.d[steps.chosen]:.4g};"
      f" with the imatrix: candidate {steps_im.chosen}, d = {steps_im.d[steps_im.chosen]:.4g}")
same = np.array_equal(kquant.quantize(W, "IQ4_NL", imatrix=qw), reference.quantize(W, "IQ4_NL", imatrix=qw))
print(f"{NAME} with its importance: same bytes as ggml: {same}")

# %% [markdown]
"""
Matrix by matrix, the importance-weighted error `Σ_j qw_j (w − ŵ)²` (what the imatrix search aims
at) without and with the importance:
"""

# %%
lower = 0
rows = []
for name, w in mats.items():
    if name not in vectors:
        continue
    imp = vectors[name]
    err = {use: np.sum(imp * (kquant.dequantize(b, "IQ4_NL") - w) ** 2)
           for use, b in [(False, q_plain[name]), (True, kquant.quantize(w, "IQ4_NL", imatrix=imp))]}
    lower += bool(err[True] < err[False])
    rows.append(err[True] / err[False])
print(f"with the imatrix the weighted error is lower for {lower} of {len(rows)} matrices;"
      f" median ratio with/without {np.median(rows):.3f}")

# %% [markdown]
"""
The importance moves error away from the loud columns in nearly every matrix, as it did for the
K-quants in notebook 10.

## 6. The claim at equal size

> *I-quants use a lookup table to be more accurate for their size.*

Q4_0, IQ4_NL and Q4_K are all 4.5 bits per weight. First the weight error over every matrix of
the model (signal-to-quantization-noise ratio: higher is better), all three encoded by kquant:
"""

# %%
allw = np.concatenate([w.ravel() for w in mats.values()])
sqnr = {}
for t in ["Q4_0", "IQ4_NL", "Q4_K"]:
    qs = q_plain if t == "IQ4_NL" else {name: kquant.quantize(w, t) for name, w in mats.items()}
    y = np.concatenate([kquant.dequantize(qs[name], t).ravel() for name in mats])
    sqnr[t] = metrics.sqnr_db(allw, y)
    print(f"{t:<7} {kquant.get_format(t).bits_per_weight} bits per weight, SQNR {sqnr[t]:.2f} dB")

# %% [markdown]
"""
Then whole files in llama.cpp. To compare the formats and not llama.cpp's recipes, each file is
written `pure` (every matrix in the one type, llama-quantize's `--pure`; norms stay F32), plus
IQ4_NL with the imatrix, and scored against F16 on notebook 08's held-out text and tasks. kquant
writes the files; one is checked against llama.cpp's own:
"""

# %%
files = {"F16": hub.bundled()}
for t in ["Q4_0", "IQ4_NL", "Q4_K"]:
    mix = {"Q4_K": "Q4_K_M"}.get(t, t)  # the mix whose default is t; pure makes every matrix t
    files[t] = cache.quantized(hub.bundled(), mix, f"tiny-{t}-pure.gguf", pure=True)
files["IQ4_NL+imatrix"] = cache.quantized(hub.bundled(), "IQ4_NL", "tiny-IQ4_NL-pure+imatrix.gguf", pure=True,
                                          imatrix=im_path)
def llama_quantize(path):  # llama.cpp's own file, written aside and then renamed (the cache keeps whole files only)
    reference.model_quantize(hub.bundled(), path.with_suffix(".part"), "IQ4_NL", pure=True)
    os.replace(path.with_suffix(".part"), path)


theirs = cache.made("llama.cpp-quantized", llama_quantize, "llama.cpp-IQ4_NL-pure.gguf",
                    src=summary.sha256(hub.bundled()), mix="IQ4_NL", pure=True)
print("kquant's pure IQ4_NL file = llama.cpp's (sha256):", summary.sha256(files["IQ4_NL"]) == summary.sha256(theirs))
table = cache.compare(list(files.values()), n_docs=24, n_sums=200, speed_tokens=32)
by = dict(zip(files, table.rows))
print(table)

# %%
for a, b in [("IQ4_NL", "Q4_0"), ("IQ4_NL", "Q4_K"), ("IQ4_NL+imatrix", "IQ4_NL")]:
    d = evaluate.difference(by[a], by[b], "kl")
    print(f"KL {a} − {b}: {evaluate.verdict(d, 'the difference')}")

# %% [markdown]
"""
Read the weight errors and the KL lines together: the SQNR ordering above is a computation on every
weight; the KL differences are measurements on 24 documents, and only those whose interval excludes
0 are evidence.

## 7. What the table costs when decoding

Decoding an even grid is a subtraction and a multiply; a table adds a lookup. Timing kquant's numpy
decoder, ggml's C decoder (through `kquant.reference`) and gguf-py's numpy one on every matrix of the
model, best of 3 (your machine's numbers; they vary from run to run):
"""

# %%
def best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


n = allw.size
for t in ["Q4_0", "IQ4_NL"]:
    qs = list(q_plain.values()) if t == "IQ4_NL" else [kquant.quantize(w, t) for w in mats.values()]
    qt = gguf.GGMLQuantizationType[t]
    speed = {
        "kquant": best_time(lambda: [kquant.dequantize(b, t) for b in qs]),
        "ggml": best_time(lambda: [reference.dequantize(b, t) for b in qs]),
        "gguf-py": best_time(lambda: [gguf.quants.dequantize(b, qt) for b in qs]),
    }
    print(f"{t:<7}" + ", ".join(f"{k} {n / s / 1e6:6.0f} M weights/s" for k, s in speed.items()))

# %% [markdown]
"""
The tok/s column of the table above is llama.cpp running each file, where the decode happens
inside its matrix multiplications.
"""

# %% [markdown]
"""
## Summary

* IQ4_NL is Q4_0's block with its 16 levels taken from a table, closer together near zero where
  most weights are; at a fixed scale that alone rounds the bundled model's weights with less error
  than the even grid (section 1).
* A weight's level is its nearest table value, a tie going up (`best_index_int8`); a block decodes
  as `d · TABLE[index]`.
* The scale is searched: 16 candidates, each fitted by weighted least squares and scored; most
  blocks put their largest weight on the table's long end, −127. An importance matrix changes the
  weights of the fit, not the search.
* At 4.5 bits per weight the SQNR orders Q4_0 < IQ4_NL < Q4_K (higher is less error; section 6),
  and the whole-file KL differences carry paired 95 % intervals: read which exclude 0.
"""
