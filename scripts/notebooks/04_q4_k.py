# %% [markdown]
"""
# 04 · Q4_K, the super-block

Q4_K is the format most tensors of a "Q4_K_M" model file are stored in. It is a
**K-quant**, one of the formats of llama.cpp pull request #1684 ("k-quants"), which share a
256-weight **super-block**. It keeps Q4_1's idea (a scale and a minimum per 32 weights: a
type-1 format) but stores those scales and minimums themselves in 6 bits, under
two float16 numbers shared by 256 weights. This notebook follows llama.cpp's encoder one
step at a time, on one super-block, and ends with your own Q4_K block, byte for byte
llama.cpp's.

**After this notebook you will be able to**

* lay out a Q4_K super-block: 256 weights, 8 sub-blocks of 32, 144 bytes, 4.5 bits per weight;
* explain the weighted search that picks each sub-block's scale and minimum, and why its
  moving origin matters for the bytes;
* quantize the 16 sub-block numbers to 6 bits under the two float16 super-scales;
* read the 12 bytes that pack those 16 six-bit numbers, bit by bit;
* decode a 144-byte block by hand, and encode one exactly as llama.cpp does.

Terms (super-block, K-quant, type-1, …) are defined in the [glossary](../docs/glossary.md).
"""

# %%
import numpy as np
from ipywidgets import IntSlider, fixed, interact

import kquant
from kquant.lessons import metrics, samples, scale_search
from kquant import viz
from kquant.reference import recorded  # llama.cpp's bytes; without it, checked against its recorded sha256
from kquant.formats import q4_k
from kquant.exercises import nb04 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

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
`samples.example_weights().source` says which). The encoder first fits every sub-block on
its own: it looks for the scale and min with which `scale · L + min` (levels *L* in 0..15)
comes closest to the 32 weights, in a *weighted* squared error Σ *w<sub>i</sub>* (scale · *L<sub>i</sub>* + min − *x<sub>i</sub>*)².
Each weight's error counts with an **importance** *w<sub>i</sub>* = |*x<sub>i</sub>*| + the
sub-block's root-mean-square, so large weights are fitted more closely and none counts for
nothing (`quantize_row_q4_K_ref` in `ggml-quants.c`; the C code calls the array `weights`,
kquant `q4_k.subblock_weights`). With an **importance matrix** (per-column statistics of
the activations, collected by running the model on text; notebook 10) the factors change;
here there is none. The importance factors of sub-block 0:
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
The search is `make_qkx2_quants` in `ggml/src/ggml-quants.c`. It keeps a running
**origin**, the value that level 0 stands for, and a best-so-far candidate:

1. **Start**: the origin is the smallest weight (or 0 if all are positive) and the grid
   has 15 steps from there to the largest weight: step = (max − origin) / 15. Its error is
   the one to beat.
2. **Candidates** *i* = 0..20: a grid from the *current origin* with step
   (max − origin) / (14 + 0.1·*i*), slightly wider to slightly narrower than the start.
   Round every weight onto it, *L* = round((*x* − origin) / step) clamped to 0..15, and
   solve a small weighted least-squares problem: which scale and min best explain *those*
   levels? If that fit has a smaller weighted error than the best so far, it becomes the
   best, **and its fitted min becomes the origin of every later candidate**.

So the 21 grids are not fixed in advance: after a win, both their origin and their step
are computed from the new min. `kquant.lessons.scale_search` runs ggml's search
(`kquant.formats.search.make_qkx2_quants`) on this one sub-block and records every
candidate; the origin column shows where each grid started:
"""

# %%
trace = scale_search.qkx2_trace(sub, importance)
origins = scale_search.origins(trace)
print(f"{'grid':>5} {'origin':>9} {'step':>9} {'fitted scale':>13} {'fitted min':>11} {'weighted error':>15}")
print(f"{'start':>5} {trace.initial.min:9.5f} {trace.initial.step:9.5f} {trace.initial.scale:13.5f} {trace.initial.min:11.5f} {trace.initial.error:15.4e}")
for i, (c, origin) in enumerate(zip(trace.candidates, origins)):
    print(f"{i:>5} {origin:9.5f} {c.step:9.5f} {c.scale:13.5f} {c.min:11.5f} {c.error:15.4e}{'  <- best so far' if c.best_so_far else ''}")
first_move = next((i for i, o in enumerate(origins) if o != trace.initial.min), None)
print(f"the origin first moves at candidate {first_move}: from there on the grids start at a fitted min, not at the data min")

# %% [markdown]
"""
The fitted min is printed negative: the grid starts *below* zero, and the sub-block
decodes as scale · *L* + min. Q4_K stores its negation, *m* = −min ≥ 0 (`*the_min = -min`
in the C code), and the decoder subtracts it: scale · *L* − *m*. A positive number fits
the unsigned 6-bit integer that holds it (step 2). When every weight is positive the min
is 0, and a fit that would want a positive min is redone with min = 0.

