# %% [markdown]
"""
# 12 · AWQ: protecting the weights that meet large activations

Notebook 10 weighed each column's rounding error by the activation it meets. **AWQ**
(activation-aware weight quantization, Lin et al. 2023, [arXiv 2306.00978](https://arxiv.org/abs/2306.00978))
acts on the same observation with a different tool: instead of changing the encoder, it changes
the *weights* before an ordinary round-to-nearest encoder sees them. It multiplies the columns that
meet large activations by a factor `s > 1`, divides the activations by the same factor, and folds
that division into the layer in front, so the file is still a plain llama GGUF that llama.cpp runs.

This notebook builds AWQ on the bundled model (`kquant.methods.awq`, which mirrors the reference
implementation, mit-han-lab/llm-awq's `auto_scale.py`; the reference's second step, the clipping
search of `auto_clip.py`, is left out, and the paper's figures include it), measures it against
round-to-nearest at the same size, and then asks why the gain is small here and large in the paper.

**After this notebook you will be able to**

* pick a matrix's salient input channels by activation, and say why weight magnitude is the wrong guide;
* show that `W·diag(s) · diag(s)⁻¹x = Wx`, and fold `diag(s)⁻¹` into an RMSNorm so nothing changes at run time;
* run AWQ's α search (`s = mean|x|^α`) and read its curve;
* measure an AWQ file against round-to-nearest with paired intervals, and explain the result by the
  distribution of activation magnitudes, with a controlled experiment where outlier channels exist.

Words such as *imatrix*, *block*, *round-to-nearest* and *95 % interval* are defined in the [glossary](../docs/glossary.md).
"""

# %%
import numpy as np
from ipywidgets import FloatSlider, fixed, interact

from kquant import llamacpp, viz
from kquant.exercises import nb12 as ex
from kquant.methods import awq
from kquant.model import cache, calibrate, corpus, evaluate, forward, hub, runner, scores

viz.setup()  # figures sized to need no "tight" crop: one layout pass per redraw, not two
llamacpp.notebook_needs("this notebook collects activations on text cut by llama.cpp's tokenizer and runs the AWQ files in llama.cpp");  # without llama.cpp: one line, the rest skipped

# %% [markdown]
"""
## 1. Salient channels: chosen by activation

Run the model on calibration text (the held-out documents of `calibrate.calibration_text()`, the
text AWQ calibrates on: two chunks of 256 tokens) and on a different held-out stretch (to measure),
and keep every matrix's input with the forward pass's `observe` hook:
"""

# %%
f16 = forward.Llama.load(hub.bundled())
cal = calibrate.chunks(f16, calibrate.calibration_text(), f16.cfg.n_ctx, awq.N_CHUNKS)
held_out_text = corpus.text(corpus.documents(corpus.HELD_OUT_SEED, 12, held_out=True)).removeprefix(corpus.BOS)
tokens = np.array(calibrate.tokenize(f16, held_out_text)[:256])
seen_cal, seen_held = awq.calibration_inputs(f16, cal), awq.calibration_inputs(f16, [tokens])


def inputs(name):
    """A matrix's inputs: (calibration tokens, held-out tokens), one row per token."""
    return np.concatenate(seen_cal[name]), seen_held[name][0]


print(f"{len(cal)} calibration chunks of {len(cal[0])} tokens; {len(tokens)} held-out tokens")

# %% [markdown]
"""
AWQ's statistic is the mean **|x|** of each input channel over the calibration tokens (`get_act_scale`
in the reference). How uneven is it? For four inputs of each block, the loudest channel's mean |x|
divided by the median channel's:
"""

# %%
KINDS = {"attn_q": "attn_norm output", "attn_output": "attention mix", "ffn_gate": "ffn_norm output",
         "ffn_down": "SwiGLU product"}
spread = {k: [float(awq.activation_scale(inputs(f"blk.{i}.{k}.weight")[0]).max()
                    / np.median(awq.activation_scale(inputs(f"blk.{i}.{k}.weight")[0])))
              for i in range(f16.cfg.n_layer)] for k in KINDS}
