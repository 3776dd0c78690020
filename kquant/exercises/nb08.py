"""Exercises of notebook 08, running the model: the three numbers that compare two files.

Every check feeds logits shaped like the bundled model's (positions × vocabulary) and
compares with ``kquant.model.evaluate``'s own functions, the code that makes the notebook's table.
"""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_number, call, plain
from kquant.model import scores


def _logits(rng, n: int, vocab: int) -> np.ndarray:
    """Logits with a clear favourite at most positions, as a trained model's are."""
    x = rng.standard_normal((n, vocab)) * 2.0
    x[np.arange(n), rng.integers(0, vocab, n)] += rng.uniform(2.0, 8.0, n)
    return x.astype(np.float32)


def _nearby(rng, ref: np.ndarray, noise: float) -> np.ndarray:
    """Another file's logits: the reference's plus quantization-sized noise."""
    return (ref + noise * rng.standard_normal(ref.shape)).astype(np.float32)


def _finite(value, what: str, large: bool) -> float:
    """as_number, with the overflow of a naive softmax named where the logits are large."""
    try:
        bad = not np.isfinite(float(np.asarray(plain(value), dtype=np.float64).reshape(())))
    except (TypeError, ValueError, OverflowError):
        bad = False
    if bad and large:
        raise Wrong(
            f"{what} is not a finite number: with logits in the hundreds, np.exp overflows (float32 tops out near "
            "e^88); subtract each row's largest logit before exp, as a log-softmax does"
        )
    return as_number(value, what)


