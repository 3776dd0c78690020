# %% [markdown]
"""
# 11 · GPTQ: rounding that repairs its own errors

Every encoder so far rounded each weight on its own: the scale search picks the grid, then each
weight goes to its nearest level, whatever its neighbours did. **GPTQ** (Frantar et al. 2022,
[arXiv 2210.17323](https://arxiv.org/abs/2210.17323)) rounds the input columns of a matrix one at a
time and, after each, *moves the columns not yet rounded* so that the layer's output stays as close
as possible to what it was. The instruction for how to move them comes from the inputs the layer
meets on calibration text: their second-moment matrix `H = 2·XᵀX / n`, the layer's **Hessian**.

kquant's GPTQ (`kquant.methods.gptq`) runs the loop of the paper's reference code
(IST-DASLab/gptq, `GPTQ.fasterquant`) on ggml's own grids: it writes real Q4_0 and Q4_K blocks,
so llama.cpp runs the result as it runs any other file.

**After this notebook you will be able to**

* say what the Hessian of a layer is and why correlated inputs let one column repair another's error;
* do one GPTQ step by hand: round a column, push its error through the inverse Hessian;
* explain why an identity Hessian makes GPTQ plain round-to-nearest, and what damping does;
* measure GPTQ against round-to-nearest and an imatrix at the same size in llama.cpp, with intervals;
* time it on a CPU.

Words such as *imatrix*, *block*, *KL divergence* and *95 % interval* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import time

import numpy as np
from ipywidgets import IntSlider, SelectionSlider, fixed, interact

import kquant
from kquant import llamacpp, viz
from kquant.methods import gptq
from kquant.model import cache, evaluate, forward, hub
from kquant.exercises import nb11 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook collects GPTQ's Hessians on text cut by llama.cpp's tokenizer and measures the GPTQ file in llama.cpp");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. A layer's error, and its Hessian

A matrix W (rows × input columns) meets inputs x, one row per token. Quantized to `Ŵ = W + E`, its
output on a token changes by `E x`. Over n tokens X (n × columns) the squared output error is

`‖E Xᵀ‖² = Σ_rows e H eᵀ · n / 2`,  with  `H = 2 · XᵀX / n`.

H has one row and one column per *input column*; entry (j, k) is how often inputs j and k are
large together. Notebook 10's importance was its diagonal, `E[x_j²]` (up to the 2). GPTQ uses all of it.

### Exercise 1 (the Hessian)

Complete `hessian(x)`: `x` has one row per token and one column per input; return `2·XᵀX / n`.
"""

# %% answer q1
def hessian(x):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(hessian)

# %% [markdown]
"""
Here is the real one: the input of layer 4's attention (attn_q, attn_k and attn_v all read it)
on 8 chunks of the calibration text of notebook 10, through kquant's numpy forward pass.
The check below computes the output error both ways, for the round-to-nearest Q4_0 of `attn_k`:
"""

# %%
f16 = forward.Llama.load(hub.bundled())
NAME = "blk.4.attn_k.weight"
H = gptq.cached_hessians(hub.bundled(), layer=4, n_chunks=8)[NAME]  # kept in kquant's cache after the first run
W = f16.weights[NAME]
seen = {}
chunk = gptq.calibration(f16, n_chunks=1, n_ctx=None)[0]
f16.forward(chunk, observe=lambda name, x: seen.setdefault(name, x))
x = seen[NAME].astype(np.float64)
E = kquant.dequantize(kquant.quantize(W, "Q4_0"), "Q4_0") - W
h1 = 2 * x.T @ x / len(x)  # the Hessian of this one chunk
print(f"{NAME}: W {W.shape}, H {H.shape} from 8 chunks of {len(chunk)} tokens")
print(f"one chunk of {len(x)} tokens: ‖E Xᵀ‖² = {np.sum((E @ x.T) ** 2):.4f}, "
      f"tr(E H Eᵀ)·n/2 = {gptq.output_error(W, W + E, h1) * len(x) / 2:.4f}")
d = np.sqrt(np.diag(H))
corr = H / np.outer(d, d)
off = np.abs(corr[~np.eye(len(H), dtype=bool)])
print(f"how the inputs go together: |correlation| between two input columns, median {np.median(off):.2f}, "
      f"above 0.5 for {np.mean(off > 0.5):.1%} of the pairs, largest {off.max():.2f}")