for k, what in KINDS.items():
    print(f"input of {k:<12} ({what:<16}): loudest / median channel {min(spread[k]):5.1f} … {max(spread[k]):5.1f}× "
          "across the blocks")
viz.channel_magnitudes_plot({f"blk.2.{k} ({KINDS[k]})": awq.activation_scale(inputs(f"blk.2.{k}.weight")[0])
                             for k in KINDS}, "block 2: every channel's mean |x|, loudest first")

# %% [markdown]
"""
The inputs that come out of an RMSNorm are nearly flat here; the input of `ffn_down` (the SwiGLU
product) has a few channels an order of magnitude louder than the median. The AWQ paper's first
experiment (its Table 1, on OPT models) keeps 1 % of the input channels of every matrix in FP16
and rounds the rest: chosen by activation it recovers most of the loss, chosen by weight
magnitude hardly more than at random.

### Exercise 1 (salient channels)

Complete `salient_channels(w, x, k)`: the indices of the `k` input channels whose activations
(`x`, one row per token) have the largest mean |x|. (`w` is the matrix; you may not need it.)
"""

# %% answer q1
def salient_channels(w, x, k):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q1
ex.q1.check(salient_channels)

# %% [markdown]
"""
Now the experiment on the two matrices with the loudest channels. Round-to-nearest to Q4_0, and
the same with 1 % of the columns kept exact (`awq.protect`), chosen three ways; the measure is each
held-out token's relative output error `‖x Ŵᵀ − x Wᵀ‖ / ‖x Wᵀ‖`, averaged, with a 95 % interval
over the tokens, and the paired difference between the activation and the weight choice:
"""

# %%
rng = np.random.default_rng(12)
print(f"{'matrix':<22}{'RTN':>9}{'by activation':>15}{'by weight':>11}{'random':>9}   activation − weight")
for name in ["blk.2.ffn_down.weight", "blk.4.ffn_down.weight"]:
    w, (xc, xe) = f16.weights[name], inputs(name)
    k = w.shape[1] // 100
    choices = {"by activation": np.argsort(-awq.activation_scale(xc))[:k],
               "by weight": np.argsort(-np.linalg.norm(w, axis=0))[:k],
               "random": rng.choice(w.shape[1], k, replace=False)}
    rtn = awq.relative_output_error(w, awq.round_trip(w, "Q4_0"), xe)
    err = {c: awq.relative_output_error(w, awq.protect(w, ch, "Q4_0"), xe) for c, ch in choices.items()}
    d = scores.paired_difference(err["by activation"], err["by weight"])
    print(f"{name:<22}{rtn.mean():9.4f}{err['by activation'].mean():15.4f}{err['by weight'].mean():11.4f}"
          f"{err['random'].mean():9.4f}   {d} (excludes 0: {d.excludes(0)})")

# %% [markdown]
"""
The paper's point holds here, measured: the loud columns chosen by activation lower the output error
more than the same number chosen by weight size (the last column's interval excludes 0). The gain
itself is modest on this model: the error falls by about a tenth, nothing like the near-complete
recovery of perplexity the paper reports for OPT. Section 5 shows why.

## 2. The scale trick, and where `diag(s)⁻¹` goes

Keeping some columns in FP16 makes a mixed-precision matrix, which llama.cpp's formats cannot hold.
AWQ's trick keeps every weight in the same format: for any positive `s`,

`y = W x = (W · diag(s)) · (diag(s)⁻¹ · x)`.

Multiply column j by `s_j > 1` before quantizing: its weights get larger while the block's step,
set by the block's largest weight, stays the same unless this column holds it, so its rounding
error *after dividing back by* `s_j` shrinks by about `s_j`. Exactly, before any quantization:
"""

# %%
name = "blk.2.ffn_down.weight"
w, (xc, xe) = f16.weights[name], inputs(name)
s = awq.scales(awq.activation_scale(xc), 0.5)
print(f"scales from {s.min():.3f} to {s.max():.3f} (s = mean|x|^0.5, divided by sqrt(max · min))")
print("max |(x / s) @ (W * s).T − x @ W.T| =", float(np.abs((xe / s) @ (w * s).T - xe @ w.T).max()),
      f"(outputs up to {float(np.abs(xe @ w.T).max()):.1f}; float32 rounding)")

