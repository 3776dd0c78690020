# %% [markdown]
"""
# 03 · Blocks

Notebook 02 ended with one outlier ruining a whole tensor's scale. The cure every llama.cpp
format uses: cut each row into small **blocks** (short runs of consecutive weights) and give
every block its own scale. This
notebook measures what that buys and what it costs, then writes a real llama.cpp block.

**After this notebook you will be able to**

* quantize with one scale per block and choose a block size from measured numbers;
* compute a format's real bits per weight, scale overhead included (Q4_0 is 4.5, not 4);
* show that an outlier only coarsens its own block;
* encode a Q4_0 block by hand and get exactly the 18 bytes llama.cpp writes.

Terms (block, bits per weight, type-0 / type-1, …) are defined in the [glossary](../docs/glossary.md).
"""

# %%
import numpy as np
from ipywidgets import IntSlider, SelectionSlider, fixed, interact

import kquant
from kquant.lessons import scale_zero_point, metrics, samples
from kquant import viz
from kquant.reference import recorded  # llama.cpp's bytes; without it, checked against its recorded sha256
from kquant.formats import q4_0
from kquant.exercises import nb03 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 1. One scale per block

The same weights as in notebook 02 (the line below says where they come from). Cut every
row into blocks of *B* weights, and quantize each block with absmax at 4 bits and
its own scale. Each scale costs 16 bits (a float16), shared by *B* weights, so the real
cost is 4 + 16/*B* bits per weight.
"""

# %%
sample = samples.example_weights()
W = sample.weights
print("source:", sample.source)
print(f"{'block size':>10} {'bits/weight':>12} {'SQNR':>8} {'stored as 0':>12}")
blocked = []
for B in [8, 16, 32, 64, 128, 256, W.shape[1], None]:
    w_hat = scale_zero_point.fake_quantize(W, 4, "absmax", B)
    bpw = 4.0 if B is None else scale_zero_point.bits_per_weight(4, B)
    db = metrics.sqnr_db(W, w_hat)
    blocked.append((bpw, db, "tensor" if B is None else str(B)))
    print(f"{'tensor' if B is None else B:>10} {bpw:>12.3f} {db:>6.1f} dB {np.mean(w_hat == 0):>12.0%}")

# %% [markdown]
"""
Smaller blocks, better SQNR, more overhead. Is that a good deal? Compare with the other way
to spend bits: a per-tensor scale with more bits per weight.
"""

# %%
per_tensor = [(b, metrics.sqnr_db(W, scale_zero_point.fake_quantize(W, b)), f"{b} bits") for b in range(4, 9)]
viz.tradeoff_plot({"4-bit absmax, one scale per block (block size)": blocked, "absmax, one scale per tensor": per_tensor},
                  "Small blocks beat extra bits: SQNR against the real cost", label_offsets=[(6, -3), (-6, 6)])

# %% [markdown]
"""
How many bits per weight would a per-tensor code need to match blocks of 32 at 4.5?
"""

# %%
b32 = metrics.sqnr_db(W, scale_zero_point.fake_quantize(W, 4, "absmax", 32))
need = next(b for b in range(4, 17) if metrics.sqnr_db(W, scale_zero_point.fake_quantize(W, b)) >= b32)
print(f"blocks of 32: {b32:.1f} dB at 4.5 bits/weight; a per-tensor code needs {need} bits/weight to do as well "
      f"({need - 4.5:g} bits/weight more)")

# %% [markdown]
"""
Blocks win by a wide margin (the line above), which is why ggml's formats use blocks of
32 weights, each with its own scale.

### Try it: the block-size slider

Left: the first 256 weights of row 0 and each block's ±max|w|, the range its 4-bit grid
must cover. Right: the error histogram of the whole tensor, with the real bits per weight.
"""

# %%
interact(viz.block_view, w=fixed(W), block_size=SelectionSlider(options=[8, 16, 32, 64, 128, 256, W.shape[1]], value=32, description="block size"),
         bits=IntSlider(value=4, min=2, max=8, description="bits"), row=fixed(0), show=fixed(256));

# %% [markdown]
"""
### Exercise 1 (block-wise absmax)

Complete `blockwise_absmax(w, bits, block_size)`: quantize each run of `block_size`
weights along the rows of `w` with its own absmax scale, and return the dequantized
tensor ŵ (same shape as `w`).
"""

# %% answer q1
def blockwise_absmax(w, bits, block_size):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(blockwise_absmax)

# %% [markdown]
"""
## 2. An outlier stays in its block

Make the largest weight 10 times larger, as in notebook 02, and compare the error of every
weight in its row: one scale for the tensor against one scale per 32 weights. The figure
draws each weight's |error| (thin lines) and the RMS error of each block of 32 (steps). The
orange steps (blocks of 32, with the outlier) lie under the green ones (blocks of 32,
without it) everywhere except in the outlier's own block.
"""

# %%
w_out, others = scale_zero_point.scale_largest(W, 10)
row, col = np.unravel_index(np.argmax(np.abs(w_out)), W.shape)
per_tensor_err = (w_out - scale_zero_point.fake_quantize(w_out, 4))[row]
per_block_err = (w_out - scale_zero_point.fake_quantize(w_out, 4, "absmax", 32))[row]
no_outlier_err = (W - scale_zero_point.fake_quantize(W, 4, "absmax", 32))[row]
for name, w_hat in [("per tensor", scale_zero_point.fake_quantize(w_out, 4)), ("per block of 32", scale_zero_point.fake_quantize(w_out, 4, "absmax", 32))]:
    print(f"{name:>15}: SQNR of the other weights {metrics.sqnr_db(w_out[others], w_hat[others]):5.1f} dB")
hurt = np.abs(per_block_err) > np.abs(no_outlier_err) + 1e-12
blocks_hurt = sorted({int(j) // 32 for j in np.flatnonzero(hurt)})
print(f"row {row}: {np.count_nonzero(hurt)} weights got a larger error with blocks of 32, in blocks {blocks_hurt}; the outlier is in block {col // 32}")
viz.error_along_row({"one scale per tensor": per_tensor_err, "one scale per 32 weights": per_block_err,
                     "one scale per 32 weights, no outlier": no_outlier_err}, col, f"Row {row}: the outlier only coarsens its own block of 32")

# %% [markdown]
"""
## 3. ggml's block formats

llama.cpp's legacy formats are exactly this: blocks of 32 weights with a float16 scale
(and, for the `_1` types, a float16 minimum: an offset like a zero point, but stored as a
float). llama.cpp's own words for the two designs are **type-0** (*x* = *d* · *q*,
symmetric: Q4_0, Q5_0, Q8_0) and **type-1** (*x* = *d* · *q* + *m*, asymmetric: Q4_1, Q5_1).
The scales were not always float16: the first Q4_0 and Q4_1 stored a float32 scale (and
min), 20 and 24 bytes per block, 5 and 6 bits per weight, until llama.cpp pull request
#1508 ("ggml : use F16 instead of F32 in Q4_0, Q4_1, Q8_0", May 2023) changed the format. `kquant` knows each format's block geometry, taken from llama.cpp's own tables
(`gguf`'s `GGML_QUANT_SIZES`). Bits per weight = 8 × bytes per block / weights per block:
"""

# %%
print(f"{'type':>5} {'weights/block':>14} {'bytes/block':>12} {'bits/weight':>12} {'SQNR on W':>10}")
formats = []
for name in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]:
    fmt = kquant.get_format(name)
    w_hat = kquant.dequantize(kquant.quantize(W, name), name)
    db = metrics.sqnr_db(W, w_hat)
    formats.append((fmt.bits_per_weight, db, name))
    print(f"{name:>5} {fmt.block_size:>14} {fmt.type_size:>12} {fmt.bits_per_weight:>12} {db:>8.1f} dB")
print("Q4_0's scale costs", kquant.get_format("Q4_0").bits_per_weight - 4, "bits per weight: 16 bits / 32 weights")
q4_0_db = dict((n, db) for _, db, n in formats)["Q4_0"]
print(f"Q4_0 {q4_0_db:.1f} dB against section 1's 4-bit absmax blocks of 32 {b32:.1f} dB, both 4.5 bits/weight: "
      f"{q4_0_db - b32:+.1f} dB; a step 7/8 as large predicts 20·log10(8/7) = {20 * np.log10(8 / 7):+.1f} dB")

# %% [markdown]
"""
A common claim says *"Q4 means 4 bits per weight"*. The table says otherwise: Q4_0 takes
4.5 bits per weight and Q4_1 5.0; likewise Q8_0 takes 8.5, not 8. The extra half bit is
the float16 scale shared by 32 weights.

Q4_0 also beats section 1's absmax blocks of 32 at the same 4.5 bits per weight (the last
line above). Both store a float16 scale and 4-bit levels, but absmax uses 15 levels
(−7..7) and Q4_0 all 16 (−8..7, explained next): its step is the largest magnitude divided
by 8 instead of by 7, so every rounding error shrinks by 7/8.

## 4. A Q4_0 block by hand

Q4_0 differs from the absmax of section 1 in one detail. Its levels run from −8 to 7, one
more on the negative side, and it divides the **signed** largest-magnitude weight by −8,
so that weight lands exactly on −8, the long end:

*d* = max / −8,  *q* = min(15, trunc(*x* / *d* + 8.5)),  *x* ≈ *d* · (*q* − 8).

Adding 8.5 and truncating rounds halves *up* (notebook 01's `half_up`); the stored level
*q* = 0..15 is the signed level plus 8. The encoder `kquant.formats.q4_0.encode` does this
in float32 as the C code does; here are its fields for the first block of `W`:
"""

# %%
x = W[0, :32]
fields = q4_0.encode(x[None, :])
d = fields.d[0]
signed_max = x[np.argmax(np.abs(x))]
print(f"signed largest weight {signed_max:+.6f};  d = max / -8 = {signed_max / -8:+.6f} -> stored as float16 {d}")
for j in sorted({int(np.argmax(np.abs(x))), 0, 1, 16}):
    print(f"weight {j:2d}: x = {x[j]:+.6f}   x/d + 8 = {x[j] / np.float32(signed_max / -8) + 8:6.3f}   stored level q = {fields.q[0, j]:2d}   decodes to {(int(fields.q[0, j]) - 8) * np.float32(d) + 0.0:+.6f}")

# %% [markdown]
"""
### Exercise 2 (Q4_0 levels)

Complete `q4_0_levels(x)`: the 32 stored levels (0..15) of the block `x` (32 float32
weights), computed exactly as ggml does, in float32 (`id` = 1/*d*, or 0 when *d* is 0;
*q* = min(15, trunc(*x* · id + 8.5))). The check compares with llama.cpp's levels,
exact ties included.
"""

# %% answer q2
def q4_0_levels(x):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(q4_0_levels)

# %% [markdown]
"""
The 18 bytes: first *d* as a little-endian float16, then 16 bytes of nibbles. Byte *j*
holds weight *j* in its low 4 bits and weight *j* + 16 in its high 4 bits (not neighbours:
that pairing lets the decoder split a byte into two halves of the block with one mask and
one shift each). `q4_0.pack` writes that layout; compare its bytes with the ones llama.cpp's
C code writes for the same block (`kquant.reference.recorded` calls it):
"""

# %%
ours = q4_0.pack(fields)[0]
ggml = recorded.quantize(x[None, :], "Q4_0")[0]
print("ours:     ", ours.tobytes().hex(" "))
print("llama.cpp:", ggml.tobytes().hex(" "))
print("identical:", np.array_equal(ours, ggml))
print(f"byte 2 = {ours[2]:08b}: low nibble {ours[2] & 15} = q[0] = {fields.q[0, 0]}, high nibble {ours[2] >> 4} = q[16] = {fields.q[0, 16]}")
viz.block_bytes(ours, [("d (float16)", 0, 2), ("qs: q[j] | q[j+16] << 4", 2, 18)], "One Q4_0 block: 18 bytes for 32 weights")

# %% [markdown]
"""
And not just this block: every block of `W` matches.
"""

# %%
print(f"all {W.size // 32} blocks of W, byte for byte:", np.array_equal(kquant.quantize(W, "Q4_0"), recorded.quantize(W, "Q4_0")))

# %% [markdown]
"""
### Exercise 3 (pack a block)

Complete `pack_q4_0(d, q)`: given the float16 scale `d` and the 32 levels `q` (0..15),
return the 18 bytes of the block (a `bytes` object or a uint8 array).
"""

# %% answer q3
def pack_q4_0(d, q):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(pack_q4_0)

# %% [markdown]
"""
### Exercise 4 (decode a block)

Complete `dequantize_q4_0(block)`: from the 18 bytes of a Q4_0 block, return its 32
weights as float32, exactly as llama.cpp decodes them: (*q* − 8) · *d*.
"""

# %% answer q4
def dequantize_q4_0(block):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q4
ex.q4.check(dequantize_q4_0)

# %% [markdown]
"""
## Summary

* A scale per block of *B* weights costs 16/*B* bits per weight and buys far more SQNR
  than spending the same bits on a finer per-tensor grid.
* An outlier coarsens only its own block: the other blocks of its row keep their errors.
* ggml's legacy formats are blocks of 32 with a float16 scale (and a float16 minimum for
  the type-1 `_1` formats): Q4_0 = 18 bytes = 4.5 bits per weight, Q8_0 = 8.5. "Q4" is not
  4 bits. (Until May 2023 the scales were float32, and Q4_0 was 5 bits per weight.)
* Q4_0 uses all 16 levels of its 4 bits, absmax 15: at the same cost, a finer grid.
* Q4_0 maps the signed largest weight to −8 and rounds halves up; written that way, in
  float32, our bytes equal llama.cpp's, block after block.

Next, **04 · Q4_K**: blocks of blocks, with the block scales themselves quantized.
"""
