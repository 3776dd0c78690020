# %% [markdown]
"""
# 05 · The K family

Q4_K has four siblings: Q2_K, Q3_K, Q5_K and Q6_K. All five cut a row into super-blocks of
256 weights, but they spend those 256 weights' bits differently: how many bits per level,
how many weights share a scale, whether there is a min. This notebook lays the five side by
side, measures them and the five legacy formats of notebook 03 on the same real
weights, and settles where the "K" comes from. These ten are two of llama.cpp's families
of block formats, not all of them: ggml also has the I-quants (IQ1_S … IQ4_XS, several of
them built on tables of non-uniform values), the ternary TQ1_0 and TQ2_0, and MXFP4 and
NVFP4 (`enum ggml_type` in `ggml/include/ggml.h`), which this workbook does not cover.

**After this notebook you will be able to**

* say what each k-quant stores per super-block, and add up its bits per weight yourself;
* read the error of every legacy and K format against its bits per weight on real weights;
* show that the encoder is a grid search with evenly spaced levels, not k-means clustering;
* decode a Q5_K block by hand, and pick the cheapest format that reaches an error target.

Terms (K-quant, super-block, type-0 / type-1, bits per weight, …) are defined in the
[glossary](../docs/glossary.md).
"""

# %%
import numpy as np
from ipywidgets import Dropdown, IntSlider, fixed, interact

import kquant
from kquant.lessons import kfamily, metrics, samples
from kquant import viz
from kquant.reference import recorded  # llama.cpp's bytes; without it, checked against its recorded sha256
from kquant.formats import q4_k
from kquant.exercises import nb05 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 1. Five layouts, one super-block

Every k-quant stores 256 levels, a small integer scale (and for some a min) per *group* of
weights, and one or two float16 numbers that scale those integers for the whole super-block.
`kquant.lessons.kfamily` holds the five layouts as ggml's structs define them; adding up their bits
gives each block's size, which we check against the size the encoder really writes:
"""

# %%
print(f"{'type':<5} {'bits/level':>10} {'group':>6} {'scale+min bits':>15} {'fp16':>5} {'bytes':>6} {'written':>8} {'bits/weight':>12}   decodes as")
for name, lay in kfamily.LAYOUTS.items():
    total_bits = sum(kfamily.budget(name).values())
    fmt = kquant.get_format(name)
    written = kquant.quantize(np.zeros((1, 256), np.float32), name).shape[1]
    print(f"{name:<5} {lay.level_bits:>10} {lay.group:>6} {lay.scale_bits:>8}+{lay.min_bits:<6} {lay.n_fp16:>5} {total_bits // 8:>6} {written:>8} {fmt.bits_per_weight:>12g}   {lay.decodes}")

# %% [markdown]
"""
Where the bits go, per weight. The levels are the bulk; everything else (group scales and
mins, super-scales) is the overhead, printed last and compared with the legacy formats' one
float16 scale (and min) per 32 weights:
"""

# %%
for name in kfamily.LAYOUTS:
    parts = kfamily.budget(name)
    overhead = kquant.get_format(name).bits_per_weight - kfamily.layout(name).level_bits
    print(f"{name}: " + ",  ".join(f"{part} = {bits / 256:.4f}" for part, bits in parts.items()) + f"  ->  overhead {overhead:.4f} bit/weight")
for name, level_bits in [("Q4_0", 4), ("Q4_1", 4), ("Q5_0", 5), ("Q8_0", 8)]:
    print(f"{name}: overhead {kquant.get_format(name).bits_per_weight - level_bits:.4f} bit/weight")

# %% [markdown]
"""
Two designs share the family. **Q2_K, Q4_K, Q5_K** are asymmetric ("type-1" in llama.cpp's
words), like Q4_1: a scale and a min per group (`d·sc·q − dmin·m`). **Q3_K, Q6_K** are
symmetric ("type-0"), like Q4_0: a signed scale per group of 16 and levels centred on zero. Q4_K and Q5_K use groups of 32 with 6-bit scales
and mins; the others use groups of 16.

### Exercise 1 (bytes of a super-block)

Complete `k_block_bytes(level_bits, group, group_bits, n_fp16)`: the size in bytes of a
256-weight super-block whose levels have `level_bits` bits, with one `group_bits`-bit scale
(and min) per `group` weights and `n_fp16` float16 super-scales.
"""

# %% answer q1
def k_block_bytes(level_bits, group, group_bits, n_fp16):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(k_block_bytes)

# %% [markdown]
"""
## 2. Error against bits per weight, legacy and K formats