# %% [markdown]
"""
Dividing the activations by `s` at run time would cost a multiplication per channel. It costs
nothing if whatever *produces* `x` is rescaled instead. In front of attn_q, attn_k and attn_v (and
of ffn_gate and ffn_up) sits an RMSNorm, whose last step multiplies channel j by its weight
`g_j`: divide `g` by `s` and the three matrices see `x / s`. In front of ffn_down sits the product
`silu(gate) · up`: divide row j of ffn_up by `s_j`. In front of attn_output sits attn_v, but only
when each row of attn_v feeds one column of attn_output; with grouped-query attention (this model
has 4 query heads and 2 key/value heads) one row feeds two, and the reference skips that group.

### Exercise 2 (fold into the norm)

Complete `fold(norm, w, s)`: return `(new_norm, new_w)` such that the RMSNorm with weight `new_norm`
followed by `new_w` computes what `norm` followed by `w` computed, and `new_w`'s columns are
multiplied by `s`.
"""

# %% answer q2
def fold(norm, w, s):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q2
ex.q2.check(fold)

# %% [markdown]
"""
On the whole model: `awq.search` finds a scale per group for every block (section 3; the search
for the Q4_K_M file is cached in kquant's results folder), `awq.apply` folds them all (norm weights
and matrices), and the rescaled model, *before any quantization*, must compute what the original
computes. In numpy, float32:
"""

# %%
result = {"Q4_K_M": awq.search(hub.bundled(), "Q4_K_M")}  # minutes the first time, then from the cache

# %%
result["Q4_0"] = awq.search(hub.bundled(), "Q4_0", pure=True)  # the search for pure Q4_0, used in sections 3-4

# %%
new = awq.apply(f16.weights, result["Q4_K_M"])
rescaled = forward.Llama(f16.cfg, {**f16.weights, **new})
ratio = new["blk.2.attn_norm.weight"] / f16.weights["blk.2.attn_norm.weight"]
print(f"{len(new)} tensors rescaled; blk.2.attn_norm.weight multiplied by {ratio.min():.3f} … {ratio.max():.3f}")
a, b = f16.logits(tokens), rescaled.logits(tokens)
print(f"numpy: max |logit difference| {np.abs(b - a).max():.2e} (logits up to {np.abs(a).max():.1f}), "
      f"same next token at {np.mean(a.argmax(-1) == b.argmax(-1)):.1%} of positions")

# %% [markdown]
"""
And in llama.cpp: `awq.quantized(..., out_mix="F16")` writes the rescaled weights (matrices and
norms) into an ordinary F16 GGUF with `quantize_gguf(weights=...)`. Its weights are rounded to F16
once more, so the logits may move by F16 rounding, not more:
"""

# %%
f16_awq = awq.quantized(hub.bundled(), "Q4_K_M", out_mix="F16")
logits = {}
for label, path in [("F16", hub.bundled()), ("F16, rescaled", f16_awq)]:
    m = runner.load(path, n_ctx=256)
    logits[label] = m.logits(tokens.tolist())
    m.close()
a, b = logits["F16"], logits["F16, rescaled"]
print(f"llama.cpp: max |logit difference| {np.abs(b - a).max():.2e}, KL {scores.kl_divergence(a, b):.1e}, "
      f"same next token at {scores.top1_agreement(a, b):.1%} of positions")

# %% [markdown]
"""
## 3. Choosing α

How large should `s` be? AWQ takes `s = mean|x|^α` (normalised), so α = 0 is plain round-to-nearest
and α = 1 scales each column by its whole activation size, and it searches α on a grid of 20
values in [0, 1): for each, quantize `W·diag(s)` in the real format, divide back by `s`, run the
calibration inputs through, and keep the α whose output is closest to the float output (mean
squared error). The slider does it for `blk.2.ffn_down.weight` in Q4_0: on the left, each
channel's part of the output error against its mean |x|; on the right, the search curve.
"""