# %% [markdown]
"""
Why the off-diagonal matters: if inputs j and k were never active together (H diagonal), an error
in column j could only be undone by column j. When they move together, a change in column k
changes the output almost as a change in column j would, so column k can absorb part of j's error.

## 2. One column at a time

Two inputs, correlated at 0.9, one weight row `w = [0.4, 0.4]`, and a grid of whole numbers.
Round-to-nearest gives `[0, 0]`. GPTQ rounds column 0 to 0 (error `e = 0.4`), then asks: given
that column 0 is now fixed, which change of column 1 undoes the most of it? The answer (the
"optimal brain surgeon" step of Hassibi & Stork, which GPTQ applies column by column) is

`w_j ← w_j − e · (H⁻¹)[0, j] / (H⁻¹)[0, 0]`  for every column j not yet rounded.
"""

# %%
rng = np.random.default_rng(0)
x1 = rng.standard_normal(20_000)
x2 = 0.9 * x1 + np.sqrt(1 - 0.81) * rng.standard_normal(20_000)
X2 = np.stack([x1, x2], axis=1)
H2 = 2 * X2.T @ X2 / len(X2)
Hi = np.linalg.inv(H2)
w = np.array([0.4, 0.4])
e = w[0] - np.round(w[0])
moved = w - e * Hi[0] / Hi[0, 0]
q_gptq = np.array([np.round(w[0]), np.round(moved[1])])
q_rtn = np.round(w)
for label, q in [("round to nearest", q_rtn), ("GPTQ", q_gptq)]:
    print(f"{label:<17} q = {q}, output error per token {np.mean((X2 @ (q - w)) ** 2):.3f}")
print(f"after column 0, column 1 moved from {w[1]} to {moved[1]:.3f} before its own rounding")

# %% [markdown]
"""
GPTQ's weights are *further* from w (`[0, 1]` against `[0.4, 0.4]`), and its output is much closer:
since `x₂ ≈ x₁`, the true output `0.4·x₁ + 0.4·x₂` is about `0.8·x₁`; GPTQ's `x₂` misses it by about
`0.2·x₁`, round-to-nearest's `0` by `0.8·x₁`.

The reference code does not invert H for every column. It takes the **upper Cholesky factor** U
of H⁻¹ (`H⁻¹ = UᵀU`) once: row i of U, divided by its diagonal, is exactly the step above for
column i *given that columns 0 … i−1 are already rounded*. One step for a block of columns whose
first column has just been rounded to q:

`e = (w[:, 0] − q) / u[0]`,  `w ← w − e ⊗ u`  (u: row 0 of U over the block's columns).

### Exercise 2 (one GPTQ step)

Complete `column_step(w, q, u)`: `w` (rows × k) is a block of weights, `q` (rows,) the rounded
values of its column 0, `u` (k,) row 0 of the factor. Return the updated block (column 0 included:
it comes out equal to `q`).
"""

# %% answer q2
def column_step(w, q, u):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(column_step)

# %% [markdown]
"""
## 3. The whole loop, on ggml's grid

`gptq.quantize(W, H, "Q4_0")` runs that step for every column, left to right, in blocks of 128
columns (each block's errors reach the rest of the matrix in one matrix product at its end, the
reference's "lazy batch" trick; the arithmetic is the same). The grid is ggml's: when the loop
reaches the first column of a Q4_0 block (32 columns) it takes the scale from those columns'
*current* weights, with ggml's own rule (`d = signed absmax / −8`, stored fp16), and rounds each
column to it exactly as ggml does; for Q4_K, at the first column of each 256-column super-block,
ggml's scale and min search and their 6-bit quantization.

**The self-check.** With `H = I` (inputs uncorrelated and equally loud) no column can help another:
every step moves nothing, and GPTQ must be round-to-nearest, byte for byte:
"""

# %%
for qtype in ["Q4_0", "Q4_K"]:
    for name in [NAME, "blk.4.ffn_down.weight"]:
        Wn = f16.weights[name]
        same = np.array_equal(gptq.quantize(Wn, np.eye(Wn.shape[1]), qtype).blocks, kquant.quantize(Wn, qtype))
        print(f"{qtype} {name:<22} GPTQ with H = I gives kquant.quantize's bytes: {same}")