Now the real weights: three matrices of the workbook's bundled model (an attention query,
an attention value and a feed-forward down projection from its middle layer). Each of
the ten legacy and K formats encodes them, exactly as ggml would (spot-checked against
ggml's own C encoder below), and we measure the SQNR of the three together:
"""

# %%
sample = samples.model_weights()
print("source:", sample.source)
for name, w in sample.weights.items():
    print(f"  {name}: {w.shape}, std {w.std():.4f}, max |w| {np.abs(w).max():.4f}")
W = np.concatenate([w.ravel() for w in sample.weights.values()]).reshape(-1, 256)

legacy = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
k_family = list(kfamily.LAYOUTS)
results = {}
for name in legacy + k_family:
    q = kquant.quantize(W, name)
    results[name] = (kquant.get_format(name).bits_per_weight, metrics.sqnr_db(W, kquant.dequantize(q, name)))
print(f"\nggml's C encoder gives the same bytes (Q2_K, Q6_K, Q4_0): "
      f"{all(np.array_equal(kquant.quantize(W, n), recorded.quantize(W, n)) for n in ['Q2_K', 'Q6_K', 'Q4_0'])}")
print(f"{'type':<5} {'bits/weight':>12} {'SQNR (dB)':>10}")
for name, (bpw, db) in sorted(results.items(), key=lambda kv: kv[1][0]):
    print(f"{name:<5} {bpw:>12g} {db:>10.2f}")

# %%
viz.tradeoff_plot(
    {
        "legacy: 32-weight blocks, float16 scale": [(*results[n], n) for n in legacy],
        "k-quants: 256-weight super-blocks": [(*results[n], n) for n in k_family],
    },
    f"Legacy and K formats on {len(sample.weights)} matrices of {sample.source.split(':')[0]}",
)

# %% [markdown]
"""
How much does one more bit per weight buy? Notebook 01 predicted 6.02 dB for a uniform grid
(error power falls by 4 per bit). A straight line through the five k-quants:
"""

# %%
slope, _ = np.polyfit([results[n][0] for n in k_family], [results[n][1] for n in k_family], 1)
print(f"k-quants: {slope:.2f} dB per bit per weight; a uniform grid: 10·log10(4) = {10 * np.log10(4):.2f}")

# %% [markdown]
"""
At equal bits per weight the two families can be compared directly, twice (and Q4_1
against Q4_K, which costs less):
"""

# %%
for k_name, legacy_name in [("Q4_K", "Q4_0"), ("Q5_K", "Q5_0")]:
    (bk, dk), (bl, dl) = results[k_name], results[legacy_name]
    print(f"{k_name} vs {legacy_name}: both {bk:g} bits/weight; SQNR {dk:.2f} vs {dl:.2f} dB ({dk - dl:+.2f} dB for the K)")
print(f"Q4_1 spends {results['Q4_1'][0] - results['Q4_K'][0]:g} bit/weight more than Q4_K for {results['Q4_1'][1] - results['Q4_K'][1]:+.2f} dB")

# %% [markdown]
"""
### Try it: one super-block in each k-quant

Left: 256 weights of the first row of the feed-forward matrix and what each format decodes
them to. Right: one group and the grid of levels its weights were rounded onto (Q4_K and
Q5_K have 8 groups; a larger slider value shows their last).
"""

# %%
W_ffn = list(sample.weights.values())[-1]
interact(viz.k_block_view, w=fixed(W_ffn), name=Dropdown(options=k_family, value="Q3_K", description="format"),
         group=IntSlider(value=0, min=0, max=15, description="group"), row=fixed(0));

# %% [markdown]
"""
### Exercise 2 (decode a Q5_K block)

Q5_K is Q4_K plus one bit per level: bytes 0–15 are Q4_K's (d, dmin, the 12 scale bytes),
bytes 16–47 hold `qh`, the fifth bits, and bytes 48–175 the low nibbles in Q4_K's order.
Weight *e* = 32*j* + *l* finds its fifth bit in bit *j* of `qh[l]`. Complete
`dequantize_q5_k(block)`: from 176 bytes, return the 256 weights (float32) as llama.cpp
decodes them. `q4_k.unpack_scales` and `q4_k.unpack_nibbles` may help.
"""

# %% answer q2
def dequantize_q5_k(block):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(dequantize_q5_k)

# %% [markdown]
"""
## 3. Where the "K" comes from, and what it is not

A common claim says the "K" stands for *k-means clustering*: similar weights grouped and
replaced by centroids from a lookup table (claim C1), and that Q4_K_M is "4-bit quantization
with K-means + multipliers" (C2). The encoder's steps are in the format modules
(`kquant/formats/q*_k.py`, each a transcription of ggml's `quantize_row_q*_K_ref`):

1. cut the super-block into groups (16 or 32 weights);
2. for each group, search a scale (and min) for an evenly spaced grid of 2<sup>bits</sup>
   levels: `make_qkx2_quants` (Q2_K, Q4_K, Q5_K: a series of candidate grids, a weighted
   least-squares fit for each; the candidate kept is the one with the smallest weighted
   squared error for Q4_K and Q5_K, the smallest weighted *absolute* error for Q2_K, whose
   call passes `use_mad = true`), `make_q3_quants` (Q3_K) or `make_qx_quants` (Q6_K);
3. quantize the group scales (and mins) to small integers under one or two float16 numbers;
4. round every weight again against the scales the decoder will use, and pack.

There is no clustering step, and nothing in the file is a table of centroids. If there were,
a group's decoded values could sit anywhere. We check the opposite on every group of every
super-block of the three matrices: the values each group can decode to (found by asking the
decoder, `kfamily.group_levels`, for all super-blocks at once) are evenly spaced, and every
decoded weight is one of them:
"""

# %%
for name in k_family:
    lay = kfamily.layout(name)
    blocks = kquant.quantize(W, name)  # one super-block per row of W
    decoded = kquant.dequantize(blocks, name).reshape(-1, lay.groups, lay.group)
    levels = kfamily.group_levels(blocks, name)  # (super-blocks, groups, 2**bits)
    steps = np.diff(levels.astype(np.float64), axis=-1)
    even = bool(np.isclose(steps, steps[..., :1], rtol=1e-5, atol=1e-9).all())
    on_grid = bool((decoded[..., :, None] == levels[..., None, :]).any(axis=-1).all())
    print(f"{name}: all {blocks.shape[0]} super-blocks x {lay.groups} groups checked; levels evenly spaced: {even}; every weight on its grid: {on_grid}")

# %% [markdown]
"""
So C1 is wrong and C2 half right: the "multipliers" are real (each group's scale is an
integer multiplier of the super-block's float16 *d*), the k-means is not.

The name comes from llama.cpp pull request #1684, titled "k-quants", by Iwan Kawrakow
(ikawrakow), June 2023 (https://github.com/ggml-org/llama.cpp/pull/1684). It introduced
these five formats, named `GGML_TYPE_Q2_K` … `Q6_K`, and the constant `QK_K = 256`, the
super-block size, in the style of the existing `QK4_0 = 32` ("weights per block of Q4_0").
No expansion of the letter is documented there. The sizes, from the formats themselves:
"""

# %%
print("QK4_0 =", kquant.get_format("Q4_0").block_size, " QK_K =", ", ".join(f"{n}: {kquant.get_format(n).block_size}" for n in k_family))

# %% [markdown]
"""
### Exercise 3 (the cheapest format for an error target)

Complete `cheapest_k_format(w, target_db)`: of Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, return the
name of the one with the fewest bits per weight whose SQNR on `w` is at least `target_db`.
"""

# %% answer q3
def cheapest_k_format(w, target_db):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(cheapest_k_format)

# %% [markdown]
"""
## Summary

* The five k-quants share the 256-weight super-block and differ in bits per level (2 to 6),
  group size (16 or 32), scale bits (4 to 8) and whether a group has a min:
  2.625, 3.4375, 4.5, 5.5 and 6.5625 bits per weight.
* On the bundled model's weights, SQNR rises by about the 6 dB per bit notebook 01 predicts,
  and section 2 compares K and legacy formats at equal bits per weight (Q4_K vs Q4_0, Q5_K vs Q5_0).
* The encoder searches a scale (and min) per group for an evenly spaced grid: no clustering,
  no centroids. "k-quants" is the name of llama.cpp PR #1684 (ikawrakow, June 2023).
"""