# %%
x_mean, alphas, losses = awq.search_matrix(w, xc, "Q4_0")
interact(viz.alpha_view, w=fixed(w), x=fixed(xc), qtype=fixed("Q4_0"), alphas=fixed(alphas), losses=fixed(losses),
         alpha=FloatSlider(value=0.0, min=0.0, max=0.95, step=0.05, description="α"));

# %% [markdown]
"""
At α = 0 the loudest channels (right of the left panel) carry the largest part of the error; as α
grows their part falls and the quiet channels' part rises (their scales drop below 1). The curve
on the right has its minimum in the middle.

### Exercise 3 (the α search)

Complete `best_alpha(w, x, alphas, quantize)`: for each α, `s = mean|x|^α` per channel divided by
`sqrt(max(s) · min(s))`, the quantized matrix `quantize(w * s) / s`, and its output error
`mean((x Ŵᵀ − x Wᵀ)²)`; return the α with the smallest error. `quantize(m)` returns a quantized copy of `m`.
"""

# %% answer q3
def best_alpha(w, x, alphas, quantize):
    ### BEGIN SOLUTION
    ### END SOLUTION

# %% check q3
ex.q3.check(best_alpha)

# %% [markdown]
"""
`awq.search` runs that search for every group of every block, as the reference's `auto_scale_block`
does: for attn_q/k/v together the inspected output is the whole attention (softmax and attn_output
included), for ffn_gate/ffn_up the whole SwiGLU, for ffn_down the matrix itself. The format is the
file's own, per tensor (Q4_0 everywhere for pure Q4_0; Q4_K or Q6_K as `plan_gguf` says for Q4_K_M).
The curves of one block, and the α chosen everywhere:
"""

# %%
r = result["Q4_K_M"]
viz.search_curves_plot({g.group.prev.replace(".weight", "") + " → " + g.group.inspect: (g.alphas, g.losses)
                        for g in r.searches if g.group.prev.startswith("blk.2.")},
                       "Q4_K_M, block 2: the inspected output's error against α (★ the minimum)")
for mix, res in result.items():
    print(f"{mix}: α chosen per group, blocks 0-7")
    for kind in ["attn_norm", "ffn_norm", "ffn_up"]:
        found = [g for g in res.searches if g.group.prev.endswith(kind + ".weight")]
        gain = np.mean([g.losses.min() / g.losses[0] for g in found])
        print(f"  after {kind:<9}: {' '.join(f'{g.alpha:.2f}' for g in found)}   "
              f"mean error at the best α: {gain:.2f}× α = 0's")

# %% [markdown]
"""
The search lowers every group's calibration error, most for ffn_down (after ffn_up), whose input
has the loud channels, least for the groups behind an RMSNorm, whose inputs are flat.

## 4. Whole files

AWQ's files are written with `quantize_gguf(src, dst, mix, weights=rescaled)`: the rescaled
matrices and norms in, llama.cpp's ordinary round-to-nearest encoders on top, the same types as
without AWQ, so the same size. Scored against F16 on notebook 08's held-out text and tasks
(files and scores are cached; the first run takes minutes):
"""

# %%
files = {"F16": hub.bundled()}
for mix, pure in [("Q4_0", True), ("Q4_K_M", False)]:
    files[f"{mix} RTN"] = cache.quantized(hub.bundled(), mix, pure=pure)
    files[f"{mix} AWQ"] = awq.quantized(hub.bundled(), mix, pure=pure)
table = cache.compare(list(files.values()), n_docs=24, n_sums=200, speed_tokens=32)
by = dict(zip(files, table.rows))
print(table)

# %%
better_if = {"kl": "lower", "top1": "higher", "ppl": "lower"}
for mix in ["Q4_0", "Q4_K_M"]:
    a, b = by[f"{mix} AWQ"], by[f"{mix} RTN"]
    print(f"{mix}: {a.bpw:.2f} bpw both; KL {b.kl:.2e} (RTN) → {a.kl:.2e} (AWQ)")
    for metric, good in better_if.items():
        d = evaluate.difference(a, b, metric)
        sign = d.value < 0 if good == "lower" else d.value > 0
        print(f"  {metric:<5} AWQ − RTN: {d}  → {('better' if sign else 'worse') if d.excludes(0) else 'within the noise'}")