# %% [markdown]
"""
(tests/test_gptq.py repeats this on random and nasty matrices: zeros, constants, outliers, subnormals.)

Before the factor, the reference adds a small constant to H's diagonal, `percdamp · mean(diag H)`
with `percdamp = 0.01`: H from a finite sample can be nearly singular (an input that barely varies),
and its inverse then sends huge corrections. Damping is a pull towards a multiple of `I`, that is,
towards round-to-nearest: with an enormous damping almost nothing is moved.

### Exercise 3 (the damped inverse factor)

Complete `damped_inverse_factor(H, percdamp)`: add `percdamp · mean(diag H)` to the diagonal,
invert, and return the **upper** Cholesky factor U of the inverse (`H⁻¹ = UᵀU`).
"""

# %% answer q3
def damped_inverse_factor(H, percdamp):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(damped_inverse_factor)

# %% [markdown]
"""
Now the real Hessian. The output error `tr(E H Eᵀ)` of round-to-nearest and of GPTQ on the same grid
(so the same bytes per weight), with the weight error beside it:
"""

# %%
print(f"{'type':<6}{'matrix':<24}{'RTN output':>12}{'GPTQ output':>13}{'RTN weight':>12}{'GPTQ weight':>13}")
for qtype in ["Q4_0", "Q4_K"]:
    for name in [NAME, "blk.4.attn_q.weight"]:
        Wn = f16.weights[name]
        g = gptq.quantize(Wn, H, qtype)
        r = kquant.dequantize(kquant.quantize(Wn, qtype), qtype)
        print(f"{qtype:<6}{name:<24}{gptq.output_error(Wn, r, H):>12.4f}{gptq.output_error(Wn, g.values, H):>13.4f}"
              f"{np.sum((r - Wn) ** 2):>12.4f}{np.sum((g.values - Wn) ** 2):>13.4f}")

# %% [markdown]
"""
The weight error goes *up* and the output error comes *down*: GPTQ spends weight error where the
inputs cannot see it. (The output error here is measured on the same calibration tokens H came
from; the whole-file test in section 4 scores held-out text.)

Pick a column of `attn_k` (its first 32 rows) and see where its error goes: the bars are `Δw_j` per unit of error in the rounded
column (row c of the factor over its diagonal), the dots the correlation of input c with input j.
Raise the damping and the bars shrink while the output error climbs towards round-to-nearest's:
"""

# %%
interact(viz.gptq_view, W=fixed(W[:32]), H=fixed(H),
         column=IntSlider(value=40, min=0, max=W.shape[1] - 1, description="column c"),
         percdamp=SelectionSlider(options=viz.gptq.DAMPINGS, value=0.01, description="percdamp"),
         qtype=fixed("Q4_0"));

# %% [markdown]
"""
## 4. The whole model, in llama.cpp

`gptq.cached_file(src, "Q4_0")` quantizes every matrix of the eight blocks as the reference's
`llama_sequential` does: the Hessians of block i come from calibration inputs that went through
blocks 0 … i−1 *already quantized*, so each block also repairs what the blocks before it broke;
within a block all Hessians are taken before any of its matrices is quantized. q, k, v share one
Hessian, and gate and up another. `token_embd.weight` (the model's tied embedding and output) is
not a block matrix: GPTQ leaves it alone, as the reference leaves the embeddings and the output head
(which it keeps in 16 bits); here it gets llama.cpp's round-to-nearest Q4_0, like every other matrix
of the pure Q4_0 plan, so the three files below differ only in their block matrices.
The blocks are written with `quantize_gguf(..., blocks=...)` into llama.cpp's pure Q4_0 plan, so the
three files below have the same types, tensor for tensor, and the same size:

* **RTN**: llama.cpp's pure Q4_0, round-to-nearest;
* **imatrix**: the same with notebook 10's importance matrix (8 chunks of the same calibration text);
* **GPTQ**: 8 chunks of the same calibration text.

The first run makes the GPTQ file, this notebook's slowest step; then it is kept in kquant's cache,
keyed by the model's sha256 and the settings. Scoring uses notebook 08's held-out text and tasks.
(`gptq.cached_file(src, "Q4_K")` makes the same kind of file with Q4_K blocks.)
"""