Does the moving origin matter? Write the search out in numpy with one switch,
`move_origin`, run it on every sub-block of the whole matrix, finish each Q4_K block with
the package's own steps 2–4 (sections 3–5 below), and compare the bytes with the ones
llama.cpp's C code writes (`kquant.reference.recorded.quantize`). With the origin moving, as
in C, every super-block must come out identical, which checks the transcription. With the
origin frozen at the data min, the only change, count the super-blocks that differ:
"""

# %%
from kquant.formats import cops

f32, nearest_int, seqsum = cops.f32, cops.nearest_int, cops.seqsum  # C's float32, nearest_int, in-order sums


def make_qkx2(x, w, move_origin=True, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20):
    """make_qkx2_quants for many groups at once: x, w (32, G) float32 -> scale, m (= -min), L."""
    with np.errstate(all="ignore"):  # a flat group divides by 0, as in C; it is handled at the end
        lo, hi = np.minimum(x.min(axis=0), f32(0)), x.max(axis=0)
        sum_w, sum_x = seqsum(w), seqsum(w * x)  # C's sums run in order: seqsum, not np.sum
        iscale = f32(nmax) / (hi - lo)
        scale = f32(1) / iscale
        L = np.clip(nearest_int(iscale * (x - lo)), 0, nmax).astype(f32)
        diff = scale * L + lo - x
        best = seqsum(w * (diff * diff))
        origin = best_min = lo
        for i in range(nstep + 1):
            iscale = (f32(rmin) + f32(rdelta) * f32(i) + f32(nmax)) / (hi - origin)
            l = np.clip(nearest_int(iscale * (x - origin)), 0, nmax).astype(f32)
            s_l, s_l2, s_xl = seqsum(w * l), seqsum(w * l * l), seqsum(w * l * x)
            D = sum_w * s_l2 - s_l * s_l
            this_scale, this_min = (sum_w * s_xl - sum_x * s_l) / D, (s_l2 * sum_x - s_l * s_xl) / D
            positive = this_min > 0
            this_scale, this_min = np.where(positive, s_xl / s_l2, this_scale), np.where(positive, f32(0), this_min)
            diff = this_scale * l + this_min - x
            cur = seqsum(w * (diff * diff))
            better = (D > 0) & (cur < best)
            best, scale = np.where(better, cur, best), np.where(better, this_scale, scale)
            best_min, L = np.where(better, this_min, best_min), np.where(better, l, L)
            if move_origin:  # ggml: min = this_min, used by every later candidate
                origin = best_min
        flat = hi == lo  # all weights equal: levels 0, scale 0
        return np.where(flat, f32(0), scale), -np.where(flat, lo, best_min), np.where(flat, 0, L).astype(np.uint8)


def q4_k_blocks(W, move_origin):
    """Q4_K super-blocks of W with the search above, then the package's steps 2-4."""
    x = np.asarray(W, dtype=np.float32).reshape(-1, 256)
    n = x.shape[0]
    xt = np.ascontiguousarray(x.reshape(n * 8, 32).T)  # (32, 8n): one sub-block per column
    scales, mins, L = make_qkx2(xt, q4_k.subblock_weights(xt), move_origin)
    d, dmin, sc, m = q4_k.quantize_scales(scales.reshape(n, 8), mins.reshape(n, 8))
    L = q4_k.requantize(xt, L, d, dmin, sc, m, nmax=15)
    return q4_k.pack(q4_k.Fields(d, dmin, sc, m, np.ascontiguousarray(L.T).reshape(n, 256)))


W = sample.weights
ggml_blocks = recorded.quantize(W, "Q4_K").reshape(-1, 144)
for move_origin in (True, False):
    blocks = q4_k_blocks(W, move_origin)
    differ = np.any(blocks != ggml_blocks, axis=1)
    y = kquant.dequantize(blocks.reshape(W.shape[0], -1), "Q4_K")
    print(f"origin {'moving (as ggml)' if move_origin else 'frozen at the data min'}: {differ.sum()} of {differ.size} super-blocks "
          f"differ from llama.cpp's ({differ.mean():.0%}); SQNR {metrics.sqnr_db(W, y):.2f} dB")
xt_all = np.ascontiguousarray(W.astype(np.float32).reshape(-1, 32).T)  # every sub-block of W, one per column
fits = [make_qkx2(xt_all, q4_k.subblock_weights(xt_all), move_origin) for move_origin in (True, False)]
changed = (fits[0][0] != fits[1][0]) | (fits[0][1] != fits[1][1])
print(f"sub-blocks whose scale or m the frozen search changes: {changed.sum()} of {changed.size} ({changed.mean():.0%}); "
      f"super-blocks with at least one of them: {changed.reshape(-1, 8).any(axis=1).mean():.0%}")

