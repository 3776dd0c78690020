# %% [markdown]
"""
# 02 · Scale and zero point

Notebook 01 rounded single numbers onto a fixed grid. A weight tensor needs a grid that
fits *its* values: a **scale** (how far apart the levels are) and, sometimes, a **zero
point** (where the levels start). This notebook quantizes a whole weight matrix both ways.

**After this notebook you will be able to**

* quantize a tensor symmetrically (absmax) and asymmetrically (scale and zero point);
* read an error histogram and relate its width to the step size and the bit depth;
* explain, with numbers, why one outlier ruins a per-tensor scale.

Terms are defined in the [glossary](../docs/glossary.md).
"""

# %%
import math

import numpy as np
from ipywidgets import Dropdown, FloatSlider, IntSlider, fixed, interact

from kquant.lessons import scale_zero_point, metrics, samples
from kquant import viz
from kquant.exercises import nb02 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 1. The weights

One weight matrix of a linear layer (rows are outputs, columns inputs): the feed-forward
down projection of a middle layer of the workbook's own model (notebook 00 says where it
comes from). If the model file is missing, `kquant.lessons.samples` makes synthetic weights shaped
like a transformer's instead; the first line printed says which you got.
"""

# %%
sample = samples.example_weights()
W = sample.weights
sigma = W.std()
print("source:", sample.source)
print(f"shape {W.shape} = {W.size:,} weights; mean {W.mean():+.5f}, std {sigma:.5f}")
print(f"largest |w| = {np.abs(W).max():.4f} = {np.abs(W).max() / sigma:.1f} standard deviations")
print(f"weights beyond 4 std: {np.mean(np.abs(W) > 4 * sigma):.2%} (a Gaussian would have {math.erfc(4 / math.sqrt(2)):.4%})")
viz.weight_histogram(W, "The example weights (log scale: the tails are visible)")

# %% [markdown]
"""
## 2. Symmetric quantization: absmax

Give the tensor one scale *s* and store each weight as the integer *q* = round(*w* / *s*).
With *b* bits the levels run from −(2<sup>b−1</sup> − 1) to 2<sup>b−1</sup> − 1 (−127..127 for
8 bits), and the scale maps the largest magnitude onto the top level:

*s* = max|*w*| / (2<sup>b−1</sup> − 1),  *q* = round(*w* / *s*),  *ŵ* = *s* · *q*.

That is 2<sup>b</sup> − 1 levels, an odd number: one of the 2<sup>b</sup> codes goes unused so
that the grid is symmetric around 0 and 0 is a level (the picture in notebook 00 used all
2<sup>b</sup> and had no 0). Here are the first weights at 8 bits:
"""

# %%
qz = scale_zero_point.absmax_quantize(W, bits=8)
s = qz.scale[0, 0]
print(f"s = max|w| / 127 = {np.abs(W).max():.5f} / 127 = {s:.3e}")
for w, q in zip(W.ravel()[:6], qz.q.ravel()[:6]):
    print(f"w = {w:+.5f}   w/s = {w / s:+8.3f}   q = {q:+4d}   ŵ = q·s = {q * s:+.5f}   error {w - q * s:+.1e}")
err = W - qz.dequantize()
print(f"largest error {np.abs(err).max():.3e} <= s/2 = {s / 2:.3e}: {np.abs(err).max() <= s / 2}")
print(f"SQNR at 8 bits: {metrics.sqnr_db(W, qz.dequantize()):.1f} dB")

# %% [markdown]
"""
### Exercise 1 (absmax)

Complete `absmax_quantize(w, bits)`: return the tuple `(q, scale)`, with `scale` a number
and `q` an array of integer levels shaped like `w`, as defined above.
"""

# %% answer q1
def absmax_quantize(w, bits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(absmax_quantize)

# %% [markdown]
"""
## 3. Asymmetric quantization: scale and zero point

A symmetric grid wastes levels when the values are not centred on 0: for an all-positive
tensor, every negative level goes unused. The asymmetric scheme stretches the 2<sup>b</sup>
levels 0 .. 2<sup>b</sup> − 1 over [min, max] instead, and shifts them by an integer
**zero point** *z*, the level that stands for 0:

*s* = (max − min) / (2<sup>b</sup> − 1),  *z* = round(−min / *s*),  *q* = round(*w* / *s*) + *z*,  *ŵ* = *s* · (*q* − *z*).

Because *z* is an integer, 0 is stored exactly (that needs 0 inside [min, max], so the range
is widened to include it). Compare the two schemes at 4 bits, on *W* and on the all-positive
tensor |*W*|:
"""

# %%
n_levels = {"absmax": 2**4 - 1, "zero point": 2**4}  # -7..7 and 0..15
for name, tensor in [("W (centred)", W), ("|W| (all positive)", np.abs(W))]:
    for scheme, quantize in scale_zero_point.SCHEMES.items():
        qz = quantize(tensor, 4)
        print(f"{name:>19}, {scheme:>10}: {np.unique(qz.q).size:2d} of {n_levels[scheme]} levels in use, SQNR {metrics.sqnr_db(tensor, qz.dequantize()):5.1f} dB")
qz = scale_zero_point.zero_point_quantize(np.array([-0.3, 0.0, 0.2, 1.0]), 4)
print("zero point", qz.zero[0, 0], "-> the weight 0.0 comes back as", qz.dequantize()[1])

# %% [markdown]
"""
At 4 bits absmax has 15 levels (−7..7) and the zero point 16 (0..15). On the all-positive
tensor the zero point pays off: about twice the levels in use, and a higher SQNR (absmax
leaves every negative level unused). On the centred tensor both schemes are close; the zero point costs an extra number per tensor (per block,
in the next notebook), so formats use it where data is lopsided.

