# %% [markdown]
"""
# 13 · Bit budgets

llama.cpp's Q4_K_M is a hand-written rule (notebook 06): Q4_K almost everywhere, Q6_K for the
output layer (here the tied embedding) and for `attn_v` and `ffn_down` of some layers. ExLlamaV2's **EXL2** format does it the
other way round: it *measures* what every choice costs, then spends a bit budget where the
measurements say it buys the most, which is how an EXL2 file can hit a fractional target such as 4.65 bits per weight
(turboderp/exllamav2: `conversion/measure.py` measures every module at every setting,
`conversion/optimize.py` picks the settings for the budget). This notebook does the same with ggml's
own types and writes the result as a normal GGUF file that llama.cpp runs. One difference to keep in
mind: EXL2 also mixes bit widths *inside* a matrix; here the unit of choice is a whole matrix.

**After this notebook you will be able to**

* count the exact bits of a type choice, and say why Q4_K is not 4 bits per weight;
* measure every matrix at every type, two ways: its own output error, and the whole model's KL;
* allocate types to an exact fractional budget with the greedy of "most error saved per bit",
  and say when it is optimal;
* test a measured allocation against Q4_K_M at the same size, with paired intervals;
* work out how many bits per weight fit in a card's memory, how many layers `n_gpu_layers` can
  place, and how fast a token can be.

Words such as *bpw*, *KL divergence* and *95 % interval* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import time

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from ipywidgets import Dropdown, FloatSlider, fixed, interact

from kquant.exercises import nb13 as ex
from kquant.lessons import offload, published
from kquant.lessons.memory import GB, kv_cache_bytes
from kquant import llamacpp, plan_gguf
from kquant.methods import budget
from kquant.model import cache, evaluate, hub
from kquant import viz
from kquant.viz import budget as vb

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook measures on text cut by llama.cpp's tokenizer and scores the allocated files in llama.cpp");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. What a type costs

A type's cost in bits is its block: so many weights, so many bytes, scales and minimums included.
ggml's table (`GGML_QUANT_SIZES`) says it for each candidate type:
"""

# %%
for t in budget.TYPES:
    block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[t]]
    print(f"{t:<5} {block:>3} weights in {nbytes:>3} bytes = {8 * nbytes / block:.4f} bits per weight")

# %% [markdown]
"""
### Exercise 1 (the bits of a type choice)

Complete `matrix_bits(shape, type_name)`: the exact number of bits a `(rows, cols)` matrix takes
as `type_name`. `ex.SIZES[type_name]` (the table above) gives `(weights per block, bytes per block)`.
"""

# %% answer q1
def matrix_bits(shape, type_name):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(matrix_bits)

# %% [markdown]
"""
## 2. Measuring every matrix at every type

`budget.measure` quantizes each of the bundled model's 57 matrices (8 layers × 7, and the token
embedding, which this model also uses as its output layer) at each of the six types, and records
two costs, both on calibration text (never the evaluation text of section 5):

* **output error**: the matrix's own error, `‖X Ŵᵀ − X Wᵀ‖² / ‖X Wᵀ‖²` on the activations `X` the
  F16 model feeds it (EXL2's measurement pass records this kind of number);
* **KL**: the whole model's KL(F16 ‖ model with *only this matrix* quantized), in nats per token:
  what the matrix does to the output, through every layer after it.

That is 342 forward passes of the numpy model over 128 tokens (a small sample: enough to rank the
matrices, not to pin each number down); the result is kept in kquant's
cache, keyed by the model file's sha256 and the settings.
"""

# %%
t0 = time.perf_counter()
m = budget.measure(hub.bundled())
print(f"{len(m.names)} matrices × {len(m.types)} types measured (or read from the cache) in {time.perf_counter() - t0:.1f} s")
vb.sensitivity_map(m, "kl", "KL(F16 ‖ only this matrix quantized): darker = the model feels it more")

# %%
j4 = m.types.index("Q4_K")
order = np.argsort(m.kl[:, j4])
print("at Q4_K, the least and the most sensitive matrices (whole-model KL, nats/token):")
for i in list(order[:3]) + list(order[-5:]):
    print(f"  {m.names[i]:<26} KL {m.kl[i, j4]:.2e}   own output error {m.output_error[i, j4]:.2e}")
print(f"the most sensitive costs {m.kl[order[-1], j4] / m.kl[order[0], j4]:.0f}× the least sensitive")

