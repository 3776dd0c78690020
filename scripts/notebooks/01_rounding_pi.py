# %% [markdown]
"""
# 01 · Rounding π

Every quantizer in this workbook, up to llama.cpp's Q4_K, does one thing over and over:
it puts a real number on a grid and stores which grid point it chose. This notebook does
that to a single number, π, and to the formats computers already use for floats.

**After this notebook you will be able to**

* store a number in *n* bits of fixed point and predict its rounding error;
* explain why every extra bit buys about 6 dB of signal-to-noise ratio;
* name the three rules ggml uses to round a tie, and show that the rule alone decides
  whether two encoders write the same bytes;
* read the sign, exponent and mantissa bits of a float32, float16 and bfloat16;
* work out how much memory a model's weights take at a given number of bits per weight.

Terms (SQNR, ggml, bits per weight, …) are defined in the [glossary](../docs/glossary.md).

Exercises: complete the function in each *answer* cell, run it, then run the *check* cell
below it. `ex.q1.hint()` gives a hint, `ex.q1.solution()` a solution (notebook 00 explains).
"""

# %%
import numpy as np
from ipywidgets import FloatText, IntSlider, fixed, interact

import kquant
from kquant.lessons import memory, metrics, rounding
from kquant import viz
from kquant.reference import recorded
from kquant.exercises import nb01 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 1. π in fixed point

A fixed-point number with *f* fractional bits is an integer that counts steps of
2<sup>−f</sup>. To store π with *f* = 3, count how many eighths it is: π · 8 = 25.13, the
nearest integer is 25, and 25 eighths is 3.125. The integer 25 is what goes into memory;
π lies between 2 and 4, so 2 bits for the whole part plus *f* for the fraction hold it.
"""

# %%
fp = rounding.fixed_point(np.pi, 3)
print(f"π · 2^3 = {np.pi * 8:.4f} → code {fp.code} = 0b{rounding.bit_string(fp.code, 2 + 3)} → value {fp.value} (error {fp.value - np.pi:+.4f})")

# %% [markdown]
"""
More bits, finer steps. The error can never exceed half a step, 2<sup>−f</sup>/2:
"""

# %%
print(f"{'frac bits':>9} {'bits':>4}  {'code in binary':<20} {'stored value':>14} {'error':>10} {'half a step':>11}")
for f in range(0, 17, 2):
    fp = rounding.fixed_point(np.pi, f)
    print(f"{f:>9} {f + 2:>4}  {rounding.bit_string(fp.code, f + 2):<20} {fp.value:>14.10f} {fp.value - np.pi:>+10.2e} {2.0**-f / 2:>11.2e}")

# %% [markdown]
"""
## 2. One bit more, about 6 dB better

For π alone the error jumps about with π's digits (at some depths the next bit happens
to be right already). Over many numbers it behaves regularly: the rounding error is spread
evenly over ±half a step, so its root mean square is step/√12, and every extra bit halves
the step. Half the error amplitude is a quarter of the error power, and engineers measure
power ratios in decibels: 10 · log<sub>10</sub>(4) = 6.02 dB per bit.

Measure it on 100,000 random numbers in [−1, 1): the **signal-to-quantization-noise ratio**
(SQNR) at each bit depth, and a straight line through them. SQNR is
10 · log<sub>10</sub>(Σ *x*² / Σ (*x* − *x̂*)²) in decibels: how many times more power the
numbers have than their rounding errors, on a log scale (`kquant.lessons.metrics.sqnr_db`;
higher is better).
"""

# %%
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, 100_000)
frac_bits = np.arange(1, 17)
measured = np.array([metrics.sqnr_db(x, rounding.fixed_point(x, int(f)).value) for f in frac_bits])
slope, intercept = np.polyfit(frac_bits, measured, 1)
print(f"fitted slope: {slope:.3f} dB per bit;  theory 10·log10(4) = {10 * np.log10(4):.3f}")

f = 8
rms = metrics.rmse(x, rounding.fixed_point(x, f).value)
print(f"at {f} fractional bits: RMS error {rms:.3e}, step/√12 = {2.0**-f / np.sqrt(12):.3e}")
viz.error_vs_bits(frac_bits, measured, slope * frac_bits + intercept, slope)

# %% [markdown]
"""
### Try it: the bit-depth slider

