# %% [markdown]
"""
# 09 · Claims and measurements

Articles, videos and podcasts about GGUF files repeat a handful of claims about quantization.
Some are right, some half right, some wrong. This notebook takes sixteen of them, states each as
**a common claim**, confronts it with a computation from the earlier notebooks, a measurement on
the bundled model, or llama.cpp's own published numbers (each with its source), and ends with a
verdict: **true**, **half-true** or **false**, and a one-line correction.

**After this notebook you will be able to**

* test a claim about quantized models with arithmetic, a measurement or the source code;
* compute a model's memory (weights and KV cache) from its parameters and real bits per weight;
* tell a linear code (every k-quant) from a code book (IQ4_NL, or what k-means would make);
* say which of the popular claims hold, and correct the ones that do not.

Words such as *ggml*, *K-quant*, *KV cache*, *GQA* and *SQNR* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import inspect
from collections import Counter

import gguf
import numpy as np
from gguf import GGMLQuantizationType
from ipywidgets import Dropdown, SelectionSlider, fixed, interact

import kquant
from kquant import quantize_file
from kquant.gguf import reader
from kquant.model import cache, evaluate, hub
from kquant.lessons import kfamily, memory, metrics, published, samples
from kquant import llamacpp, mixes, reference, viz
from kquant.exercises import nb09 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook tests sixteen claims against measurements of the bundled model's mixes in llama.cpp (and its IQ4_NL encoder)");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 0. The measurements, once

The claims about quality need the bundled model in several mixes, scored against F16 on the
same held-out text and tasks (notebook 08's table, on fewer documents and sums). We make them once
here (about 15 seconds; the files are notebook 08's, from kquant's cache, `kquant.model.cache`,
which also keeps these scores for the next run).
"""

