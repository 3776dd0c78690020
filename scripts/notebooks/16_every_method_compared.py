# %% [markdown]
"""
# 16 · Every method on one table

Notebooks 10 to 15 each measured one idea against its own baseline: an importance matrix, GPTQ,
AWQ, a measured bit budget, NF4, IQ4_NL. Each answered its own question on its own terms. This notebook puts them side by side, on the same model, the same held-out text and the
same tasks, every file run by llama.cpp, so that one question can be asked of all of them:
**for the bits it spends, how close does each stay to F16?**

**After this notebook you will be able to**

* read a comparison of quantization methods as size *and* quality, and find its Pareto front;
* tell a difference the data supports from one within the noise, with paired intervals;
* say which of the popular methods earn their bits on this model, and which claims need a bigger one.

Words such as *bits per weight*, *KL divergence*, *top-1* and *95 % interval* are defined in the
[glossary](../docs/glossary.md).
"""

# %%
import inspect

import numpy as np
from ipywidgets import Dropdown, fixed, interact

import kquant
from kquant import llamacpp, viz
from kquant.exercises import nb16 as ex
from kquant.formats import nf4
from kquant.methods import awq, budget, gptq, lora
from kquant.model import cache, evaluate, forward, hub
from kquant.viz import compare

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook scores every method's file in llama.cpp");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. The files

Every file below was made by an earlier notebook and is read back from kquant's cache (or made
again, the same bytes, if the cache was emptied). Two families:

* **about 4.5 bits per weight**, every matrix in one 32- or 256-weight block format: plain
  round-to-nearest Q4_0 (`--pure`), the same with notebook 10's importance matrix, GPTQ onto
  Q4_0 (notebook 11), AWQ's rescaled weights rounded to Q4_0 (notebook 12), IQ4_NL's 16-value
  table (notebook 15), and Q4_K (`--pure`);
* **llama.cpp's Q4_K_M mix**, about 4.9 bits: plain, with the importance matrix, and notebook 13's
  allocation that spends at most Q4_K_M's bits, by measured sensitivity.

The methods that learn from text did not all see the same amount of it, each as its own notebook
chose (printed below; none of it is the held-out text scored in section 2).

NF4 (notebook 14) has no ggml type: llama.cpp runs it only dequantized, so its file is F16. Its
point is placed at the bits NF4 keeps in memory (block matrices at 4.127 bits, the embedding and
norms as they are), computed below, not at the F16 file's 16.
"""

# %%
src = hub.bundled()
im_chunks = 8
im_path = gptq.cached_imatrix(src, n_chunks=im_chunks)  # notebook 10's calibration, kept in kquant's cache
q4km = cache.quantized(src, "Q4_K_M", "tiny-Q4_K_M.gguf")
allocation = budget.allocate(budget.measure(src), evaluate.bits_per_weight(q4km), "kl")
files = {
    "F16": src,
    "Q4_0": cache.quantized(src, "Q4_0", "tiny-Q4_0-pure.gguf", pure=True),
    "Q4_0 imatrix": cache.quantized(src, "Q4_0", "tiny-Q4_0-pure+imatrix.gguf", pure=True, imatrix=im_path),
    "Q4_0 GPTQ": gptq.cached_file(src, "Q4_0"),
    "Q4_0 AWQ": awq.quantized(src, "Q4_0", pure=True),
    "IQ4_NL": cache.quantized(src, "IQ4_NL", "tiny-IQ4_NL-pure.gguf", pure=True),
    "Q4_K": cache.quantized(src, "Q4_K_M", "tiny-Q4_K-pure.gguf", pure=True),
    "NF4 (run as F16)": lora.nf4_file(src),
    "Q4_K_M": q4km,
    "Q4_K_M imatrix": cache.quantized(src, "Q4_K_M", "tiny-Q4_K_M+imatrix.gguf", imatrix=im_path),
    "Q4_K_M-size budget": budget.cached_file(src, allocation, "tiny-budget-kl.gguf"),
}

bits = {label: evaluate.bits_per_weight(path) for label, path in files.items()}
f16 = forward.Llama.load(src)
bits["NF4 (run as F16)"] = lora.memory_bits_per_weight(f16)  # NF4's own bits, not the F16 file's
for label, path in files.items():
    print(f"{label:<20} {bits[label]:6.3f} bits per weight   {path.name}")
w = f16.weights["blk.0.ffn_down.weight"]
print(f"\nthe bundled model: {sum(w.size for w in f16.weights.values()) / 1e6:.1f} M weights, {f16.cfg.n_embd} wide; "
      f"an NF4 block matrix holds {nf4.bits_per_weight(nf4.quantize_nf4(w)):.3f} bits per weight")
measure = inspect.signature(budget.measure).parameters
n_ctx = f16.cfg.n_ctx
print(f"calibration tokens: GPTQ {gptq.settings()['n_chunks'] * n_ctx}, the importance matrix {im_chunks * n_ctx}, "
      f"AWQ {awq.N_CHUNKS * n_ctx}, the budget's sensitivities "
      f"{measure['n_chunks'].default * measure['n_ctx'].default}")
output = {c.name: c.type.name for c in kquant.plan_gguf(src, "Q4_K_M")}["token_embd.weight"]
print(f"the tied token_embd / output matrix: {output} in Q4_K_M, the 4-bit type in the --pure files, F16 in NF4's")

# %% [markdown]
"""
## 2. One table