Move the slider. The top plot zooms in on π and the grid of numbers that *f* fractional
bits can store; the bottom plot shows the error at every depth, with yours in red.
"""

# %%
interact(viz.pi_grid_view, frac_bits=IntSlider(value=3, min=0, max=20, description="fractional bits"), int_bits=fixed(2), max_bits=fixed(20));

# %% [markdown]
"""
### Exercise 1 (fixed point)

Complete `to_fixed(x, frac_bits)`: return `x` (a number or a numpy array) rounded to the
nearest multiple of 2<sup>−frac_bits</sup>, ties to even. `to_fixed(np.pi, 3)` is 3.125.
"""

# %% answer q1
def to_fixed(x, frac_bits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(to_fixed)

# %% [markdown]
"""
## 3. Rounding modes, and why they decide the bytes

"Round to the nearest" leaves one question open: what to do with a tie, a value exactly
halfway between two integers. ggml (the C library under llama.cpp; its quantizers are in
`ggml/src/ggml-quants.c`) answers it in three different ways, in different formats: half to
even, half away from zero, half up. The fourth line below, truncation, is not a rule of its
own: it is what C's cast from float to int does, and Q4_0 and Q4_1 (likewise Q5_0, Q5_1)
apply it to *v* + 8.5 or *v* + 0.5, which are never negative there, so that cast rounds
half up:
"""

# %%
v = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4, 2.6])
print(f"{'v':>10}: {v}")
for mode, (rule, where) in rounding.MODES.items():
    print(f"{mode:>10}: {rounding.round_to_int(v, mode)}   {rule}  [ggml: {where}]")

# %% [markdown]
"""
Ties look rare, but they happen whenever a scaled weight is an exact odd multiple of one
half, as in blocks of small integers or of values already rounded to a coarse grid.
Build a Q8_0 block of 32 weights in which *every* weight but the first is a tie. Q8_0 stores
`d = max|x| / 127` and levels `q = round(x / d)`; the first weight, 127, makes `d` exactly 1,
so `x / d` is `x` itself. Then ask llama.cpp's own C code for the bytes (`kquant.reference.recorded`;
without llama.cpp installed, it hands back kquant's bytes, checked against the sha256 recorded from
llama.cpp's), and compare its 32 levels with each rounding rule:
"""

# %%
block = np.concatenate([[127.0], np.arange(-15, 16) + 0.5]).astype(np.float32)
ggml_bytes = recorded.quantize(block[None, :], "Q8_0")[0]
d = ggml_bytes[:2].view(np.float16)[0]
ggml_levels = ggml_bytes[2:].view(np.int8)
print(f"llama.cpp's block: {len(ggml_bytes)} bytes, d = {d}, first levels {ggml_levels[:6]}")
differ = {}
for mode in rounding.MODES:
    differ[mode] = np.count_nonzero(rounding.round_to_int(block / np.float32(d), mode) != ggml_levels)
    print(f"{mode:>10}: {differ[mode]:2d} of 32 levels differ from llama.cpp's")
print("rules that reproduce llama.cpp's Q8_0 block:", [mode for mode, n in differ.items() if n == 0])

# %% [markdown]
"""
Only "half away from zero" (C's `roundf`) reproduces Q8_0. An encoder that used numpy's
`np.round` (half to even) would get 16 of the 32 levels of this block wrong (the
`half_even` line), and write a file that disagrees with llama.cpp's. `kquant` rounds Q8_0
the C way, so its bytes are llama.cpp's:
"""

# %%
print("kquant's Q8_0 bytes equal llama.cpp's:", np.array_equal(kquant.quantize(block[None, :], "Q8_0")[0], ggml_bytes))
print("but the K-quants round half to even (ggml's nearest_int):", kquant.formats.cops.nearest_int(np.float32([0.5, 1.5, 2.5, -0.5])))

# %% [markdown]
"""
### Exercise 2 (C's `roundf`)

Complete `round_half_away(v)`: round every element of the array `v` to the nearest
integer, ties away from zero (2.5 → 3, −2.5 → −3), as Q8_0 does. Return an array.
"""

# %% answer q2
def round_half_away(v):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(round_half_away)

# %% [markdown]
"""
## 4. Floating point: sign, exponent, mantissa

Fixed point spends its bits on one fixed range. A float spends some bits on *where* the
number is (the exponent) and the rest on *how precisely* (the mantissa):

value = (−1)<sup>sign</sup> × 1.mantissa × 2<sup>exponent − bias</sup>

(bias = 2<sup>exponent bits − 1</sup> − 1: 127 for float32, 15 for float16.) Two exponent
fields are special. **All zeros** means a *subnormal* number (or zero): no implicit 1, and
the exponent stays at 1 − bias, so value = (−1)<sup>sign</sup> × 0.mantissa × 2<sup>1 − bias</sup>.
Subnormals fill the gap between 0 and the smallest normal number, with fewer significant
bits the closer they get to 0. **All ones** means infinity (mantissa 0) or NaN (not a
number): what a number too large for the format becomes.

| format | sign | exponent | mantissa | used for |
|---|---|---|---|---|
| float32 | 1 | 8 | 23 | training, reference math |
| float16 | 1 | 5 | 10 | ggml's block scales, F16 model files |
| bfloat16 | 1 | 8 | 7 | training and checkpoints: float32's range, less precision |

`kquant.lessons.rounding.float_bits` reads the fields of a stored number; `from_fields()`
recomputes the value from them with the formula above, as a check:
"""

# %%
for fmt in rounding.FLOAT_FORMATS:
    fb = rounding.float_bits(np.pi, fmt)
    print(f"{fmt:>8}: {fb.bits:<32}  stores {fb.value!r:<20} error {fb.value - np.pi:+.1e}  formula gives {fb.from_fields()!r}")

# %% [markdown]
"""
### Try it: any number, three formats

Type a number (press Enter). Try 0.1, 65504, 70000, 1e-6, −0.0 and 3.3e38. 70000 is too
large for float16 (its exponent field is all ones: infinity); 1e-6 is below float16's
smallest normal number, 2<sup>−14</sup> ≈ 6.1 · 10<sup>−5</sup>, so float16 stores it as a
subnormal (exponent field 0) with only 5 significant bits, about 1.3 % off.
"""

# %%
interact(viz.float_fields_view, x=FloatText(value=3.141592653589793, description="number"), formats=fixed(tuple(rounding.FLOAT_FORMATS)));

# %% [markdown]
"""
The exponent width sets the range, the mantissa width the relative precision:
"""

# %%
for fmt in rounding.FLOAT_FORMATS:
    print(f"{fmt:>8}: largest finite {rounding.float_max(fmt):.6g}, relative step {rounding.relative_step(fmt):.2g}")

# %% [markdown]
"""
float16's ceiling of 65504 matters for quantization: every ggml block stores its scale
as float16. Q4_0's scale is the block's largest weight divided by −8, so weights of
6 · 10<sup>5</sup> need a scale of −75,000, which float16 cannot hold: it becomes infinity.
kquant refuses before encoding. llama.cpp encodes the block with an infinite scale in
memory, then checks every quantized row (`ggml_validate_row_data` in `ggml-quants.c`, called
by `llama_tensor_quantize_impl` in `src/llama-quant.cpp`), finds the infinity and stops with
"quantized data validation failed": that tensor is never written.
"""

# %%
huge = np.full((1, 32), 6e5, dtype=np.float32)
try:
    kquant.quantize(huge, "Q4_0")
except kquant.KQuantError as err:
    print("KQuantError:", err)
q8_block = kquant.quantize(huge, "Q8_0")[0]
print(f"Q8_0 divides by 127 instead: its scale {q8_block[:2].view(np.float16)[0]} fits in float16")

# %% [markdown]
"""
### Exercise 3 (float16 bits)

Complete `fp16_bits(x)`: return the 16 bits of `x` stored as float16, as a string of
`'0'`/`'1'` characters, sign bit first. `fp16_bits(np.pi)` is `'0100001001001000'`.
"""

# %% answer q3
def fp16_bits(x):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(fp16_bits)

# %% [markdown]
"""
## 5. Memory: parameters × bits

A weight stored in *b* bits takes *b*/8 bytes, so the weights of a model take
parameters × bits per weight / 8 bytes. Two units are in use: GB (10<sup>9</sup> bytes)
and GiB (2<sup>30</sup> bytes, printed below); llama.cpp's own tables are in GiB. A block
format pays for its scales too, so its **bits per weight** (bpw: the size in bits divided by
the number of weights, scales included) is more than its levels' bits; `kquant` knows each
format's real bits per weight.
"""

# %%
print(f"1 GiB = 2^30 bytes = {2**30 / 1e9:.4f} GB: {2**30 / 1e9 - 1:.1%} more than a GB")
n_params = 7e9
for name, bpw in [("float32", 32), ("float16", 16), ("Q8_0", kquant.get_format("Q8_0").bits_per_weight), ("Q4_0", kquant.get_format("Q4_0").bits_per_weight)]:
    size = memory.weight_bytes(n_params, bpw)
    print(f"7B weights in {name:>7}: {bpw:5.2f} bits/weight -> {memory.gb(size):5.2f} GB = {memory.gib(size):5.2f} GiB")

# %% [markdown]
"""
Three common claims, checked with this arithmetic (weights only; the **KV cache**, the keys
and values of every earlier token that the model keeps in memory while it generates, and
the activations come on top):

* *"A 70B model needs about 140 GB at 16-bit and 280–300 GB at 32-bit."*
* *"Going from 32-bit to 8-bit makes a model four times smaller: 40 GB becomes 10 GB."*
* *"At 4 bits a 70-billion-parameter model fits on a single 24 GB GPU."*
"""

# %%
print(f"70B at 16 bits: {memory.gb(memory.weight_bytes(70e9, 16)):.0f} GB;  at 32 bits: {memory.gb(memory.weight_bytes(70e9, 32)):.0f} GB")
q8 = kquant.get_format("Q8_0").bits_per_weight
print(f"32 bits -> Q8_0 ({q8} bits/weight): {32 / q8:.2f}x smaller, so 40 GB becomes {40 * q8 / 32:.1f} GB")
for bpw in [4.0, kquant.get_format("Q4_0").bits_per_weight]:
    print(f"70B at {bpw} bits/weight: {memory.gb(memory.weight_bytes(70e9, bpw)):.1f} GB of weights, against 24 GB of GPU memory")

# %% [markdown]
"""
The first claim is right (in GB, for the weights). The second is half right: 8-bit
*formats* carry scales, and Q8_0's 8.5 bits per weight make it 32 / 8.5 = 3.76 times
smaller, not 4 (printed above).
The third is wrong: even at exactly 4 bits, 70 billion weights take 35 GB, and "4-bit"
formats are not exactly 4 bits (notebook 03 shows where Q4_0's extra half bit goes).

### Exercise 4 (model size)

Complete `model_gib(n_params, bits_per_weight)`: the size of the weights in GiB.
"""

# %% answer q4
def model_gib(n_params, bits_per_weight):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q4
ex.q4.check(model_gib)

# %% [markdown]
"""
## Summary

* Quantizing = storing an integer count of steps. With *f* fractional bits the error is at
  most half a step, 2<sup>−f</sup>/2; on average each bit adds 6.02 dB of SQNR (measured above).
* Ties need a rule. ggml uses three (half to even, half away from zero, half up; the last
  built from C's truncating cast) in different formats, and the rule alone changed 16 of
  32 bytes of a Q8_0 block.
  Byte-exact means: the same rule, in the same float32 arithmetic.
* Floats trade range (exponent bits) for precision (mantissa bits). float16 tops out at
  65504, which is why a huge block can overflow its float16 scale.
* Weights take parameters × bits / 8 bytes, and block formats spend extra bits on scales.

Next, **02 · Scale and zero point**: the same rounding, applied to a whole weight tensor.
"""