# %%
MIXES = ["Q8_0", "Q6_K", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K"]
files = {"F16": hub.bundled()}
for mix in MIXES:
    files[mix] = cache.quantized(hub.bundled(), mix, f"tiny-{mix}.gguf")  # notebook 08's files, from kquant's cache

# %%
table = cache.compare(list(files.values()), n_docs=16, n_sums=120, speed_tokens=8)  # scored once, then cached
tiny = dict(zip(files, table.rows))
print(table)

# %% [markdown]
"""
## 1. What the K means

> **C1**, a common claim: *the "K" in Q4_K stands for k-means clustering: similar weights are
> grouped and replaced by centroids from a lookup table.*
>
> **C2**, a common claim: *Q4_K_M is "4-bit quantization with K-means + multipliers".*

Two tests. First, read the encoder. Here is the search at the heart of Q4_K (and Q2_K, Q5_K),
`make_qkx2_quants`, as kquant writes it after ggml; its docstring says what it does:
"""

# %%
from kquant.formats import search

print(inspect.getdoc(search.make_qkx2_quants))

# %% [markdown]
"""
A grid search over candidate scales, each followed by a least-squares fit: no clustering step,
no centroids, no lookup table. (Notebook 04 traced it candidate by candidate.)

Second, look at what comes out. A k-means code book puts its centroids wherever the data is
dense, so they are *unevenly* spaced. A linear code, `scale · q + offset` with whole `q`, puts
every group's values on an *even* grid. `kfamily.on_even_grid(values, n_levels)` tests that,
and IQ4_NL, whose 16 values really do come from a table (`kvalues_iq4nl` in ggml's
`ggml-common.h`; IQ4_XS shares that table, and MXFP4 has a 16-value table of its own,
`kvalues_mxfp4`), is the control:
"""

# %%
w = samples.example_weights().weights
print(f"{w.shape} weights: {samples.example_weights().source}")
for t in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
    lay = kfamily.LAYOUTS[t]
    groups = kquant.dequantize(kquant.quantize(w, t), t).reshape(-1, lay.group)
    share = kfamily.on_even_grid(groups, 2**lay.level_bits).mean()
    print(f"{t}: {share:6.1%} of its {len(groups):,} groups decode to an even grid of {2**lay.level_bits} levels")
iq4 = gguf.quants.dequantize(reference.quantize_iq4_nl(w), GGMLQuantizationType.IQ4_NL).reshape(-1, 32)
print(f"IQ4_NL: {kfamily.on_even_grid(iq4, 16).mean():6.1%} of its {len(iq4):,} groups do;"
      f" its table: {gguf.quants.IQ4_NL.kvalues}")

# %% [markdown]
"""
### Exercise 1 (linear code or code book?)

Complete `is_linear_code(values, n_levels)`: True when all `values` fit on an evenly spaced grid of
at most `n_levels` points (some points may be unused), False otherwise. Allow for float32
rounding: about 1e-3 of a step.
"""

# %% answer q1
def is_linear_code(values, n_levels):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(is_linear_code)

# %% [markdown]
"""
Where the name comes from: the formats were introduced in llama.cpp pull request #1684, titled
"k-quants" (ikawrakow, June 2023); the types are `GGML_TYPE_Q2_K … Q6_K` and their super-block
size is the constant `QK_K = 256`, in the style of the older `QK4_0` ("weights per block of
Q4_0"). No primary source spells out what the letter abbreviates.
"""

# %%
print("the k-quants pull request:", published.K_QUANTS_PR)
print("QK_K =", kquant.get_format("Q4_K").block_size, "weights per super-block")

# %% [markdown]
"""
**C1: false.** Every k-quant group decodes to an even grid (100 % above), as a linear code must;
the code book format, IQ4_NL, does not. *Correction: "K" names the k-quant family of llama.cpp
PR #1684 (super-blocks of 256 with quantized sub-block scales); the scales come from a grid
search with least squares, and there is no clustering.*

**C2: half-true.** 4-bit levels: yes. "Multipliers": yes, if that means the 6-bit scale of each
32-weight sub-block (notebook 04). K-means: no. *Correction: Q4_K_M is a mix (notebook 06) of
mostly Q4_K blocks, 4-bit levels with quantized per-sub-block scales and mins.*

## 2. How many bits

> **C13**, a common claim: *Q4 means "4 bits per weight".*
>
> **C3**, a common claim: *Q4_K_M makes a model 70-75 % smaller than the original.*
>
> **C7**, a common claim: *32-bit to 8-bit makes a model four times smaller (a 40 GB model becomes 10 GB).*
"""

# %%
for t in ["Q4_0", "Q4_1", "Q4_K", "Q8_0"]:
    print(f"{t} block format: {kquant.get_format(t).bits_per_weight} bits per weight")
C3_RANGE = (0.70, 0.75)  # the claim's "70-75 % smaller"
q4km, f16 = tiny["Q4_K_M"], tiny["F16"]
llama = published.LLAMA31_8B_SIZES
print(f"Q4_K_M files: bundled model {q4km.bpw:.4f} bpw (measured), Llama-3.1-8B {llama['Q4_K_M']['bpw']} bpw ({llama.source})")
for name, bpw, ref in [("bundled model", q4km.bpw, f16.bpw), ("Llama-3.1-8B", llama["Q4_K_M"]["bpw"], llama["F16"]["bpw"])]:
    print(f"{name}: Q4_K_M is {1 - bpw / ref:.1%} smaller than F16 and {1 - bpw / 32:.1%} smaller than F32")
q8 = kquant.get_format("Q8_0").bits_per_weight
print("C3 against F16:", "inside" if all(C3_RANGE[0] <= 1 - b / r <= C3_RANGE[1] for b, r in [(q4km.bpw, f16.bpw), (llama["Q4_K_M"]["bpw"], llama["F16"]["bpw"])]) else "just outside", "the claimed 70-75 %")
print(f"Q8_0: {32 / q8:.2f}× smaller than F32 ({1 - (32 / q8) / 4:.1%} short of 4×), so 40 GB of F32 weights become {memory.gb(memory.weight_bytes(40e9 / 4, q8)):.1f} GB, not 10")

# %% [markdown]
"""
**C13: false.** Every "4-bit" block format stores scales too: Q4_0 and Q4_K cost 4.5 bits per
weight, Q4_1 5, and a Q4_K_M *file* averages more (the lines above), because some tensors get
Q6_K. *Correction: Q4 means 4-bit levels; count 4.5 to 5 bits per weight.*

**C3: half-true** (notebook 06 says the same). Against F16 (what "original" usually means for a
GGUF), a Q4_K_M file is just under 70 % smaller, just outside the claimed range (the lines above);
against F32 about 85 %. *Correction: about 70 % smaller than F16, 85 % smaller than F32.*

**C7: true, to within 6 %.** Q8_0 spends 8.5 bits per weight (a 16-bit scale per 32 weights), so
the factor is 3.76, not exactly 4, and 40 GB become about 10.6 GB (the line above). The claim's
point, a quarter of the size, stands. *Correction: "almost four times": 3.76×.*

## 3. How much memory

> **C10**, a common claim: *a 70B model needs about 140 GB at 16-bit and about 280-300 GB at 32-bit.*
>
> **C9**, a common claim: *at 4 bits a 70-billion-parameter model fits on a single 24 GB consumer GPU.*
>
> **C11**, a common claim: *with Q4_K_M, models up to 14B parameters run in about 30 GB of RAM.*

### Exercise 2 (weights in GB)

Complete `model_gigabytes(n_params, bpw)`: the weights of a model of `n_params` parameters at
`bpw` bits per weight, in GB (10⁹ bytes).
"""

# %% answer q2
def model_gigabytes(n_params, bpw):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(model_gigabytes)

# %% [markdown]
"""
Running a model also needs its KV cache: for every layer and every position in the context, a
key and a value vector per KV head.

### Exercise 3 (the KV cache)

Complete `kv_cache_bytes(n_layer, n_kv_head, head_dim, n_ctx, bytes_per_value)`.
"""

# %% answer q3
def kv_cache_bytes(n_layer, n_kv_head, head_dim, n_ctx, bytes_per_value):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(kv_cache_bytes)

# %% [markdown]
"""
The package's versions are `memory.weight_bytes` and `memory.kv_cache_bytes`. The
layouts below are the models' published configurations (nominal parameter counts; layers, KV heads,
head size), and the bits per weight are llama.cpp's published whole-file figures for
Llama-3.1-8B (a bigger model's embedding is a smaller share, so its files come out a hair
smaller per weight).
"""

# %%
LAYOUTS = published.MODEL_LAYOUTS  # parameters, layers, KV heads, head size (each model's config.json)
print(LAYOUTS)
BPW = {m: published.LLAMA31_8B_SIZES[m]["bpw"] for m in ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]}
BPW = {"F32": 32.0, **BPW}




