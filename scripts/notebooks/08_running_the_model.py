# %% [markdown]
"""
# 08 · Running the model

So far we have looked at weights. This notebook runs them: the bundled model in F16 and in
seven llama.cpp mixes, loaded with llama-cpp-python (the same C code as llama.cpp's own
tools), writing stories and answering questions side by side. Then it measures what each
mix costs in the three numbers people use to compare quantized files, and one number that
matters more than any of them: whether the answers change.

**After this notebook you will be able to**

* load a GGUF file in llama.cpp from Python, generate text and score answers;
* compute perplexity, KL divergence and top-1 agreement from logits yourself;
* read a quantization table (size, bits per weight, perplexity, KL, top-1, task accuracy, speed)
  and say which column shows damage first;
* explain why perplexity alone can hide what quantization does;
* read a 95 % interval, and tell a difference between two files from the noise of the sample.

Words such as *KV cache*, *perplexity*, *KL divergence* and *95 % interval* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import os

import numpy as np
from ipywidgets import Dropdown, fixed, interact

import kquant
from kquant.model import cache, corpus, evaluate, hub, runner, scores
from kquant import llamacpp, viz
from kquant.exercises import nb08 as ex

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook runs the bundled model and seven mixes in llama.cpp and shows their answers and scores (ppl, KL divergence, top-1, task accuracy) side by side");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. The F16 model, talking

The bundled model (notebook 00) was trained on three kinds of text that `kquant.model.corpus`
generates: short stories, two-digit sums, and questions about 128 made-up countries. Load it
in llama.cpp and give it one of each. The story is sampled (temperature 0.8, a fixed seed,
so it is the same every run); the answers are greedy.
"""

# %%
f16 = runner.load(hub.bundled(), n_ctx=256)
print("Once upon a time" + f16.generate("Once upon a time", max_tokens=60, seed=1))
tasks = evaluate.held_out_tasks()
sum_task = next(t for t in tasks if t.kind == "sums" and len(t.prompt) == len("47 + 89 ="))
fact_task = next(t for t in tasks if t.kind == "facts")
for t in (sum_task, fact_task):
    print(t.prompt + f16.generate(t.prompt, max_tokens=8, temperature=0.0).split("\n")[0], "   expected:", t.answer.strip())

# %% [markdown]
"""
The tasks come from `evaluate.held_out_tasks()`: sums the model never saw in training (one
in eight sums is held out by a fixed rule), and the 128 facts it memorised.

## 2. Seven quantized files

`kquant.quantize_gguf` writes each mix (notebook 07 showed the bytes are llama-quantize's).
`cache.quantized` calls it once per mix and keeps the file in kquant's cache folder, keyed by the
sha256 of the source model, the mix and the versions of kquant and llama.cpp, so notebooks 09 and
10 (and a second run of this one) reuse the files instead of writing them again; a changed model
gets new files. Writing all seven takes a few seconds the first time:
"""

# %%
MIXES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
files = {"F16": hub.bundled()}
for mix in MIXES:
    files[mix] = cache.quantized(hub.bundled(), mix, f"tiny-{mix}.gguf")  # quantize_gguf, once
for label, path in files.items():
    print(f"{label:<7} {os.path.getsize(path) / 1e6:6.2f} MB   {evaluate.bits_per_weight(path):5.2f} bits per weight")

# %% [markdown]
"""
## 3. Side by side

The same prompt and the same seed through F16, Q4_K_M and Q2_K. Sampling draws from each
model's own next-token distribution with the same random numbers, so the stories stay equal
while the distributions are close, and can part at a token where they are not. After that each
model continues from different text; the words may stay different, or, since every story
follows the same template, come back to the same ones. Compare the three:
"""

# %%
models = {label: runner.load(path, n_ctx=256) for label, path in files.items()}
stories = {label: models[label].generate("Once upon a time", max_tokens=50, seed=1) for label in ["F16", "Q4_K_M", "Q2_K"]}
for label, story in stories.items():
    words, ref_words = story.split(), stories["F16"].split()
    first = next((i for i, (a, b) in enumerate(zip(words, ref_words)) if a != b), None)
    where = "the same words as F16" if first is None else f"first different word: number {first + 1}"
    print(f"--- {label} ({where})\nOnce upon a time" + story)