### Exercise 2 (zero point)

Complete `zero_point_quantize(w, bits)`: return `(q, scale, zero)` as defined above, with
[min, max] widened to include 0 and `zero` a whole number.
"""

# %% answer q2
def zero_point_quantize(w, bits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(zero_point_quantize)

# %% [markdown]
"""
## 4. Error histograms, bit by bit

The error *w* − *ŵ* of a weight that lands inside the grid is at most half a step, and
over many weights it spreads evenly over ±*s*/2. Each bit halves *s*. First the numbers:
"""

# %%
print(f"{'bits':>4} {'absmax SQNR':>12} {'zero-point SQNR':>16} {'stored as 0 (absmax)':>21}")
for bits in range(2, 9):
    a, z = scale_zero_point.fake_quantize(W, bits, "absmax"), scale_zero_point.fake_quantize(W, bits, "zero point")
    print(f"{bits:>4} {metrics.sqnr_db(W, a):>10.1f} dB {metrics.sqnr_db(W, z):>13.1f} dB {np.mean(a == 0):>20.0%}")

# %% [markdown]
"""
About 6 dB per bit once the grid is fine enough, as in notebook 01. At 2–4 bits something
else happens: the largest weight stretches the grid so far that most weights round to 0.

### Try it: the bit-depth slider

Left: the weights and the levels the code can store. Right: how many weights have each
size of rounding error |*w* − *ŵ*|, on a log2 axis that stays the same at every bit depth.
The dashed line is half a step, the worst error of a weight inside the grid. One bit more
halves the step, so the whole histogram moves one octave (one factor of 2) to the left:
from 4 to 8 bits it moves four. Slide down to 2 bits: nearly every weight is stored as 0,
and its error is its whole value.
"""

# %%
interact(viz.quant_error_view, w=fixed(W), bits=IntSlider(value=4, min=2, max=8, description="bits"), scheme=Dropdown(options=list(scale_zero_point.SCHEMES), description="scheme"), block_size=fixed(None));

# %% [markdown]
"""
### Exercise 3 (SQNR)

Complete `sqnr_db(w, w_hat)`: the signal-to-quantization-noise ratio of `w_hat` as a copy of
`w`, in decibels, the measure used in every table above. Decide first what the "signal" and
the "noise" are, and that both are *powers* (what do decibels of a power ratio use, 10 or 20?);
the check tries tensors whose mean is far from 0 too.
"""

# %% answer q3
def sqnr_db(w, w_hat):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(sqnr_db)

# %% [markdown]
"""
## 5. What one outlier does

The per-tensor scale is set by a single number: the largest |*w*|. Make that one weight
larger and the step grows with it, for every weight of the tensor. Measure it at 8 bits, where
the tensor did well in section 4: multiply the largest weight by a gain, quantize, and
compute the SQNR of all the *other* weights.
"""

# %%
gains = np.linspace(1, 20, 39)
curve = []
for g in gains:
    w_g, others = scale_zero_point.scale_largest(W, g)
    curve.append(metrics.sqnr_db(w_g[others], scale_zero_point.fake_quantize(w_g, 8)[others]))
for g, c in list(zip(gains, curve))[::8]:
    print(f"largest weight x{g:4.1f}: the others' SQNR {c:5.1f} dB, down {curve[0] - c:4.1f} dB;  20·log10({g:g}) = {20 * np.log10(g):4.1f} dB")

# %% [markdown]
"""
### Try it: the outlier slider
"""

# %%
interact(viz.outlier_view, w=fixed(W), gain=FloatSlider(value=1.0, min=1.0, max=20.0, step=0.5, description="gain"), gains=fixed(gains), curve=fixed(curve), bits=fixed(8));

# %% [markdown]
"""
One weight out of hundreds of thousands decides the precision of all the others: once it sets the
scale, making it *g* times larger costs everyone else 20·log<sub>10</sub>(*g*) dB (6 dB,
one bit's worth, per doubling), as the printout shows. The remedy is to stop
sharing one scale across the whole tensor: give every small **block** of weights its own,
so an outlier only coarsens its own block. That is notebook 03, and it is what every
llama.cpp format does.
"""

# %% [markdown]
"""
## Summary

* **absmax**: *s* = max|*w*| / (2<sup>b−1</sup> − 1), *q* = round(*w*/*s*); symmetric, 0 exact.
* **zero point**: *s* = (max − min) / (2<sup>b</sup> − 1), integer *z* = round(−min/*s*); uses all
  2<sup>b</sup> levels on lopsided data, at the price of one more number to store.
* The error of each stored weight is at most *s*/2, and about 6 dB of SQNR comes with each bit,
  until the grid is so coarse that most weights round to 0.
* A per-tensor scale is hostage to the largest weight: one outlier costs every other weight
  20·log<sub>10</sub>(gain) dB, and at 4 bits this tensor's own tails already push most of its
  weights to 0. Smaller blocks, each with its own scale, are the cure.
"""