# %% [markdown]
"""
Read the verdicts above before any sentence about them: they are this sample's answer. On the whole
model, AWQ's paired differences in KL and top-1 are within the noise for both formats, and its
perplexity differs from round-to-nearest's by less than 0.01 (the verdict line says whether that is
more than noise).

Inside, first what the search minimised, on other text: each group's inspected output (the whole
attention, the whole SwiGLU, ffn_down's output) with round-to-nearest and with AWQ's scales, on the
held-out tokens, inputs from the F16 model (`awq.group_errors`; `awq.held_out_errors` keeps these
numbers and the next ones in the cache):
"""

# %%
kinds = {"attn_norm": "attention (q, k, v)", "ffn_norm": "SwiGLU (gate, up)", "ffn_up": "ffn_down"}
held = {mix: awq.held_out_errors(hub.bundled(), mix, pure=pure, tokens=tokens)  # cached, like the files
        for mix, pure in [("Q4_0", True), ("Q4_K_M", False)]}
for mix in held:
    for kind, what in kinds.items():
        pairs = [v for k, v in held[mix].items() if k.startswith("group/") and k.endswith(kind + ".weight")]
        lower = sum(a < r for r, a in pairs)
        ratio = np.exp(np.mean([np.log(a / r) for r, a in pairs]))
        print(f"{mix:<7} {what:<20}: AWQ's held-out error lower in {lower} of {len(pairs)} blocks, "
              f"geometric mean AWQ / RTN {ratio:.2f}")

# %% [markdown]
"""
The search's gain carries over to new text where there are loud channels (ffn_down) and much less
behind the RMSNorms. Now each matrix's own output error on the same held-out inputs
(`forward.matmul_errors`, notebook 10) in the two files, round-to-nearest's and AWQ's with its scales
taken out again (`awq.undo`: what each AWQ matrix computes on the original inputs):
"""

# %%
own = {f"{mix} {label.upper()}": {k.split("/", 1)[1]: float(v) for k, v in held[mix].items() if k.startswith(label + "/")}
       for mix in held for label in ["rtn", "awq"]}
for mix in ["Q4_0", "Q4_K_M"]:
    for kind in ["attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up", "ffn_down"]:
        names = [f"blk.{i}.{kind}.weight" for i in range(f16.cfg.n_layer)]
        lower = sum(own[f"{mix} AWQ"][n] < own[f"{mix} RTN"][n] for n in names)
        print(f"{mix:<7} {kind:<9}: AWQ's own output error lower in {lower} of {len(names)} blocks, mean "
              f"{np.mean([own[f'{mix} RTN'][n] for n in names]):.4f} → {np.mean([own[f'{mix} AWQ'][n] for n in names]):.4f}")
viz.layer_errors_plot({f"{label}, {k}": np.array([own[label][f"blk.{i}.{k}.weight"] for i in range(f16.cfg.n_layer)])
                       for k in ["ffn_down", "ffn_gate"] for label in ["Q4_0 RTN", "Q4_0 AWQ"]},
                      "each matrix's own output error, by layer", ylabel="‖x Ŵᵀ − x Wᵀ‖ / ‖x Wᵀ‖")

# %% [markdown]
"""
ffn_down, whose α was chosen by its own output error, gains; q, k, v, gate and up were chosen by the
error of the block they feed, so their own errors may rise or fall.

One more look, at the matrix with the loudest channels: the search minimises the *mean squared*
output error, which a few tokens with very large outputs dominate. The typical token's relative
error is another measure; both on the held-out tokens, for `blk.2.ffn_down.weight` in Q4_0:
"""