# %%
sums = [t for t in tasks if t.kind == "sums"][:12]
for label in ["F16", "Q4_K_M", "Q2_K"]:
    answers = [models[label].generate(t.prompt, max_tokens=6, temperature=0.0).split("\n")[0].strip() for t in sums]
    right = sum(a == t.answer.strip() for a, t in zip(answers, sums))
    print(f"{label:<7} {right}/{len(sums)} right: " + "  ".join(f"{t.prompt} {a}" for t, a in zip(sums, answers)))

# %% [markdown]
"""
A dozen sums is an anecdote. Even F16 gets sums wrong (the lines above): this small model gets
fewer than half of the held-out sums right (the table in section 5 measures it on 200 of them),
so a wrong answer from a quantized file is not by itself quantization damage. What counts is
whether the answers *change*, and section 5 asks hundreds of questions to see it.

## 4. Three numbers from logits

A model's output at each position is a vector of logits, one per token of the vocabulary;
softmax turns it into the probabilities of the next token. Three numbers compare files:

* **perplexity**: exp of the mean negative log-probability the model gave to the token that
  actually came next. 1 would be a model that is always certain and always right.
* **KL divergence** KL(F16 ‖ file): per position, Σ p_F16 · (log p_F16 − log p_file), averaged over
  positions. It compares the *whole* distributions, not only the right token.
* **top-1 agreement**: the share of positions where both files' most likely token is the same.

Here are the logits of one held-out document from F16 and Q2_K:
"""

# %%
doc = evaluate.held_out_sequences(f16, n_docs=1)[0]
ref_logits, q2_logits = models["F16"].logits(doc), models["Q2_K"].logits(doc)
print(f"{len(doc)} tokens; logits shape {ref_logits.shape} (positions × vocabulary)")
print(models["F16"].detokenize(doc[:40]) + " …")

# %% [markdown]
"""
### Exercise 1 (perplexity)

Complete `perplexity(logits, tokens)`: position `i` predicts `tokens[i + 1]`, so the last
position has nothing to score. `scores.log_softmax(logits)` gives log-probabilities.
"""

# %% answer q1
def perplexity(logits, tokens):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(perplexity)

# %% [markdown]
"""
### Exercise 2 (KL divergence)

Complete `kl_divergence(ref_logits, logits)`: the mean over positions of KL(reference ‖ file),
in nats (natural logs).
"""