def weights_gb(n_params, bpw):
    return memory.gb(memory.weight_bytes(n_params, bpw))


def kv_gb(model, n_ctx):  # F16 cache: 2 bytes a value
    return memory.gb(memory.kv_cache_bytes(*LAYOUTS[model][1:], n_ctx, bytes_per_value=2))


print(f"70B weights: {weights_gb(70e9, 16):.0f} GB at 16-bit, {weights_gb(70e9, 32):.0f} GB at 32-bit;"
      f" llama.cpp's Llama-2-70B F16 file: {published.LLAMA2_70B['F16']['GiB']} GiB = {published.LLAMA2_70B['F16']['GiB'] * memory.GIB / memory.GB:.0f} GB")
f16_70b_gb = published.LLAMA2_70B["F16"]["GiB"] * memory.GIB / memory.GB
print(f"a GiB (2³⁰ bytes) is {memory.GIB / memory.GB - 1:.1%} larger than a GB (10⁹); the F16 file's {f16_70b_gb:.1f} GB"
      f" at 2 bytes a weight hold {f16_70b_gb / 2:.1f} B weights: Llama-2-70B has 69.0 B parameters, not 70")
print(f"70B at exactly 4.0 bits: {weights_gb(70e9, 4.0):.0f} GB; at Q4_K_M's {BPW['Q4_K_M']} bpw: {weights_gb(70e9, BPW['Q4_K_M']):.1f} GB;"
      f" published Llama-2-70B Q4_K_M file {published.LLAMA2_70B['Q4_K_M']['GiB']} GiB = {published.LLAMA2_70B['Q4_K_M']['GiB'] * memory.GIB / memory.GB:.1f} GB,"
      f" Q2_K {published.LLAMA2_70B['Q2_K']['GiB']} GiB = {published.LLAMA2_70B['Q2_K']['GiB'] * memory.GIB / memory.GB:.1f} GB")