# %% [markdown]
"""
The frozen search is a reasonable quantizer (its SQNR is close), but it is not
llama.cpp's: most super-blocks get other bytes. The last line says why so many: the frozen
search changes the scale or *m* of only some sub-blocks, but a super-block has eight, so
most super-blocks contain at least one changed sub-block. Not every such change reaches the
bytes (step 2 rounds scales and mins to 6 bits, which can absorb a small change), which is
why fewer super-blocks differ in their bytes than contain a changed sub-block.
Byte-exactness needs the search exactly as ggml runs it, moving origin included.

The encoder runs the same search for all eight sub-blocks at once (`q4_k.subblock_fit`),
with the same importance factors; its winner for sub-block 0 is bit for bit the one traced
above:
"""

# %%
xt = np.ascontiguousarray(x.reshape(8, 32).T)  # (32, 8): one sub-block per column
scales, mins, L = q4_k.subblock_fit(xt, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
print("sub-block 0, traced search: scale", trace.scale, " m = -min", trace.the_min)
print("sub-block 0, q4_k.subblock_fit: scale", float(scales[0]), " m = -min", float(mins[0]))
print("identical:", np.float32(trace.scale) == scales[0] and np.float32(trace.the_min) == mins[0] and np.array_equal(trace.levels, L[:, 0]))

# %% [markdown]
"""
### Try it: the search in every sub-block

Left: the weighted error of each candidate grid against its step; grey points are grids
from the data min, orange ones grids tried after a win moved the origin; the square is the
plain min/max start, the star the winner. Right: the sub-block's weights and what the
winner stores for them. The errors jump about because moving the grid a little changes
which level some weights round to, which is why ggml tries a series of candidates instead
of solving for one best step.
"""

# %%
interact(viz.scale_search_view, x=fixed(x), j=IntSlider(value=0, min=0, max=7, description="sub-block"));

# %% [markdown]
"""
A common claim says the "K" in Q4_K stands for *k-means clustering*: similar weights grouped
and replaced by centroids from a lookup table. The steps above are the whole search: a
series of 21 candidate grids, a least-squares fit for each, the best one kept; and the levels
are an evenly spaced grid, `scale · L + min`. No clustering, no centroids, no lookup table.
The name comes from llama.cpp pull request #1684, "k-quants" (ikawrakow, June 2023), which
introduced the family with its 256-weight super-block (`QK_K = 256`); no expansion of the
letter is documented there.

## 3. Step 2: six-bit scales and mins under two float16 numbers

Stored as float16, eight scales and eight mins would cost 16 × 16 bits per 256 weights,
a whole bit per weight (Q4_1's overhead). Q4_K quantizes them too: *d* = max scale / 63 and
*dmin* = max *m* / 63 are stored as float16, and each scale and each *m* (the positive
min of step 1) as a 6-bit integer (0..63) times *d* or *dmin*:
"""

# %%
d, dmin, sc, m = q4_k.quantize_scales(scales[None, :], mins[None, :])
print(f"d = {scales.max():.6f} / 63 -> float16 {d[0]};   dmin = {mins.max():.6f} / 63 -> float16 {dmin[0]}")
print(f"{'j':>2} {'scale':>10} {'sc':>3} {'d·sc':>10} {'-min':>10} {'m':>3} {'dmin·m':>10}")
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
ggml = recorded.quantize(x[None, :], "Q4_K")[0]
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
print(f"kquant.dequantize: {kquant.dequantize(block[None, :], 'Q4_K')[0, e]:.7f};  llama.cpp: {recorded.dequantize(ggml[None, :], 'Q4_K')[0, e]:.7f};  the weight was {x[e]:.7f}")

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
    print(f"{name}: {kquant.get_format(name).bits_per_weight} bits/weight, equals llama.cpp's bytes: {np.array_equal(q, recorded.quantize(W, name))}, SQNR {metrics.sqnr_db(W, kquant.dequantize(q, name)):.1f} dB")

# %% [markdown]
"""
## Summary

* A Q4_K super-block is 256 weights in 8 sub-blocks of 32: 2 float16 super-scales, 12 bytes
  of 6-bit scales and mins, 128 bytes of 4-bit levels: 144 bytes, 4.5 bits per weight.
* Each sub-block's scale and min come from a weighted search (importance |*x*| + RMS): 21
  candidate grids, a least-squares fit for each, the smallest weighted error kept. The
  grid's origin moves to each new winner's min; freezing it changes most super-blocks'
  bytes. No clustering: the "K" of k-quants does not mean k-means.
* The 16 sub-block numbers are quantized to 6 bits under *d* and *dmin*, the weights are
  rounded again against them, and everything is packed: scales and mins in a split 12-byte
  layout, levels as nibbles 32 weights apart.
* Decoding is *y* = *d*·*sc<sub>j</sub>*·*q* − *dmin*·*m<sub>j</sub>*, and following the
  four steps exactly gives llama.cpp's bytes.
"""