# %% answer q2
def kl_divergence(ref_logits, logits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(kl_divergence)

# %% [markdown]
"""
### Exercise 3 (top-1 agreement)

Complete `top1_agreement(ref_logits, logits)`: the share of positions where both pick the
same most likely token.
"""

# %% answer q3
def top1_agreement(ref_logits, logits):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(top1_agreement)

# %% [markdown]
"""
`kquant.model.scores` keeps the same three functions (`scores.perplexity`, `scores.kl_divergence`,
`scores.top1_agreement`); the table below is made with them. On the document above:
"""

# %%
doc = np.array(doc)
print(f"ppl: F16 {scores.perplexity(ref_logits, doc):.4f}, Q2_K {scores.perplexity(q2_logits, doc):.4f}")
print(f"KL(F16 ‖ Q2_K) = {scores.kl_divergence(ref_logits, q2_logits):.2e} nats per token;  "
      f"top-1 agreement {scores.top1_agreement(ref_logits, q2_logits):.3f}")

# %% [markdown]
"""
## 5. The table

`evaluate.compare` does the same on 24 held-out documents, asks every file 200 held-out sums and
all 128 facts (greedy; an answer is right only if every token of it is the model's first
choice), counts the answers that *change* (right in one file, wrong in the other), and times
generation. The first file is the reference. Every number below is measured on this machine:
`cache.compare` runs `evaluate.compare`'s scoring once per file and keeps each file's scores in
kquant's cache folder, keyed by the sha256 of the file and of the reference, the settings and the
versions, so notebooks 09-10 and a second run reuse them (delete `kquant.model.cache.folder()` to
measure again). The **KV cache** (the keys and values of every earlier position, which llama.cpp keeps
so that each new token costs one step instead of rereading the whole text) is F32 in every run,
so only the weights differ.

24 documents and 200 sums are a sample: other documents would give other numbers. So each
number comes with a **95 % interval** (after ±, half its width): `evaluate` draws 24 documents
at random, with replacement, from the 24 it has, recomputes the score, and repeats 2,000 times
with a fixed seed (a *bootstrap*); the interval holds the middle 95 % of those scores. The unit
is the document, not the token, because the tokens of one story are not independent. (llama.cpp's
`llama-perplexity` prints its ± differently: one standard error over tokens, treating every token
as independent, `mean_and_uncertainty` in `tools/perplexity/perplexity.cpp`.)
"""

# %%
table = cache.compare(list(files.values()), n_docs=24, n_sums=200, speed_tokens=32)  # about 20 s the first time
for r, label in zip(table.rows, files):
    r.path = r.path.with_name(f"tiny-{label}.gguf")
print(table)

# %%
viz.scores_vs_bpw(table.rows, "What each mix costs the bundled model")

# %% [markdown]
"""
Perplexity's interval is wide: documents differ a lot in how predictable they are. But every file
was scored on the *same* documents, so two files are compared **paired**: each bootstrap draw takes
the same documents for both, and what the documents share cancels. `evaluate.difference(a, b,
metric)` gives a − b with its paired interval; a difference is more than noise when its interval
excludes 0. For perplexity (`"ppl"`):
"""

# %%
by_mix = dict(zip(files, table.rows))
for mix in ["Q8_0", "Q4_K_M", "Q2_K"]:
    print(f"ppl {mix} − F16:", evaluate.verdict(evaluate.difference(by_mix[mix], by_mix["F16"], "ppl"), "the difference"))
print(f"(unpaired, F16's own ppl: {by_mix['F16'].interval('ppl')})")

# %% [markdown]
"""
Read the table column by column (the sentences below are computed from it):
"""

# %%
ref, q4, q2 = by_mix["F16"], by_mix["Q4_K_M"], by_mix["Q2_K"]
print(f"ppl: F16 {ref.perplexity:.4f} → Q2_K {q2.perplexity:.4f}, "
      f"{q2.perplexity / ref.perplexity - 1:+.2%} at {q2.bpw:.2f} bits per weight;  Q4_K_M {q4.perplexity / ref.perplexity - 1:+.2%}")
print(f"KL: Q2_K {q2.kl:.1e} is {q2.kl / q4.kl:.0f}× Q4_K_M's {q4.kl:.1e};  Q8_0 {by_mix['Q8_0'].kl:.1e}")
print(f"top-1 agreement: Q4_K_M {q4.top1:.3f}, Q2_K {q2.top1:.3f}")
print(f"sums right: F16 {ref.accuracy['sums']:.1%}, Q4_K_M {q4.accuracy['sums']:.1%}, Q2_K {q2.accuracy['sums']:.1%};  "
      f"answers changed vs F16: Q4_K_M {q4.changed:.1%}, Q2_K {q2.changed:.1%}")
print(f"facts right: " + ", ".join(f"{k} {s.accuracy['facts']:.0%}" for k, s in by_mix.items()))
kl_order = [k for k, _ in sorted(by_mix.items(), key=lambda kv: kv[1].kl)][1:]
print("files ordered by KL:", " < ".join(kl_order))
for a, b in zip(kl_order, kl_order[1:]):
    d = evaluate.difference(by_mix[b], by_mix[a], "kl")
    print(f"  KL {b} − {a}: {d}", "(more than noise)" if d.excludes(0) else "(within the noise)")
print("sums right, Q2_K − F16:", evaluate.verdict(evaluate.difference(q2, ref, "sums")))

# %% [markdown]
"""
The right panel of the figure shows Q4_0 disagreeing with F16's favourite token *less* often than
Q6_K and Q4_K_M, though its KL is higher. Noise? The error bars in the figure are each file's own
interval, and they overlap; but overlapping bars do not settle it, because both files were scored
on the same documents. The paired differences do:
"""

# %%
for other in ["Q6_K", "Q4_K_M"]:
    d = evaluate.difference(by_mix["Q4_0"], by_mix[other], "top1")
    print(f"top-1 Q4_0 − {other}:", evaluate.verdict(d))
    print(f"   KL Q4_0 − {other}:", evaluate.verdict(evaluate.difference(by_mix["Q4_0"], by_mix[other], "kl")))

# %% [markdown]
"""
What to take from it:

* **Perplexity barely moves.** This model's text is easy for it (perplexity near 1), and the
  first line shows how little even the 2-bit file changes it. A perplexity delta "under 1 %"
  says less than it seems.
* **KL divergence separates the mixes**: the lines above give the order it puts them in and,
  for each neighbouring pair, whether the step exceeds its paired interval; compare the order
  with the bits per weight.
* **Top-1 agreement is coarser**: it only notices when the favourite token changes. The last
  lines say whether Q4_0's higher top-1 agreement is more than noise *on these documents*. Where it
  is, it is a real property of these files on this text, and it shows that top-1 and KL measure
  different things: KL counts every shift of probability, top-1 only the shifts that cross the
  first place. It does not make Q4_0 the better file: its KL is higher.
* **Answers change before accuracy does.** The "changed" column counts answers that went from
  right to wrong *or* wrong to right; accuracy only sees the difference of the two. The line on
  sums says whether Q2_K's loss of sums is more than the noise of 200 questions.
* **Memorised facts and computed sums differ**: compare the facts line with the sums line.
* **Speed** is measured now, on one thread; on a machine shared with other programs,
  differences of tens of percent between two runs are noise. Run the table cell again to see.

## 6. Try it: the next token, F16 against a mix

Pick a prompt and a mix. The bars are the eight tokens F16 finds likeliest, with the
probability each file gives them; the title gives the KL divergence at this one position.
"""

# %%
prompts = ["Tom had a red", "Once upon a time", sum_task.prompt, fact_task.prompt, "12 + 45 ="]  # an open story first
interact(viz.next_token_view, models=fixed(models), prompt=Dropdown(options=prompts, description="prompt"),
         name=Dropdown(options=MIXES, value="Q2_K", description="mix"), k=fixed(8));

# %% [markdown]
"""
## 7. Optional: a public model from the Hub

With a network, `hub.fetch()` downloads a small public F16 model (about 270 MB) and the same
comparison runs on it for Q8_0, Q4_K_M and Q2_K (a few minutes). Offline, or with `USE_HUB`
set to False, this cell says so and does nothing. The held-out tasks are the bundled model's
made-up facts and sums, so a public model's task accuracy means little; perplexity, KL and
top-1 on the held-out stories carry over.
"""

# %%
USE_HUB = True
try:
    public = hub.fetch(fallback=False, timeout=3) if USE_HUB else None
except kquant.KQuantError as e:
    print(f"skipped: {e}")
    public = None
if public is not None:
    hub_files = [public] + [cache.quantized(public, m) for m in ["Q8_0", "Q4_K_M", "Q2_K"]]
    print(cache.compare(hub_files, n_docs=16, n_sums=100))

# %% [markdown]
"""
## Summary

* llama-cpp-python runs a GGUF in a few lines: `runner.load(path).generate(prompt)`.
* Perplexity, KL divergence and top-1 agreement all come from the same logits; KL and top-1
  compare two files directly, perplexity compares each with the text.
* On the bundled model, section 5 measured the cost of each mix: perplexity hardly moves,
  KL divergence ranks the mixes, and answers change that accuracy alone does not show.
* Every score is a sample: its 95 % interval (bootstrap over documents) says how far another
  sample could move it, and a paired difference on the same documents says whether two files
  really differ.
* Notebook 09 puts the popular claims about quantization to the test with these tools.
"""
