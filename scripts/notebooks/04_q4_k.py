# %% [markdown]
"""
# 04 · Q4_K, the super-block

Q4_K is the format most tensors of a "Q4_K_M" model file are stored in. It keeps Q4_1's idea (a scale and a
minimum per 32 weights) but stores those scales and minimums themselves in 6 bits, under
two float16 numbers shared by 256 weights. This notebook follows llama.cpp's encoder one
step at a time, on one super-block, and ends with your own Q4_K block, byte for byte
llama.cpp's.

**After this notebook you will be able to**

* lay out a Q4_K super-block: 256 weights, 8 sub-blocks of 32, 144 bytes, 4.5 bits per weight;
* explain the weighted search that picks each sub-block's scale and minimum;
* quantize the 16 sub-block numbers to 6 bits under the two float16 super-scales;
* read the 12 bytes that pack those 16 six-bit numbers, bit by bit;
* decode a 144-byte block by hand, and encode one exactly as llama.cpp does.
"""

# %%
import numpy as np
from ipywidgets import IntSlider, fixed, interact

import kquant
from kquant.lessons import metrics, samples, scale_search
from kquant import reference, viz
from kquant.formats import q4_k
from kquant.exercises import nb04 as ex

# %% [markdown]
"""
## 1. The layout

One Q4_K super-block holds 256 weights as 8 sub-blocks of 32. Sub-block *j* has a 6-bit
scale *sc<sub>j</sub>* and a 6-bit min *m<sub>j</sub>*; the block has two float16 numbers,
*d* and *dmin*, and every weight a 4-bit level *q* (0..15). Weight *e* of sub-block *j*
decodes as

*y* = *d* · *sc<sub>j</sub>* · *q<sub>e</sub>* − *dmin* · *m<sub>j</sub>*.

So *d* · *sc<sub>j</sub>* is the sub-block's scale and *dmin* · *m<sub>j</sub>* its
minimum (subtracted): Q4_1's block scale and min, stored in 6 bits each instead of 16.
The bytes add up:
"""

# %%
fmt = kquant.get_format("Q4_K")
parts = {"d, dmin (2 float16)": 2 * 16, "scales and mins (8 x 2 x 6 bits)": 8 * 2 * 6, "levels (256 x 4 bits)": 256 * 4}
for name, bits in parts.items():
    print(f"{name:>34}: {bits:5d} bits = {bits // 8:3d} bytes = {bits / 256:.3f} bits per weight")
print(f"{'total':>34}: {sum(parts.values()):5d} bits = {sum(parts.values()) // 8:3d} bytes = {sum(parts.values()) / 256:.3f} bits per weight")
print(f"llama.cpp's block_q4_K: {fmt.type_size} bytes for {fmt.block_size} weights = {fmt.bits_per_weight} bits per weight")
print(f"Q4_1 for comparison: {kquant.get_format('Q4_1').bits_per_weight} bits per weight (a float16 scale and min per 32 weights)")

# %% [markdown]
"""
## 2. Step 1: the best scale and min for each sub-block

Take the first 256 weights of a row of our example matrix (the bundled model's weights;
`samples.example_weights().source` says which). The encoder first fits every
sub-block on its own: it looks for the scale and min with which `scale · L + min` (levels
*L* in 0..15) comes closest to the 32 weights, in a *weighted* squared error. The weight
of each number is |*x*| plus the sub-block's root-mean-square, so large weights count more
(llama.cpp's `quantize_row_q4_K_ref`):
"""

# %%
sample = samples.example_weights()
print("source:", sample.source)
x = sample.weights[0, :256]
sub = x[:32]
importance = scale_search.q4_k_weights(sub)
print(f"sub-block 0: RMS {np.sqrt(np.mean(sub.astype(np.float64) ** 2)):.4f}; importance ranges {importance.min():.4f} .. {importance.max():.4f}")

# %% [markdown]
"""
The search (`make_qkx2_quants` in ggml) starts from the plain grid: min = the smallest
weight (or 0 if all are positive), step = (max − min)/15. Then it tries 21 grids with
slightly different spacings, 15 − 1.0 + 0.1·*i* steps across the range for *i* = 0..20.
For each, it rounds the weights onto the grid and solves a small weighted least-squares
problem: which scale and min best explain *those* levels? It keeps the candidate with the
smallest weighted error. `kquant.lessons.scale_search` runs ggml's search (`kquant.formats.search.make_qkx2_quants`)
on this one sub-block and records every candidate it tries:
"""

# %%
trace = scale_search.qkx2_trace(sub, importance)
print(f"{'grid':>5} {'step':>9} {'fitted scale':>13} {'fitted min':>11} {'weighted error':>15}")
print(f"{'start':>5} {trace.initial.step:9.5f} {trace.initial.scale:13.5f} {trace.initial.min:11.5f} {trace.initial.error:15.4e}")
for i, c in enumerate(trace.candidates):
    print(f"{i:>5} {c.step:9.5f} {c.scale:13.5f} {c.min:11.5f} {c.error:15.4e}{'  <- best so far' if c.best_so_far else ''}")

