# %% [markdown]
"""
# 00 · Start here

This workbook takes you from rounding π to writing a block of a language model's weights
in **Q4_K**, the format behind most "Q4_K_M" model files, byte for byte as llama.cpp writes
it. Every number it shows is computed in front of you, and every encoder it uses is checked
against llama.cpp's own C code.

| notebook | what you will do |
|---|---|
| 00 · Start here | run the workbook, check your setup, learn how exercises work |
| 01 · Rounding π | fixed point, 6 dB per bit, rounding modes, float bit fields, memory arithmetic |
| 02 · Scale and zero point | quantize a weight tensor symmetrically and asymmetrically; what one outlier does |
| 03 · Blocks | a scale per block, the real bits per weight, and your first llama.cpp-exact block (Q4_0) |
| 04 · Q4_K, the super-block | sub-block scales, the weighted scale search, 6-bit packing, a byte-exact Q4_K block |
| 05 · The K family | Q2_K … Q6_K side by side; error against bits per weight for every format shown |
| 06 · The Q4_K_M recipe | which type llama.cpp gives each tensor of a model, and why |
| 07 · Inside a GGUF file | a model file byte by byte: header, metadata, tensor table, data |
| 08 · Running the model | the model in llama.cpp at several mixes: perplexity, KL divergence, task accuracy |
| 09 · Claims and measurements | popular claims about quantization, each checked by a computation or a measurement |
| 10 · Importance matters | an importance matrix, collected and used, and what it changes |

The terms of the trade (ggml, GGUF, SQNR, block, super-block, K-quant, bits per weight,
KV cache, …) are explained where a notebook first uses them, and collected in the
[glossary](../docs/glossary.md).

**After this notebook you will be able to**

* run the workbook in JupyterLab, on Colab or in a classroom;
* check that your environment has everything (and fix it if not);
* answer an exercise and use `check`, `hint` and `solution`.
"""

# %% [markdown]
"""
## 1. How to run it

* **JupyterLab** (recommended): in a checkout of the repository, `make lab` creates a
  virtual environment in `.venv/`, installs what a student needs (kquant with its bundled
  model, JupyterLab, and llama-cpp-python, which compiles llama.cpp once: it says so before
  it starts, and takes several minutes) and opens this folder. `make test` runs every test.
* **Colab**: click the "Open in Colab" badge under a notebook's title. The notebook's first
  code cell installs what Colab lacks (kquant with its bundled model, the pinned `gguf`, and,
  in the notebooks that run llama.cpp, `llama-cpp-python`): about a minute, or about ten if no
  prebuilt llama-cpp-python fits Colab's Python and llama.cpp has to be compiled. Anywhere else
  that cell does nothing. Its steps are in `kquant/colab.py`.
* **Without llama.cpp** (`pip install kquant` without the `llama` extra): notebooks 01-07 run
  to the end, and where they compare kquant's bytes with llama.cpp's they use the sha256 of
  llama.cpp's output recorded in the package, and say so; the notebooks that run models in
  llama.cpp say in one line what to install.
* **Classroom**: every exercise is also an nbgrader assignment. How to generate, release,
  collect and autograde them is in the instructor guide, `docs/teaching.md`.

Run the notebooks in order, top to bottom (Shift-Enter, or *Run All*). A fresh notebook
runs to the end without an error, whatever you have or have not answered.

## 2. Is everything here?

The self-test below checks Python, the packages and versions the workbook is pinned to,
that llama.cpp's own quantizer loads and agrees with kquant, and whether the bundled model
is there yet. Every line marked ✘ comes with a one-line fix.

**ggml** is the C library under llama.cpp that defines the block formats and their
encoders (`ggml/src/ggml-quants.c`); "llama.cpp's quantizer" below means those C functions.
"""

# %%
try:
    from kquant import selftest
except ImportError as err:
    print(f"✘ kquant cannot be imported ({err})  →  fix: run `make lab` in the repository (or pip install -e . there)")
else:
    display(selftest.report())

# %% [markdown]
"""
### The bundled model

Later notebooks quantize and run one model that ships with the workbook,
`data/kquant-tiny-f16.gguf`, a **GGUF** file (llama.cpp's model format: metadata, tokenizer
and every weight tensor in one file; notebook 07 reads one byte by byte). It is a small llama (the same architecture as Llama 2 and 3, at
toy size), trained by `scripts/train_model.py` on text that `kquant.model.corpus`
generates: short stories, two-digit sums and made-up facts. It is a **toy**: its
perplexities and accuracies are not those of a real LLM, only the *differences* between
formats on it teach something. Its size, read from the file:
"""