# %% [markdown]
"""
## 3. Spending a budget

Choose one type per matrix to make the summed cost as small as possible, with the whole file's
bits at most `budget × n_weights`. Summing costs is the **additivity assumption**: that the damage
of several quantized matrices is the sum of their damages alone. It holds to first order for small,
independent errors; section 4 tests it.

`budget.allocate` uses the greedy of marginal cost per bit: every matrix starts at its smallest
type; each possible upgrade (one matrix, one type up) saves some cost for some extra bits; take the
upgrades in order of cost saved per bit, best first; an upgrade that no longer fits is skipped and
the next ones are still tried. First each matrix's types are
reduced to the lower convex hull of its (bits, cost) points (a type that saves less per bit than
the next one up is skipped), so a matrix's upgrades come out of the sort in order. When it never
skips an upgrade for lack of room, the greedy's choice is optimal among all choices that use no more
bits than it does (it minimises `cost + λ · bits` for a price λ of a bit, and that minimiser is the
best choice of its size), which may leave part of the budget unspent; when it skips, it can miss,
and `method="exact"` (dynamic programming over the budget) gives the optimum.
"""

# %% [markdown]
"""
### Exercise 2 (one greedy step)

Complete `greedy_step(bits, cost, choice, room)`: `bits[i, j]` and `cost[i, j]` are matrix i's bits
and cost at option j (more bits, less cost), `choice[i]` is its option now, `room` the bits left.
Return the index of the matrix whose next option (`choice[i] + 1`) saves the most cost per extra
bit among those that fit in `room`, or `None` if none fits.
"""

# %% answer q2
def greedy_step(bits, cost, choice, room):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(greedy_step)

# %% [markdown]
"""
Move the budget: each cell is one matrix and the type the allocation gives it (KL cost); the title
shows the file's bits per weight and the predicted summed KL.
"""

# %%
interact(vb.allocation_view, m=fixed(m), bpw=FloatSlider(value=4.65, min=2.8, max=8.3, step=0.05),
         cost=Dropdown(options=list(budget.COSTS), value="kl"));

# %%
print("budget   greedy Σ KL   exact Σ KL   greedy/exact")
for bpw in [3.0, 3.5, 4.0, 4.65, 5.5, 6.5]:
    g, e = budget.allocate(m, bpw, "kl"), budget.allocate(m, bpw, "kl", method="exact")
    print(f"{bpw:>6}   {g.predicted():.4e}   {e.predicted():.4e}   {g.predicted() / e.predicted():.4f}")

# %% [markdown]
"""
## 4. Does KL add up?

The allocation trusted that single-matrix KLs add. Test it on two whole allocations at Q4_K_M's
size (section 5 uses them): one made for KL, one for the matrices' own output error. Quantize every
matrix to its chosen type at once (numpy, the same calibration tokens) and compare the measured KL
with the predicted sum.
"""

# %%
q4km = cache.quantized(hub.bundled(), "Q4_K_M", "tiny-Q4_K_M.gguf")
q4km_bpw = evaluate.bits_per_weight(q4km)
alloc = {cost: budget.allocate(m, q4km_bpw, cost) for cost in budget.COSTS}
additive = {}
for cost, a in alloc.items():
    predicted, measured = budget.additivity(hub.bundled(), a)
    additive[cost] = measured / predicted
    print(f"allocated by {cost:<12} at {q4km_bpw:.3f} bpw: predicted Σ KL {predicted:.3e}, measured KL "
          f"{measured:.3e}, measured/predicted {measured / predicted:.2f}")

# %% [markdown]
"""
## 5. Against Q4_K_M at the same size

Q4_K_M's file has an exact bits per weight; allocate the same budget twice, once by whole-model KL,
once by each matrix's own output error, write both as GGUF files with llama-quantize's
`--tensor-type` overrides (`quantize_gguf(..., overrides={regex: type})`), check each file's bpw is
within the budget, and score all of them with llama.cpp on the held-out text and tasks of notebook 08.
"""

# %%
files = {"F16": hub.bundled(), "Q4_K_M": q4km}
for cost, a in alloc.items():
    files[f"by {cost}"] = budget.cached_file(hub.bundled(), a, f"tiny-budget-{cost}.gguf")
for label, path in files.items():
    print(f"{label:<17} {evaluate.bits_per_weight(path):.4f} bpw")
assert all(evaluate.bits_per_weight(files[f"by {c}"]) <= q4km_bpw for c in budget.COSTS)
table = cache.compare(list(files.values()), n_docs=24, n_sums=200, speed_tokens=32)  # notebook 08's settings
rows = dict(zip(files, table.rows))
print(table)

# %%
print("by cost − Q4_K_M, paired over the same documents and tasks:")
lower_is_better = {"kl": True, "top1": False, "ppl": True, "sums": False}
verdicts = {}
for cost in budget.COSTS:
    for metric, lower in lower_is_better.items():
        d = evaluate.difference(rows[f"by {cost}"], rows["Q4_K_M"], metric)
        better = (d.value < 0) == lower
        verdicts[cost, metric] = ("better" if better else "worse") if d.excludes(0) else "within the noise"
        print(f"  {cost:<13} {metric:<5} {evaluate.verdict(d, 'the difference')}")