IQ2_XS_BPW = 2.31  # llama.cpp tools/quantize/quantize.cpp, QUANT_OPTIONS: "IQ2_XS: 2.31 bpw quantization"
print(f"70B at IQ2_XS's {IQ2_XS_BPW} bpw: {weights_gb(70e9, IQ2_XS_BPW):.1f} GB of weights,"
      f" + F16 KV cache for {published.MAX_CONTEXT['Llama-2-70B']:,} positions {kv_gb('Llama-2-70B', published.MAX_CONTEXT['Llama-2-70B']):.1f} GB")
for n_ctx in [4096, 32768]:
    print(f"14B at Q4_K_M, {n_ctx:>6,} positions: weights {weights_gb(14e9, BPW['Q4_K_M']):.1f} GB + F16 KV cache "
          f"{kv_gb('Qwen2.5-14B', n_ctx):.1f} GB = {weights_gb(14e9, BPW['Q4_K_M']) + kv_gb('Qwen2.5-14B', n_ctx):.1f} GB")

# %% [markdown]
"""
### Try it: what fits

Pick a model, a mix and a context length. The bars are the weights at every mix plus the F16 KV
cache; the dashed line is a 24 GB card. A context longer than the model was trained for is cut to
its maximum (Llama-2-70B: 4,096 positions), and the title says so. The y axis stops a quarter above
the 8-bit bar: the 16- and 32-bit bars run off the top, with their heights written on them.
"""

# %%
interact(viz.memory_view, model=Dropdown(options=list(LAYOUTS), value="Llama-2-70B", description="model"),
         mix=Dropdown(options=list(BPW), value="Q4_K_M", description="mix"),
         n_ctx=SelectionSlider(options=[2048, 4096, 8192, 16384, 32768, 131072], value=4096, description="context"),
         layouts=fixed(LAYOUTS), bpw=fixed(BPW), gpu_gb=fixed(24.0), max_ctx=fixed(published.MAX_CONTEXT));

# %% [markdown]
"""
**C10: true** in GB. llama.cpp's tables count GiB, and a GiB is 7.4 % *larger* than a GB, so
the same bytes are fewer GiB; its 128.5 GiB F16 file is 138 GB because Llama-2-70B has 69.0 B
parameters, not 70 (the lines above). *Correction: none needed; say GB, and add the KV cache.*

**C9: false at 4 bits.** 70B weights at 4 bits are 35 GB even without scales; a real Q4_K_M
file is about 41-43 GB, and even Q2_K's published 70B file is over 24 GB, before any KV cache.
Below 3 bits it does fit: at IQ2_XS's 2.31 bits per weight the weights are about 20 GB, and
Llama-2-70B's whole 4,096-position F16 KV cache adds about 1.3 GB (the line above), at a
large cost in quality (the i-quants need an importance matrix, notebook 10). *Correction: at
4 bits a 70B model needs two 24 GB cards, or CPU offloading; a 2-bit i-quant fits one.*

**C11: half-true.** It runs, but it needs far less: about 9 GB of weights plus about 1 to 6 GB of KV cache
(the lines above). *Correction: a 14B model at Q4_K_M needs 10-15 GB; 30 GB is room for a 30B.*

## 4. What quality costs

> **C4**, a common claim: *Q4_K_M keeps 95-98 % of the model's ability; going from 16-bit to 4-bit
> costs under 1-2 % perplexity.*
>
> **C5**, a common claim: *Q8 is "nearly indistinguishable" from 16-bit, "half the size", losing about half a percent.*
>
> **C6**, a common claim: *Q2/Q3 make a model "brain damaged" and incoherent; Q6/Q8 bring
> negligible gains over Q4_K_M.*
>
> **C12**, a common claim: *Q4_K_M has better perplexity than Q4_0 at the same file size.*

The bundled model (measured in section 0) and llama.cpp's published scoreboard for Llama-3-8B:
"""