# %%
from kquant import KQuantError
from kquant.gguf import summary
from kquant.model import hub

try:
    model = summary.inspect_gguf(hub.bundled())
except KQuantError as err:  # a copy without the model: the self-test above says how to get it
    print("the bundled model is not here yet:", err)
else:
    meta = dict(model.metadata)
    print(f"{model.path.name}: {model.n_weights:,} weights ({model.n_weights / 1e6:.1f} M) in {len(model.rows)} tensors, "
          f"{meta['llama.block_count']} layers, {meta['llama.attention.head_count']} attention heads; "
          f"Llama-2-7B's 6.74 billion weights are {6.74e9 / model.n_weights:,.0f} times as many")

# %%
import math

import numpy as np
from ipywidgets import FloatSlider, IntSlider, interact

from kquant import viz
from kquant.exercises import nb00 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two

# %% [markdown]
"""
## 3. The idea in one picture

With *b* bits you can store 2<sup>*b*</sup> different numbers, the **levels**. Quantizing
means replacing each value by its nearest level. Move the sliders: how far is *x* from its
level at 2 bits? At 8?
"""

# %%
interact(viz.levels_view, bits=IntSlider(value=3, min=1, max=8, description="bits"), x=FloatSlider(value=0.3, min=-1.0, max=1.0, step=0.01, description="x"));

# %% [markdown]
"""
Notice that no level sits at 0. The picture spreads 2<sup>*b*</sup> levels evenly over
[−1, 1], both ends included: an even number of levels, placed symmetrically, so 0 falls
exactly halfway between the two middle ones, and a weight of 0 comes back as a small
non-zero number. Real formats care about 0: notebook 02's symmetric scheme gives up one
level to store 0 exactly, and its asymmetric scheme shifts the grid until 0 is a level.
"""

# %% [markdown]
"""
## 4. How exercises work

Every exercise asks you to complete a **function**. Its cell looks like this:

```python
def levels(bits):
    # YOUR CODE HERE
    raise NotImplementedError()
```

Replace those two lines with your code, run the cell, then run the check cell below it.
The check calls your function on fresh random inputs (so it tests what your function
*does*, not one memorised value) and answers in one line:

* `✔` correct; `✘` wrong, with what is wrong; `…` not attempted yet.
* `ex.q1.hint()` shows a hint (call it again for the next one).
* `ex.q1.solution()` shows a complete solution, when you want to compare.

In the notebooks as shipped the two lines sit between two marker comments (`### BEGIN …`
and `### END …`): write your code between them and leave the markers where they are,
classroom grading uses them. A check never crashes on an odd answer, it says what is
wrong. Here is what it says when given the wrong thing, a number instead of a function
(`evaluate` is `check` without the grading: a demonstration must not count as an attempt):
"""

# %%
ex.q1.evaluate(42)

# %% [markdown]
"""
### Exercise 1 (levels)

Complete `levels(bits)`: how many different values can `bits` bits store?
"""

# %% answer q1
def levels(bits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(levels)

# %% [markdown]
"""
Stuck? Ask for a hint:
"""

# %%
ex.q1.hint()

# %% [markdown]
"""
### Exercise 2 (bits needed)

Complete `bits_needed(n_levels)`: the fewest bits that can store `n_levels` different
values (256 levels need 8 bits, 257 need 9, 1 level needs 0). `math` is imported.
"""

# %% answer q2
def bits_needed(n_levels):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(bits_needed)

# %% [markdown]
"""
### Exercise 3 (the levels themselves)

Complete `levels_in_range(lo, hi, bits)`: the 2<sup>bits</sup> evenly spaced levels from
`lo` to `hi`, both included, as a numpy array: the blue lines of the picture above
(there, `lo` = −1 and `hi` = 1).
"""

# %% answer q3
def levels_in_range(lo, hi, bits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(levels_in_range)

# %% [markdown]
"""
## Summary

* Run the workbook with `make lab` (or on Colab, or under nbgrader), in order, top to bottom.
* The self-test says what is installed and how to fix what is not.
* Exercises: complete the function, run the check; `hint()` and `solution()` help, and an
  odd answer gets a message, never a crash.
* *b* bits give 2<sup>*b*</sup> levels; quantizing replaces a value by its nearest level.

Next, **01 · Rounding π**.
"""