# %% [markdown]
"""
The encoder runs the same search for all eight sub-blocks at once (`q4_k.subblock_fit`),
with the same importance weights; its winner for sub-block 0 is bit for bit the one above:
"""

# %%
xt = np.ascontiguousarray(x.reshape(8, 32).T)  # (32, 8): one sub-block per column
scales, mins, L = q4_k.subblock_fit(xt, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
print("sub-block 0, traced search: scale", trace.scale, " min", trace.the_min)
print("sub-block 0, q4_k.subblock_fit: scale", float(scales[0]), " min", float(mins[0]))
print("identical:", np.float32(trace.scale) == scales[0] and np.float32(trace.the_min) == mins[0] and np.array_equal(trace.levels, L[:, 0]))

# %% [markdown]
"""
### Try it: the search in every sub-block

Left: the weighted error of each candidate grid against its step; the square is the plain
min/max grid, the star the winner. Right: the sub-block's weights and what the winner
stores for them. The curve is jagged because moving the grid a little changes which level
some weights round to, which is why ggml tries a grid of candidates instead of solving for
one best step.
"""

# %%
interact(viz.scale_search_view, x=fixed(x), j=IntSlider(value=0, min=0, max=7, description="sub-block"));

# %% [markdown]
"""
A common claim says the "K" in Q4_K stands for *k-means clustering*: similar weights grouped
and replaced by centroids from a lookup table. The steps above are the whole search: a
grid of 21 candidate scales, a least-squares fit for each, the best one kept; and the levels
are an evenly spaced grid, `scale · L + min`. No clustering, no centroids, no lookup table.
The name comes from llama.cpp pull request #1684, "k-quants" (ikawrakow, June 2023), which
introduced the family with its 256-weight super-block (`QK_K = 256`); no expansion of the
letter is documented there.

## 3. Step 2: six-bit scales and mins under two float16 numbers

Stored as float16, eight scales and eight mins would cost 16 × 16 bits per 256 weights,
a whole bit per weight (Q4_1's overhead). Q4_K quantizes them too: *d* = max scale / 63 and *dmin* = max min / 63 are stored as float16,
and each scale and min as a 6-bit integer (0..63) times *d* or *dmin*:
"""

# %%
d, dmin, sc, m = q4_k.quantize_scales(scales[None, :], mins[None, :])
print(f"d = {scales.max():.6f} / 63 -> float16 {d[0]};   dmin = {mins.max():.6f} / 63 -> float16 {dmin[0]}")
print(f"{'j':>2} {'scale':>10} {'sc':>3} {'d·sc':>10} {'min':>10} {'m':>3} {'dmin·m':>10}")
for j in range(8):
    print(f"{j:>2} {scales[j]:10.6f} {sc[0, j]:3d} {np.float32(d[0]) * sc[0, j]:10.6f} {mins[j]:10.6f} {m[0, j]:3d} {np.float32(dmin[0]) * m[0, j]:10.6f}")

# %% [markdown]
"""
## 4. Step 3: round again, against the scales that will be decoded

The levels from step 1 were chosen for the exact scale and min. The decoder will use the
6-bit approximations, so the encoder rounds every weight once more, against *d* · *sc<sub>j</sub>*
and *dmin* · *m<sub>j</sub>*:
"""

# %%
L2 = q4_k.requantize(xt, L, d, dmin, sc, m, nmax=15)
fields = q4_k.Fields(d, dmin, sc, m, np.ascontiguousarray(L2.T).reshape(1, 256))
y = q4_k.decode(fields)[0]
print(f"levels changed by the second rounding: {np.count_nonzero(L2 != L)} of 256")
print(f"SQNR of the super-block: {metrics.sqnr_db(x, y):.1f} dB")

# %% [markdown]
"""
## 5. Step 4: the 144 bytes

*d* and *dmin* as little-endian float16 (bytes 0–3), the 16 six-bit numbers packed into 12
bytes (4–15), then 128 bytes of levels, two per byte (16–143). Compare with the bytes
llama.cpp's own C encoder writes for the same 256 weights:
"""

# %%
block = q4_k.pack(fields)[0]
ggml = reference.quantize(x[None, :], "Q4_K")[0]
print("our block equals llama.cpp's:", np.array_equal(block, ggml))
viz.block_bytes(block, [("d", 0, 2), ("dmin", 2, 4), ("scales and mins", 4, 16), ("levels, 2 per byte", 16, 144)], "One Q4_K super-block: 144 bytes for 256 weights")

# %% [markdown]
"""
### The 12 bytes of scales and mins, bit by bit

Sixteen 6-bit numbers are 96 bits, exactly 12 bytes, but they do not sit in order. Bytes
0–3 hold *sc*<sub>0..3</sub> in their low 6 bits and bytes 4–7 hold *m*<sub>0..3</sub>;
sub-blocks 4–7 are split: their low 4 bits fill bytes 8–11 (scale in the low nibble, min in
the high one) and their top 2 bits go into the spare bits 6–7 of bytes 0–7. (The decoder,
`get_scale_min_k4` in ggml, then needs only shifts and masks.) Pick a sub-block:
"""

# %%
interact(viz.scale_bits_view, sc=fixed(sc[0]), m=fixed(m[0]), j=IntSlider(value=4, min=0, max=7, description="sub-block"));

# %% [markdown]
"""
### Exercise 1 (read a scale and a min)

Complete `get_scale_min_k4(j, scales)`: from the 12 bytes `scales` (a uint8 array), return
the tuple `(sc, m)` of sub-block `j` (0..7), as integers.
"""

# %% answer q1
def get_scale_min_k4(j, scales):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(get_scale_min_k4)

# %% [markdown]
"""
### Exercise 2 (pack them)

Complete `pack_scales_k4(sc, m)`: the reverse. Given 8 scales and 8 mins (0..63 each),
return the 12 bytes.
"""

# %% answer q2
def pack_scales_k4(sc, m):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(pack_scales_k4)

# %% [markdown]
"""
## 6. Decoding one weight by hand

Weight *e* = 37 is in sub-block *j* = 37 // 32 = 1. Its level sits in chunk *c* = 37 // 64 = 0
of 64 weights, at *l* = 37 % 32 = 5; since 37 % 64 ≥ 32 it is the *high* nibble of byte
16 + 32*c* + *l* = 21. Sub-block 1 < 4, so its scale and min are the low 6 bits of bytes 4 + 1
and 8 + 1:
"""

# %%
e = 37
d_, dmin_ = block[0:4].view("<f2").astype(np.float32)
sc_1, m_1 = block[4 + 1] & 63, block[8 + 1] & 63
q_e = block[16 + 32 * 0 + 5] >> 4
by_hand = d_ * sc_1 * q_e - dmin_ * m_1
print(f"d = {d_}, dmin = {dmin_}, sc_1 = {sc_1}, m_1 = {m_1}, q_37 = {q_e}")
print(f"y_37 = d·sc·q − dmin·m = {by_hand:.7f}")
print(f"kquant.dequantize: {kquant.dequantize(block[None, :], 'Q4_K')[0, e]:.7f};  llama.cpp: {reference.dequantize(ggml[None, :], 'Q4_K')[0, e]:.7f};  the weight was {x[e]:.7f}")

# %% [markdown]
"""
### Exercise 3 (decode a block)

Complete `dequantize_q4_k(block)`: from 144 bytes, return all 256 weights (float32), as
llama.cpp decodes them. You may use `q4_k.unpack_scales` (or your `get_scale_min_k4`).
"""

# %% answer q3
def dequantize_q4_k(block):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(dequantize_q4_k)

# %% [markdown]
"""
## 7. Your own Q4_K block

### Exercise 4 (encode a block, byte for byte)

Complete `my_q4_k_block(x)`: from 256 float32 weights, return the 144 bytes of their Q4_K
block by running the four steps of sections 2–5 yourself with the `q4_k` functions used
there. The check compares your bytes with the ones llama.cpp's C code writes, on fresh
random blocks.
"""

# %% answer q4
def my_q4_k_block(x):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q4
ex.q4.check(my_q4_k_block)

# %% [markdown]
"""
The same four steps, run by `kquant.quantize` on the whole matrix, give llama.cpp's bytes
for all of its super-blocks. At the same 4.5 bits per weight as Q4_0, how do the two
formats compare on these weights?
"""

# %%
W = sample.weights
for name in ["Q4_0", "Q4_K"]:
    q = kquant.quantize(W, name)
    print(f"{name}: {kquant.get_format(name).bits_per_weight} bits/weight, equals llama.cpp's bytes: {np.array_equal(q, reference.quantize(W, name))}, SQNR {metrics.sqnr_db(W, kquant.dequantize(q, name)):.1f} dB")

# %% [markdown]
"""
## Summary

* A Q4_K super-block is 256 weights in 8 sub-blocks of 32: 2 float16 super-scales, 12 bytes
  of 6-bit scales and mins, 128 bytes of 4-bit levels: 144 bytes, 4.5 bits per weight.
* Each sub-block's scale and min come from a weighted search: 21 candidate grids, a
  least-squares fit for each, the smallest weighted error kept. No clustering: the "K" of
  k-quants does not mean k-means.
* The 16 sub-block numbers are quantized to 6 bits under *d* and *dmin*, the weights are
  rounded again against them, and everything is packed: scales and mins in a split 12-byte
  layout, levels as nibbles 32 weights apart.
* Decoding is *y* = *d*·*sc<sub>j</sub>*·*q* − *dmin*·*m<sub>j</sub>*, and following the
  four steps exactly gives llama.cpp's bytes.
"""