# %%
score = published.LLAMA3_8B_SCOREBOARD
print(f"{'mix':<8}{'bundled: ppl Δ':>16}{'KL ± 95 %':>17}{'sums ± 95 %':>15}{'changed':>9}   |  Llama-3-8B: {'size':>9}{'ppl Δ':>9}{'KL':>8}")
for mix in ["F16"] + MIXES:
    s, p = tiny[mix], score.rows.get(mix, {})
    pub = (f"{p['GiB']:>6.2f} GiB{p.get('dppl', 0) / score['F16']['ppl']:>+9.2%}{p.get('kld', 0):>8.4f}" if p else "   (not published)")
    kl, sums = s.interval("kl"), s.interval("sums")
    print(f"{mix:<8}{s.perplexity / f16.perplexity - 1:>+16.2%}{f'{kl.value:.1e} ±{kl.half_width:.0e}':>17}"
          f"{f'{sums.value:.1%} ±{sums.half_width:.1%}':>15}{s.changed:>9.1%}   |  {pub}")
print(f"({score.source})")
print("bundled, sums right Q2_K − F16:", evaluate.verdict(evaluate.difference(tiny["Q2_K"], f16, "sums")))

# %% [markdown]
"""
The bundled model's columns are measured on 16 documents and 120 sums, so each has a 95 %
interval (bootstrap, as in notebook 08); one sum is 0.8 %, and most mixes' sums columns lie within
each other's noise (the last line tests the largest drop, Q2_K's, paired).

**C4: half-true.** Perplexity: Llama-3-8B loses 2.8 % at Q4_K_M (published), Llama-2-70B 1.2 %
(published, below), the bundled model much less; so "1-2 %" holds for big models and not for all.
"Keeps 95-98 % of its ability" is not a measurement: no benchmark is named. What can be measured
is how much the output distribution moves (KL) and how many answers change (the `changed` column).
*Correction: Q4_K_M raises perplexity by about 1-3 % on 8B-70B models, and changes some answers.*
"""