for cost in budget.COSTS:
    print(f"allocated by {cost}, against Q4_K_M: " + ", ".join(f"{k} {verdicts[cost, k]}" for k in lower_is_better))

# %% [markdown]
"""
Read the verdicts above: a difference whose interval includes 0 is a tie at this sample size, not a
win. The KL column is llama.cpp's, on the held-out text, and it is larger than section 4's numpy KL
on the calibration text: other text, and llama.cpp also rounds the activations of every quantized
matrix product (notebook 17 measures that floor), which the numpy model does not. Where the two
allocations differ is which matrices they protect:
"""

# %%
for cost, a in alloc.items():
    kinds = {}
    for name, t in a.types.items():
        kinds.setdefault(t, []).append(name.removesuffix(".weight").removeprefix("blk."))
    print(f"by {cost}:")
    for t in budget.TYPES:
        if t in kinds:
            print(f"  {t:<5} {len(kinds[t]):>2} matrices, e.g. {', '.join(kinds[t][:4])}")

# %% [markdown]
"""
## 6. Why the cost matters

The two costs disagree about which matrices matter. A matrix's own output error is relative to its
own output; it does not know what the rest of the model does with that output, so at one type it
is about the same for every matrix, and an allocation by it buys bits where they are cheapest (the
small matrices). The whole-model KL sees what each error does to the next-token distribution.
Here is each matrix at Q4_K, one cost against the other:
"""

# %%
vb.costs_compared(m, "Q4_K")
rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
rho = np.corrcoef(rank(m.kl[:, j4]), rank(m.output_error[:, j4]))[0, 1]
print(f"rank correlation of the two costs over the {len(m.names)} matrices at Q4_K: {rho:.2f}")
for cost in budget.COSTS:
    c = m.cost(cost)[:, j4]
    print(f"at Q4_K, {cost:<12} spans {c.max() / c.min():>6.0f}× from the least to the most sensitive matrix")
q4km_types = {c.name: c.type.name for c in plan_gguf(hub.bundled(), "Q4_K_M")}
for name in ["token_embd.weight", "blk.7.ffn_down.weight", "blk.3.attn_k.weight"]:
    print(f"{name:<22} by KL {alloc['kl'].types[name]}, by output error {alloc['output_error'].types[name]}, "
          f"Q4_K_M {q4km_types[name]}")
pred = {c: {o: alloc[c].predicted(o) for o in budget.COSTS} for c in budget.COSTS}
print(f"allocated by output error, its predicted Σ KL is {pred['output_error']['kl'] / pred['kl']['kl']:.1f}× "
      "that of the allocation by KL")

# %% [markdown]
"""
## 7. VRAM and offloading

The same arithmetic decides what fits on a GPU. Three formulas (`kquant.lessons.offload`):

* bits per weight that fit: `8 · (VRAM − KV cache − overhead) / n_params`;
* `n_gpu_layers`: llama.cpp places the *last* `n_gpu_layers` of the `n_layer + 1` slots (the
  layers, then the output layer) on the GPU, and keeps the token embedding on the CPU;
* time per token ≥ Σ over devices of the bytes read there / that device's bandwidth, since every
  weight is read once per generated token and the devices take turns.

For Llama-3.1-8B (8·10⁹ weights, 32 layers, 8 KV heads of 128; notebook 09's figures), an F16 KV
cache of 8,192 positions, and an overhead of 1 GB that is an *assumption* (compute buffers and the
driver's context vary):
"""

# %%
n_params, n_layer, n_kv, head_dim = 8e9, 32, 8, 128
kv = kv_cache_bytes(n_layer, n_kv, head_dim, 8192)
print(f"KV cache: {kv / GB:.2f} GB")
for vram in [8, 12, 16, 24]:
    print(f"{vram:>2} GB: at most {offload.bpw_for_vram(vram * GB, n_params, kv, 1 * GB):.2f} bits per weight")

# %% [markdown]
"""
### Exercise 3 (layers that fit)

Complete `layers_that_fit(layer_bytes, output_bytes, vram_bytes)`: the largest `n_gpu_layers` whose
slots fit in `vram_bytes`, counting as llama.cpp places them: the output layer first, then the last
layer, the one before it, and so on.
"""

# %% answer q3
def layers_that_fit(layer_bytes, output_bytes, vram_bytes):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(layers_that_fit)