# %%
w, (xc, xe) = f16.weights[name], inputs(name)
g = result["Q4_0"].by_prev("blk.2.ffn_up.weight")
norms = np.linalg.norm(xe @ w.T, axis=1)
print(f"held-out output norms: median {np.median(norms):.1f}, largest {norms.max():.1f}; α chosen {g.alpha:.2f}")
for label, w_hat in [("RTN", awq.round_trip(w, "Q4_0")), ("AWQ", awq.scaled_round_trip(w, g.scales, "Q4_0"))]:
    rel = awq.relative_output_error(w, w_hat, xe)
    print(f"{label}: mean squared output error {np.mean((xe @ w_hat.T - xe @ w.T) ** 2):.2e}, "
          f"mean per-token relative error {scores.mean_interval(rel)}")

# %% [markdown]
"""
The mean squared error falls, as the search intended, and the typical token's relative error *rises*:
a few tokens whose outputs are far larger than the median's dominate a mean of squares, and AWQ
trades the typical token's precision for theirs. Which of the two matters for the next-token
distribution is what section 4's KL measured.

## 5. Why so little here: no outlier channels

AWQ's premise, and LLM.int8's before it (Dettmers et al. 2022, who found such channels emerging in
models from about 6.7 B parameters on), is that large language models have a few input channels
whose activations are far larger than the rest: protect those and most of the damage is avoided. Section 1 measured this model: behind every RMSNorm the loudest channel is less
than twice the median, and only the SwiGLU product has loud channels. A controlled experiment shows
what changes when outliers exist: take `blk.3.ffn_gate.weight` and its real inputs (flat ones),
multiply the same 4 of its 256 input channels by a factor, in the calibration inputs that choose α
and in the held-out inputs that measure, and compare round-to-nearest with AWQ (Q4_0):
"""

# %%
gate = "blk.3.ffn_gate.weight"
factors = [1, 5, 20, 50, 100]
runs = awq.outlier_experiment(f16.weights[gate], *inputs(gate), factors, "Q4_0")
rtn_i, awq_i = [scores.mean_interval(r.rtn) for r in runs], [scores.mean_interval(r.awq) for r in runs]
for r, a, b in zip(runs, rtn_i, awq_i):
    d = scores.paired_difference(r.awq, r.rtn)
    print(f"outliers ×{r.factor:<5g} α {r.alpha:.2f}: RTN {a}, AWQ {b}, AWQ / RTN {b.value / a.value:.2f}, "
          f"paired difference {d}")
viz.outlier_plot(factors, rtn_i, awq_i, f"{gate}, 4 input channels × factor: mean relative output error (95 % intervals)")

# %% [markdown]
"""
Without outliers (factor 1) AWQ's gain on this matrix is about 1 % (the first line). With a few channels
20-100× larger, round-to-nearest's error grows (those channels' rounding errors are multiplied by
large activations) and AWQ's falls far below it, by the ratios printed above: the regime the paper
was built for. The bundled model, trained small and briefly on simple text, has loud channels only
in the SwiGLU product (section 1), where AWQ's block error fell most (section 4), and none behind its
RMSNorms, where LLM.int8 found the outliers of large models; on the whole file that was not enough
to move KL beyond the noise.
"""

# %% [markdown]
"""
## Summary

* AWQ's salient channels are those that meet the largest mean |activation|; measured here, keeping
  them exact lowers a matrix's output error more than keeping the largest weights.
* `W·diag(s) · diag(s)⁻¹x = Wx`: scaling a column up before rounding shrinks its error after dividing
  back; `diag(s)⁻¹` is folded into the RMSNorm weight (or the matrix in front), so the rescaled
  model computes the same function (numpy and llama.cpp above) and the file stays a plain GGUF.
* α is chosen per group by the output error of the block on calibration text, with the file's own
  formats; the search lowers that error most where the loud channels are (ffn_down).
* On the whole file, AWQ's KL and top-1 are within the noise of round-to-nearest's at the same size,
  although on held-out text it lowers the error of the blocks it optimises, most for ffn_down. Its loss,
  a mean square, is dominated by a few large tokens. Section 5 shows that the gain grows with outlier
  channels that this model does not have.
"""