# %%
im_path = gptq.cached_imatrix(hub.bundled(), n_chunks=8)  # notebook 10's imatrix, kept in kquant's cache
files = {
    "F16": hub.bundled(),
    "Q4_0 RTN": cache.quantized(hub.bundled(), "Q4_0", "tiny-Q4_0-pure.gguf", pure=True),
    "Q4_0 imatrix": cache.quantized(hub.bundled(), "Q4_0", "tiny-Q4_0-pure+imatrix.gguf", pure=True, imatrix=im_path),
    "Q4_0 GPTQ": gptq.cached_file(hub.bundled(), "Q4_0"),
}
table = cache.compare(list(files.values()), n_docs=24, n_sums=200, speed_tokens=32)  # notebook 08's settings
rows = dict(zip(files, table.rows))
print(table)
for label, r in rows.items():
    print(f"{label:<13} {r.bpw:.2f} bpw  KL {r.kl:.2e} {r.interval('kl')}")

# %% [markdown]
"""
Each file was scored on the same documents and tasks, so the honest comparison is paired
(`evaluate.difference`, notebook 08):
"""

# %%
for a, b in [("GPTQ", "RTN"), ("GPTQ", "imatrix"), ("imatrix", "RTN")]:
    for metric in ["kl", "top1", "sums"]:
        d = evaluate.difference(rows[f"Q4_0 {a}"], rows[f"Q4_0 {b}"], metric)
        print(f"{a:<8}− {b:<8}{metric:<5}", evaluate.verdict(d))
made = gptq.cached_model(hub.bundled(), "Q4_0")
proxy = {k[6:]: v for k, v in made.items() if k.startswith("proxy/")}
lower = sum(g < r for g, r in proxy.values())
print(f"on its own calibration inputs, GPTQ's output error tr(E H Eᵀ) is below round-to-nearest's for {lower} of "
      f"the {len(proxy)} matrices; median ratio {np.median([g / r for g, r in proxy.values()]):.2f}")

# %% [markdown]
"""
On this model and this held-out text, GPTQ's KL divergence from F16 is lower than round-to-nearest's
*and* lower than the imatrix's, with paired intervals that exclude 0 (the first and fourth lines),
at the same 4.52 bits per weight; the other lines say which of the smaller differences are more
than noise. The gain comes from the matrices: the last line counts those whose own output error
GPTQ lowered on its calibration inputs. The sample is small (24 documents, 200 sums): a larger
`n_docs` narrows every interval.

## 5. "GPTQ needs a GPU"

A common claim. GPTQ's work per matrix is a Cholesky factorisation of H (columns³) and the column
loop (rows × columns², in matrix products); nothing in it needs a GPU, only time, which grows with the
model. Measured here, on this machine's CPU, for block 0 of the bundled model: its Hessians from 8
chunks of calibration text, then GPTQ of its seven matrices:
"""

# %%
start = time.perf_counter()
H0 = gptq.hessians(f16, gptq.calibration(f16, n_chunks=8, n_ctx=None), layer=0)
t_h = time.perf_counter() - start
start = time.perf_counter()
gptq.quantize_block(f16.weights, H0, "Q4_0")  # q, k, v as one stacked matrix, gate and up as another
t_q = time.perf_counter() - start
n_weights = sum(f16.weights[n].size for n in H0)
print(f"block 0: Hessians {t_h:.1f} s, GPTQ of its {len(H0)} matrices ({n_weights:,} weights) {t_q:.1f} s, on the CPU")

# %% [markdown]
"""
That is this machine's time for one block of this 6.5M-parameter model, on a CPU. The cost grows with the width (the
factorisation with columns³, the loop with rows × columns²) and with the number of blocks and of
calibration tokens, which is why large models are run on GPUs: for speed, not because the method
requires one.
"""

# %% [markdown]
"""
## Summary

* `H = 2·XᵀX / n` of a layer's inputs turns the output error into `tr(E H Eᵀ)`; its off-diagonal
  entries say which columns can stand in for which.
* GPTQ rounds one column at a time and moves the columns not yet rounded by `−e · u / u[0]`, row i of
  the upper Cholesky factor of the damped H⁻¹; the weights move away from W, the output comes closer.
* With `H = I` it is round-to-nearest, byte for byte; damping pulls it towards that.
* kquant writes GPTQ's choices as real ggml Q4_0 / Q4_K blocks, which llama.cpp runs; section 4
  measured the whole file against round-to-nearest and an imatrix at the same size, with paired intervals.
"""