# %% [markdown]
"""
Llama-3.1-8B at Q4_K_M's published size (notebook 09) on an 8 GB card, with the layer sizes from its
config (`hidden_size` 4096, `vocab_size` 128256: an embedding and an output of 0.53·10⁹ weights each,
the rest spread evenly over 32 layers at the file's average bits per weight, an approximation; the
output at Q6_K, as Q4_K_M gives it), and two bandwidths that are **assumptions**, round figures
and not measurements: 1,000 GB/s for the GPU's memory, 60 GB/s for the CPU's.
"""

# %%
bpw = published.LLAMA31_8B_SIZES["Q4_K_M"]["bpw"]
side = 128256 * 4096
layer_b = (n_params - 2 * side) * bpw / 8 / n_layer
out_b = side * 6.5625 / 8  # Q4_K_M gives the output layer Q6_K
ASSUMED_GPU, ASSUMED_CPU = 1000 * GB, 60 * GB
print(f"{bpw} bpw: a layer {layer_b / GB:.3f} GB, the output layer {out_b / GB:.3f} GB")
for vram in [4, 6, 8, 12]:
    g = offload.layers_that_fit([layer_b] * n_layer, out_b, vram * GB, reserved_bytes=kv + 1 * GB)
    on_gpu = offload.gpu_layers(n_layer, g)
    gpu_bytes = sum(out_b if i == n_layer else layer_b for i in on_gpu)
    cpu_bytes = n_layer * layer_b + out_b - gpu_bytes
    s = offload.seconds_per_token([gpu_bytes, cpu_bytes], [ASSUMED_GPU, ASSUMED_CPU])
    print(f"{vram:>2} GB: n_gpu_layers = {g:>2}; {gpu_bytes / GB:.2f} GB read on the GPU, {cpu_bytes / GB:.2f} GB on "
          f"the CPU → ≥ {s * 1e3:.0f} ms per token, ≤ {1 / s:.0f} tokens/s (assumed bandwidths)")

# %% [markdown]
"""
What is measured here: this machine's CPU. numpy's read bandwidth on a 256 MiB array, against
llama.cpp's generation speed on the bundled files (section 5's table) and the bytes each token reads.
"""

# %%
bw = offload.measured_bandwidth()
print(f"numpy read bandwidth, one thread, this machine: {bw / GB:.1f} GB/s (measured)")
for label in ["F16", "Q4_K_M"]:
    r = rows[label]
    nbytes = r.bpw * m.total_weights / 8
    read = nbytes * r.tokens_per_s
    print(f"{label:<7} {nbytes / 1e6:.2f} MB of weights per token × llama.cpp's {r.tokens_per_s:.0f} tokens/s = "
          f"{read / GB:.1f} GB/s read; the bandwidth bound would allow {bw / nbytes:.0f} tokens/s")
    print(f"{label:<7} reads its weights {'faster' if read > bw else 'slower'} than numpy streams RAM")
speedup = rows["Q4_K_M"].tokens_per_s / rows["F16"].tokens_per_s
print(f"Q4_K_M reads {rows['F16'].bpw / rows['Q4_K_M'].bpw:.1f}× fewer bytes than F16 and runs {speedup:.1f}× as fast")

# %% [markdown]
"""
Two things to read in those lines. The model is a few megabytes, small enough to sit in the CPU's
caches, which deliver more than RAM does: where a line says "faster", the weights cannot have come
from RAM at numpy's rate, and the bound does not bind. And time per token is not proportional to
bytes here: the last line compares the two ratios. The speeds were measured on a shared machine and
vary from run to run. The bandwidth formula is for models of gigabytes, whose weights stream from
memory on every token.
"""

# %% [markdown]
"""
## Summary

* A type's cost is its block's bytes: Q4_K is 4.5 bits per weight, Q6_K 6.5625, Q8_0 8.5.
* Measuring every matrix at every type gives two costs: a matrix's own output error, and the whole
  model's KL with only that matrix quantized. At one type the KL spans more than four orders of
  magnitude across the matrices; the own output error about one.
* The greedy of cost saved per bit, on each matrix's convex hull, hits any fractional budget and
  is optimal unless it passes over an upgrade for lack of room; dynamic programming gives the exact
  optimum, and the greedy came within a fraction of a percent of it here.
* Summed single-matrix KLs predicted the KL of whole allocations to within about 10 % (section 4).
* At Q4_K_M's size, allocation by measured KL was never worse than the hand-written rule beyond
  the noise, and better where section 5 says so; allocation by each matrix's own output error did
  worse on KL, more than noise: the cost you measure decides what the bits buy.
* VRAM arithmetic: bits per weight that fit, the layers `n_gpu_layers` places, and time per token
  as bytes over bandwidth, with the bandwidths measured or labelled as assumptions.
"""