# %%
seventy = published.LLAMA2_70B
for mix in ["Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]:
    print(f"Llama-2-70B {mix:<7} {seventy[mix]['GiB']:>6.2f} GiB  ppl {seventy[mix]['ppl']:.4f}  "
          f"{seventy[mix]['ppl'] / seventy['F16']['ppl'] - 1:+.2%} vs F16 ({seventy.source})")
print(f"Q8_0 size relative to F16: bundled {tiny['Q8_0'].bpw / f16.bpw:.1%}, Llama-3.1-8B {BPW['Q8_0'] / BPW['F16']:.1%}")

# %% [markdown]
"""
**C5: half-true.** "Nearly indistinguishable": yes, by every measure here (Llama-3-8B's
perplexity rises 0.04 %, the bundled model's KL is the smallest of all mixes). "Half the size":
53 %, a little more. "Losing about half a percent": it loses ten times less. *Correction: Q8_0
is 53 % of F16's size and practically lossless.*

**C6: half-true.** Q2_K is real damage on a real model: Llama-3-8B's perplexity rises by more
than half (+56 %) and KL is 14× Q4_K_M's; Q3_K_M costs +10.5 %. But the bundled model's Q2_K still
writes coherent stories (notebook 08) and every fact right, so "incoherent" is too strong as a
rule. Q6_K and Q8_0 over Q4_K_M: small in perplexity, but KL falls 6× and 23×. *Correction: Q3_K_M
is usable, Q2_K hurts visibly, and Q6_K/Q8_0 are measurably closer to F16 at 1.3-1.7× the size.*
"""

# %%
for name, rows, q4k, q40 in [("bundled (bpw)", None, tiny["Q4_K_M"], tiny["Q4_0"]), ("Llama-3-8B (GiB)", score, score["Q4_K_M"], score["Q4_0"])]:
    if rows is None:
        print(f"{name}: Q4_K_M {q4k.bpw:.2f} bpw KL {q4k.kl:.1e} | Q4_K_S {tiny['Q4_K_S'].bpw:.2f} bpw KL {tiny['Q4_K_S'].kl:.1e} | Q4_0 {q40.bpw:.2f} bpw KL {q40.kl:.1e}")
    else:
        print(f"{name}: Q4_K_M {q4k['GiB']} ppl {q4k['ppl']:.3f} | Q4_K_S {score['Q4_K_S']['GiB']} ppl {score['Q4_K_S']['ppl']:.3f} | Q4_0 {q40['GiB']} ppl {q40['ppl']:.3f}")
print("bundled, KL Q4_K_S − Q4_0:", evaluate.verdict(evaluate.difference(tiny["Q4_K_S"], tiny["Q4_0"], "kl")))
# The block formats alone, at exactly the same 4.5 bits per weight, on the same real weights:
for t in ["Q4_0", "Q4_K"]:
    y = kquant.dequantize(kquant.quantize(w, t), t)
    print(f"{t}: {kquant.get_format(t).bits_per_weight} bits per weight, SQNR {metrics.sqnr_db(w, y):.2f} dB")

# %% [markdown]
"""
**C12: half-true.** Q4_K_M is *not* the same size as Q4_0: it is 5-6 % larger (the lines above). At (almost) the
same size, Q4_K_S, the k-quant still wins clearly on Llama-3-8B (on the bundled model, the paired
line above says whether its lower KL is more than noise); and the two block formats at
exactly 4.5 bits per weight differ by the SQNR above. *Correction: at equal size (Q4_K_S vs Q4_0,
or Q4_K vs Q4_0 blocks) the k-quant is better; Q4_K_M buys more quality with a slightly bigger file.*

## 5. What "M" means

> **C8**, a common claim: *the S/M/L suffix decides how precision is spread over layers; "M" keeps
> attention layers at 5 or 6 bits and squeezes the others.*
"""

# %%
model = quantize_file.read_model(hub.bundled())
per_kind = {}
for mix in ["Q4_K_S", "Q4_K_M"]:
    for c in kquant.plan_gguf(model.path, mix):
        if c.name.startswith("blk."):
            per_kind.setdefault(c.name.split(".")[2], {}).setdefault(mix, Counter())[c.type.name] += 1
for kind, by_mix in per_kind.items():
    print(f"{kind:<12}" + "   ".join(f"{m}: {dict(t)}" for m, t in by_mix.items()))

# %% [markdown]
"""
**C8: half-true.** The suffix does decide how bits are spread (S and M share the Q4_K default
and differ in the bumps), but in Q4_K_M only attn_v among the attention matrices gets Q6_K, and
only in some layers (`mixes.use_more_bits`); attn_q, attn_k and attn_output stay Q4_K, and the
other bump is a feed-forward matrix, ffn_down. On a 70B-class model (llama.cpp's `LLM_TYPE_70B`,
notebook 06 §3) every attn_v that would be Q4_K becomes Q5_K, so there attn_v is at 5-6 bits in
every layer, and the claim is right about attn_v alone. *Correction: "M" gives Q6_K to attn_v and
ffn_down in about half the layers, and to the output; on 70B models attn_v gets Q5_K in the rest;
attn_q, attn_k and attn_output stay Q4_K.*

## 6. I-quants

> **C14**, a common claim: *I-quants use lookup tables to reach smaller files, sometimes at the cost of speed.*

IQ4_NL is the simplest i-quant: Q4_0's layout (4.5 bits per weight) with its 16 levels taken
from a table instead of an even grid. Same size, so any gain is accuracy:
"""

# %%
kv = np.array(gguf.quants.IQ4_NL.kvalues)
print("IQ4_NL's table:", kv.tolist(), "\ngaps:", np.diff(kv).tolist(), "(closer near zero, where weights are dense)")
for t, y in [("Q4_0", kquant.dequantize(kquant.quantize(w, "Q4_0"), "Q4_0")),
             ("IQ4_NL", gguf.quants.dequantize(reference.quantize_iq4_nl(w), GGMLQuantizationType.IQ4_NL)),
             ("Q4_K", kquant.dequantize(kquant.quantize(w, "Q4_K"), "Q4_K"))]:
    print(f"{t:<7} 4.5 bits per weight, SQNR {metrics.sqnr_db(w, y):.2f} dB")
print(f"published, Llama-3-8B: IQ4_NL {score['IQ4_NL+imatrix']['GiB']} GiB, KL {score['IQ4_NL+imatrix']['kld']} (made with an imatrix)"
      f" | Q4_0 {score['Q4_0']['GiB']} GiB, KL {score['Q4_0']['kld']} (without)")

# %% [markdown]
"""
**C14: half-true.** Lookup tables: yes (IQ4_NL's 16 values above, `kvalues_iq4nl` in ggml's
`ggml-common.h`; the 2- and 3-bit i-quants pick whole groups of values from bigger tables there,
such as `iq2xxs_grid`, 256 entries of 8 values, and `iq3s_grid`, 512 entries of 4). "To reach
smaller files": at 4.5 bits IQ4_NL is the same size as Q4_0 and Q4_K; on these weights it beats
Q4_0 and loses to Q4_K (the three SQNRs above), so the table alone does not buy the most accuracy
per bit. The smaller files come from the 1- to 3-bit i-quants (C9: IQ2_XS). Speed was not measured
here: it depends on each machine's kernels. *Correction: i-quants use tables; their gain is at 1-3
bits; at 4.5 bits IQ4_NL beats Q4_0 but not Q4_K.*

## 7. The file

> **C15**, a common claim: *GGUF bundles weights, vocabulary and settings in one file with extensible metadata.*
"""

# %%
gf = reader.open_gguf(hub.bundled())
keys = list(gf.fields)
print(f"{len(gf.tensors)} tensors, {len(keys)} metadata keys in one file")
print("vocabulary:", len(gf.fields["tokenizer.ggml.tokens"].value), "tokens in tokenizer.ggml.tokens")
print("settings:", [k for k in keys if k.startswith("llama.")][:6], "…")
print("the project's own keys (the extensible part):", [k for k in keys if k.startswith("kquant.")])

# %% [markdown]
"""
**C15: true.** One file holds the tensors, the tokenizer and the hyper-parameters, and any
program may add keys of its own (here `kquant.training`). *Correction: none; notebook 07 reads it byte by byte.*

## 8. Retraining

> **C16**, a common claim: *quantization needs no retraining.*

Every file in this notebook was made from the F16 weights alone, in seconds, with no gradient
and no training data: `quantize_gguf` reads a tensor, encodes it, writes it. The KL and
accuracy of section 0 are what that costs.
"""

# %%
print(f"{len(files) - 1} quantized files written from {hub.bundled().name} alone;"
      f" Q4_K_M changed {tiny['Q4_K_M'].changed:.1%} of the answers, facts right: {tiny['Q4_K_M'].accuracy['facts']:.0%}")
print("QLoRA (training adapters on top of a 4-bit model, a different thing):", published.QLORA_PAPER)

# %% [markdown]
"""
**C16: true** for post-training quantization, which is what llama.cpp does (an importance matrix,
notebook 10, needs calibration text but still no training). *Correction: none; but QLoRA and
quantization-aware training are training, and they are not what makes a GGUF.*
"""

# %% [markdown]
"""
## Summary

| claim | verdict | correction |
|---|---|---|
| C1 K = k-means | false | K = the k-quant family (PR #1684); even grids, no clustering |
| C2 K-means + multipliers | half-true | 4-bit levels and per-sub-block scales, no k-means |
| C3 70-75 % smaller | half-true | about 70 % smaller than F16, 85 % than F32 |
| C4 95-98 %, under 1-2 % ppl | half-true | 1-3 % perplexity on 8B-70B; answers change |
| C5 Q8 ≈ 16-bit, half size, −0.5 % | half-true | 53 % of the size, practically lossless |
| C6 Q2/Q3 brain damage; Q6/Q8 no gain | half-true | Q2_K hurts, Q3_K_M usable; Q6/Q8 much lower KL |
| C7 32 → 8 bit = 4× | true, to within 6 % | 3.76× (Q8_0 is 8.5 bits) |
| C8 M = attention at 5-6 bits | half-true | attn_v and ffn_down in some layers (attn_v in all on 70B), not all attention |
| C9 70B at 4 bits on 24 GB | false at 4 bits | 41-43 GB at Q4_K_M; IQ2_XS (2.31 bpw) fits in 20 GB |
| C10 70B: 140 GB / 280 GB | true | in GB (a GiB is 7.4 % larger); add the KV cache |
| C11 14B in 30 GB | half-true | 10-15 GB is enough |
| C12 Q4_K_M beats Q4_0 at equal size | half-true | not equal size; Q4_K_S vs Q4_0 is |
| C13 Q4 = 4 bits | false | 4.5-5 bits per weight |
| C14 i-quants: tables, smaller | half-true | tables, yes; the gain is at 1-3 bits; IQ4_NL beats Q4_0, not Q4_K |
| C15 GGUF bundles everything | true | |
| C16 no retraining | true | post-training; QLoRA is training |
"""