def _check_perplexity(fn, rng):
    for k in range(6):
        n, vocab = int(rng.integers(8, 40)), int(rng.integers(20, 300))
        logits, tokens = _logits(rng, n, vocab), rng.integers(0, vocab, n)
        large = k == 5
        if large:
            logits = (logits * 40).astype(np.float32)  # a confident model's logits: exp overflows
        what = f"perplexity(<logits {logits.shape}>, <{n} tokens>) (case {k + 1})"
        got = _finite(call(fn, logits, tokens), what, large)
        nll = scores.nll(logits, tokens)
        want = scores.perplexity(logits, tokens)
        if np.isclose(got, want, rtol=1e-5):
            continue
        same_position = -scores.log_softmax(logits)[np.arange(n), tokens]
        if np.isclose(got, np.exp(same_position.mean()), rtol=1e-5) or np.isclose(
            got, np.exp(same_position[:-1].mean()), rtol=1e-5
        ):
            raise Wrong(f"{what} = {got:.4g}: position i predicts the NEXT token, tokens[i + 1], not tokens[i]")
        if np.isclose(got, nll.mean(), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: that is the mean negative log-likelihood; perplexity is exp of it")
        if np.isclose(got, 2 ** nll.mean(), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: the log-likelihoods are natural logs, so take exp, not 2 **")
        if np.isclose(got, np.exp(nll.sum()), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: average the negative log-likelihoods before exp, do not sum them")
        raise Wrong(f"{what} = {got:.4g}: that is not exp of the mean negative log-likelihood of the next tokens")
    return "the perplexity of 6 random sequences, position i scored on token i + 1, large logits included"


q1 = Exercise(
    "nb08",
    "q1",
    "perplexity(logits, tokens)",
    _check_perplexity,
    hints=[
        "log_probs = scores.log_softmax(logits) gives log p for every position and token; position i predicts "
        "tokens[i + 1].",
        "nll = -log_probs[np.arange(len(tokens) - 1), tokens[1:]]; the answer is np.exp(nll.mean()).",
    ],
    solution="""
    log_probs = scores.log_softmax(logits[:-1])  # the last position has no next token to score
    nll = -log_probs[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean()))
    """,
    forbidden=(scores.perplexity, scores.nll),
    task="the perplexity",
)


def _check_kl(fn, rng):
    for k in range(6):
        n, vocab = int(rng.integers(5, 40)), int(rng.integers(20, 300))
        ref = _logits(rng, n, vocab)
        large = k == 5
        if large:
            ref = (ref * 40).astype(np.float32)  # a confident model's logits: exp overflows
        other = _nearby(rng, ref, float(rng.uniform(0.05, 1.0)))
        what = f"kl_divergence(<ref {ref.shape}>, <logits {other.shape}>) (case {k + 1})"
        got = _finite(call(fn, ref, other), what, large)
        per_position = scores.kl_per_position(ref, other)
        want = scores.kl_divergence(ref, other)
        if np.isclose(got, want, rtol=1e-4, atol=1e-9):
            continue
        if np.isclose(got, scores.kl_divergence(other, ref), rtol=1e-4):
            raise Wrong(
                f"{what} = {got:.4g}: that is KL(file ‖ reference); weigh by the reference's probabilities, KL(ref "
                "‖ file)"
            )
        if np.isclose(got, per_position.sum(), rtol=1e-4):
            raise Wrong(f"{what} = {got:.4g}: that is the sum over positions; the table reports the mean per token")
        if np.isclose(got, -want, rtol=1e-4):
            raise Wrong(f"{what} = {got:.4g}: the sign is flipped: it is log p_ref − log p, weighed by p_ref")
        raise Wrong(
            f"{what} = {got:.4g}: that is not the mean over positions of Σ p_ref · (log p_ref − log p), with both"
            " turned into probabilities by a softmax"
        )
    same = _logits(rng, 6, 50)
    got = as_number(call(fn, same, same.copy()), "kl_divergence(x, x)")
    if abs(got) > 1e-9:
        raise Wrong(f"kl_divergence(x, x) = {got:.3g}: the divergence of a distribution from itself is 0")
    return "the mean KL(reference ‖ file) of 6 random pairs, large logits included, and 0 for identical logits"


q2 = Exercise(
    "nb08",
    "q2",
    "kl_divergence(ref_logits, logits)",
    _check_kl,
    hints=[
        "Turn both into log-probabilities with scores.log_softmax; the reference's probabilities are np.exp of its "
        "log-probabilities.",
        "Per position: sum over the vocabulary of p_ref · (log p_ref − log p). Then the mean over positions.",
    ],
    solution="""
    lp_ref, lp = scores.log_softmax(ref_logits), scores.log_softmax(logits)
    per_position = (np.exp(lp_ref) * (lp_ref - lp)).sum(axis=-1)
    return float(per_position.mean())
    """,
    forbidden=(scores.kl_divergence, scores.kl_per_position),
    task="the KL divergence",
)


def _check_top1(fn, rng):
    for k in range(5):
        n, vocab = int(rng.integers(10, 60)), int(rng.integers(5, 40))
        ref = _logits(rng, n, vocab)
        other = _nearby(rng, ref, float(rng.uniform(0.5, 4.0)))
        what = f"top1_agreement(<ref {ref.shape}>, <logits {other.shape}>) (case {k + 1})"
        got = as_number(call(fn, ref, other), what)
        same = ref.argmax(-1) == other.argmax(-1)
        want = scores.top1_agreement(ref, other)
        if np.isclose(got, want, rtol=1e-9):
            continue
        if got == same.sum() and same.sum() != want:
            raise Wrong(f"{what} = {got:g}: that is a count of positions; return the share (between 0 and 1)")
        if np.isclose(got, np.mean(ref.argmax(0) == other.argmax(0)), rtol=1e-9):
            raise Wrong(f"{what} = {got:g}: take the argmax over the vocabulary (axis=-1), one token per position")
        raise Wrong(f"{what} = {got:g}: that is not the share of positions whose most likely tokens agree")
    return "the share of positions where both pick the same token, on 5 random pairs"


q3 = Exercise(
    "nb08",
    "q3",
    "top1_agreement(ref_logits, logits)",
    _check_top1,
    hints=[
        "ref_logits.argmax(axis=-1) is the most likely token at every position.",
        "Compare the two argmax arrays and take the mean of the booleans.",
    ],
    solution="""
    return float(np.mean(ref_logits.argmax(axis=-1) == logits.argmax(axis=-1)))
    """,
    forbidden=(scores.top1_agreement,),
    task="the top-1 agreement",
)