`cache.compare` scores every file against the first (F16) on notebook 08's held-out text and tasks,
in llama.cpp: perplexity, KL divergence and top-1 agreement with F16 over 24 documents, and the
share of 200 sums answered right, each with its 95 % interval (a bootstrap over documents or tasks).
Files scored in earlier notebooks are not scored again.
"""

# %%
table = cache.compare(list(files.values()), n_docs=24, n_sums=200, speed_tokens=32)  # notebook 08's settings
rows = dict(zip(files, table.rows))
print(table)
print()
print(f"{'file':<20} {'bits':>6}  {'KL [95 % interval]':<30} {'top-1':>6}  {'sums':>5}")
for label, r in rows.items():
    if label != "F16":
        i = r.interval("kl")
        print(f"{label:<20} {bits[label]:6.3f}  {r.kl:.2e} [{i.low:.2e}, {i.high:.2e}]   {r.top1:6.3f}  "
              f"{r.accuracy['sums']:5.3f}")

# %% [markdown]
"""
## 3. Size against quality

A method is better than another only if it is **no larger and no worse**, and strictly one of
the two. The files that no other file beats that way form the *Pareto front*. The plot gives each
file a row, smallest first (many files here share one size, so a scatter against size would pile
them up): its value with its 95 % interval, filled when it is on the front. Switch the metric to
see whether the front holds for top-1, perplexity and the sums, and how much the intervals overlap.
"""

# %%
interact(compare.methods_view, rows=fixed(rows), bits=fixed(bits),
         metric=Dropdown(options=list(compare.METRICS), value="kl", description="metric"));

# %%
on_front = compare.front({k: (bits[k], rows[k].kl) for k in rows if k != "F16"})
print("on the KL front, smallest first:", ", ".join(on_front))

# %% [markdown]
"""
### Exercise 1 (the Pareto front)

Complete `pareto_front(rows)`: `rows` is a list of `(label, bits per weight, KL)`; return the
labels of the rows no other row beats (as small or smaller *and* as close or closer, one of them
strictly), in any order. Once it passes, try it on the measured table,
`pareto_front([(k, bits[k], rows[k].kl) for k in rows if k != "F16"])`: it must give the labels above.
"""

# %% answer q1
def pareto_front(rows):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(pareto_front)

# %% [markdown]
"""
## 4. Which differences are real

The front uses the measured values, and each has an interval. Two files scored on the *same*
documents are compared document by document: how hard a document is cancels out, and the paired
interval of the difference is much narrower than the two intervals side by side. Each method
against its own baseline at the same size (a negative KL difference is an improvement):
"""

# %%
pairs = [("Q4_0 imatrix", "Q4_0"), ("Q4_0 GPTQ", "Q4_0"), ("Q4_0 AWQ", "Q4_0"), ("IQ4_NL", "Q4_0"),
         ("Q4_0 GPTQ", "Q4_0 imatrix"), ("Q4_K", "IQ4_NL"), ("Q4_K_M imatrix", "Q4_K_M"),
         ("Q4_K_M-size budget", "Q4_K_M")]
verdicts = {}
for a, b in pairs:
    d = evaluate.difference(rows[a], rows[b], "kl")
    verdicts[a, b] = "within noise" if not d.excludes(0) else ("better" if d.high < 0 else "worse")
    print(f"KL {a:<19} − {b:<13} {d.value:+.2e} [{d.low:+.2e}, {d.high:+.2e}]  {verdicts[a, b]}")

# %% [markdown]
"""
### Exercise 2 (a verdict)

Complete `verdict(lo, hi, lower_is_better)`: `(lo, hi)` is the 95 % interval of (method − baseline);
return `"better"`, `"worse"` or `"within noise"`. Mind the direction: lower is better for KL and
perplexity, higher for top-1 and the sums.
"""

# %% answer q2
def verdict(lo, hi, lower_is_better):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(verdict)

# %% [markdown]
"""
### Exercise 3 (a paired interval)

`evaluate.difference` resamples the documents (a bootstrap). The simplest paired interval is the
normal one: complete `paired_interval(a, b)`, where `a[i]` and `b[i]` are one document's KL on two
files; return `(lo, hi)` = mean(b − a) ± 1.96 · sd(b − a) / √n, where sd is the sample standard
deviation (`ddof=1`).
"""

# %% answer q3
def paired_interval(a, b):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(paired_interval)

# %%
def per_document_kl(r):
    return r.per_doc["kl"] / r.per_doc["n"]  # each document's mean KL per position


a, b = per_document_kl(rows["Q4_0"]), per_document_kl(rows["Q4_0 GPTQ"])
half = 1.96 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
d = b - a
paired_half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
print(f"GPTQ − Q4_0, {a.size} documents: mean KL difference {d.mean():+.2e}")
print(f"  half-width of the 95 % interval, unpaired {half:.2e}, paired {paired_half:.2e} "
      f"({half / paired_half:.1f}× narrower)")

# %% [markdown]
"""
The per-document KLs of the two files rise and fall together (some documents are harder for every
file), so the paired interval is narrower than the unpaired one by the factor printed above: the
same data, read honestly, says more. (This mean difference weighs every document alike, short or
long; the table's KL is a total over all positions, so the two numbers differ.)

## 5. What the table says, and what it cannot

The verdicts above, gathered by the code from the measured intervals:
"""

# %%
better = [f"{a} (vs {b})" for (a, b), v in verdicts.items() if v == "better"]
noise = [f"{a} (vs {b})" for (a, b), v in verdicts.items() if v == "within noise"]
worse = [f"{a} (vs {b})" for (a, b), v in verdicts.items() if v == "worse"]
print("lower KL, beyond the noise:", "; ".join(better) or "none")
print("within the noise:          ", "; ".join(noise) or "none")
print("higher KL, beyond the noise:", "; ".join(worse) or "none")
print("on the KL Pareto front:    ", ", ".join(on_front))

# %% [markdown]
"""
Three things the table's construction decides, not the methods: NF4 quantizes only the blocks'
matrices, as bitsandbytes does, so its tied embedding, which is also the output layer, stays at 16
bits (its point on the bits axis counts them); NF4's file runs on llama.cpp's F16 path, where the
quantized files' matrix products round the activations to 8 bits (notebook 17 measures that floor);
and Q4_K_M gives the output matrix Q6_K, where the `--pure` files give it their 4-bit type.

Read these lines with the model in mind. It is tiny (section 1 printed its size) and trained on
generated text: behind its RMSNorms its activations have no outlier channels, and only ffn_down's
input has moderately loud ones, while AWQ was built for large models' outliers (notebook 12
measured both and showed the gain appear once a few channels are 20-100× louder);
llama.cpp's published figures for Llama-3-8B put the importance matrix's gain at 10-25 % of KL
(notebook 10). Rankings measured here are facts about this model and this text; they are the
method for checking a claim on yours, not a verdict on every model.
"""

# %% [markdown]
"""
## Summary

* A comparison of quantization methods has two axes: bits spent and closeness to F16. The Pareto
  front keeps the files no other file beats on both.
* A difference counts when its paired 95 % interval excludes 0; the same documents scored on two
  files must be compared document by document.
* On this model, section 5 printed which methods lowered KL beyond the noise at their size, which
  were within it, and which files are on the front; NF4 is placed at the bits it keeps in memory,
  because llama.cpp runs it only as F16.
"""
