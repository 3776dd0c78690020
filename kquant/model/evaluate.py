"""Score quantized files against a reference on held-out text and tasks, and tabulate.

    >>> from kquant.model import evaluate, hub
    >>> print(evaluate.compare([hub.bundled(), "tiny-Q4_K_M.gguf", "tiny-Q2_K.gguf"]))

``compare`` scores every file on the same held-out text and tasks (from kquant.model.corpus,
never seen in training) against the first file, the reference: perplexity, KL and top-1
(kquant.model.scores), and

* **task accuracy**: the share of held-out sums and fact questions the model gets exactly
  right with greedy decoding. Greedy decoding produces the answer if and only if every
  answer token is the most likely one given the prompt and the answer so far, so one
  forward pass over prompt + answer decides it; no sampling, no luck.
* **changed**: the share of tasks one file gets right and the other wrong. Accuracy hides
  answers that change both ways (it only sees their difference).
* **tokens per second**: generation speed (one token at a time) on ``n_threads`` threads.

Every score but speed has a 95 % interval (``Scores.interval``: a bootstrap over documents, or
over tasks, with a fixed seed; the table prints half its width after ±), and two files scored
on the same text are compared *paired* (``difference(a, b, metric)``, ``verdict``): the honest
test of whether a small difference is more than the noise of 24 documents and a few hundred tasks.

Notebook 08 prints its table; ``python -m kquant demo`` too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kquant.errors import KQuantError
from kquant.gguf.summary import inspect_gguf
from kquant.model import corpus, runner
from kquant.model.runner import LlamaCppModel
from kquant.model.scores import Interval, bootstrap, kl_per_position, mean_interval, nll, paired_difference

# Held-out stories, sums and facts: drawn from a seed disjoint from training's.
HELD_OUT_SEED = corpus.HELD_OUT_SEED


def held_out_sequences(model: LlamaCppModel, n_docs: int = 24) -> list[list[int]]:
    """Held-out documents as token sequences (each ``<s> … </s>``, cut to the context)."""
    docs = corpus.documents(corpus.HELD_OUT_SEED, n_docs, held_out=True)
    return [model.tokenize(corpus.BOS + d + corpus.EOS)[: model.n_ctx] for d in docs]


def held_out_tasks(n_sums: int = 400) -> list[corpus.Task]:
    return corpus.tasks(seed=corpus.HELD_OUT_SEED, n_sums=n_sums)


@dataclass
class Scores:
    """How one file did on the held-out text and tasks, next to the reference."""

    path: Path
    size_mb: float
    bpw: float
    perplexity: float
    kl: float
    top1: float
    accuracy: dict[str, float]
    changed: float  # share of tasks answered right by one file and wrong by the other
    tokens_per_s: float
    logits: list[np.ndarray] = field(default_factory=list, repr=False)  # kept for KL against this file
    tokens: list[list[int]] = field(default_factory=list, repr=False)
    results: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # Per held-out document, for intervals: summed NLL and its positions (all but the last),
    # summed KL and top-1 matches and their positions (all); one bool per task: changed or not.
    per_doc: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    flips: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def interval(self, metric: str) -> Interval:
        """95 % interval of ``metric``: "ppl" (perplexity), "kl", "top1" (documents resampled),
        "changed" or a task kind such as "sums" (tasks resampled); bootstrap, fixed seed."""
        if metric in _DOC_METRICS:
            return bootstrap(self.per_doc, _DOC_METRICS[metric])
        if metric == "changed":
            return mean_interval(self.flips) if len(self.flips) else Interval(0.0, 0.0, 0.0)
        return mean_interval(self.results[metric])


# Each statistic from per-document totals (numbers, or arrays of totals, one per bootstrap draw).
_DOC_METRICS = {
    "ppl": lambda t: np.exp(t["nll"] / t["n_next"]),
    "kl": lambda t: t["kl"] / t["n"],
    "top1": lambda t: t["top1"] / t["n"],
}


def difference(a: Scores, b: Scores, metric: str) -> Interval:
    """``metric`` of file a minus file b, with its paired 95 % interval.

    Both were scored on the same documents and tasks, so each bootstrap draw resamples the
    same documents (or tasks) for both: the honest test of whether a and b differ. The
    difference exceeds the noise when the interval excludes 0 (``.excludes(0)``).
    """
    if metric in _DOC_METRICS:
        if len(a.per_doc["n"]) != len(b.per_doc["n"]) or (a.per_doc["n"] != b.per_doc["n"]).any():
            raise KQuantError("a paired difference needs two files scored on the same documents")
        stat = _DOC_METRICS[metric]
        both = {**{f"a.{k}": v for k, v in a.per_doc.items()}, **{f"b.{k}": v for k, v in b.per_doc.items()}}

        def diff(t):
            return stat({k[2:]: v for k, v in t.items() if k[:2] == "a."}) - stat(
                {k[2:]: v for k, v in t.items() if k[:2] == "b."}
            )

        return bootstrap(both, diff)
    x = a.flips if metric == "changed" else a.results[metric]
    y = b.flips if metric == "changed" else b.results[metric]
    if len(x) != len(y):
        raise KQuantError("a paired difference needs two files asked the same tasks")
    return paired_difference(x, y)


def verdict(d: Interval, what: str = "the difference") -> str:
    """One sentence: does a paired difference exceed its 95 % interval?"""
    if d.excludes(0.0):
        return f"{what} is {d}, and its 95 % interval excludes 0: more than noise"
    return f"{what} is {d}, and its 95 % interval includes 0: within the noise of this sample"


def bits_per_weight(path) -> float:
    """Bits of tensor data per weight, over every tensor (metadata not counted)."""
    return inspect_gguf(path).bpw


# Tasks are asked in the layout the model was trained on: several to a document, one per
# line (sums six to a document, so the line after each is still a sum, never "</s>").
_PER_DOCUMENT = {"sums": 6, "facts": 4}


def task_accuracy(model: LlamaCppModel, tasks) -> dict[str, float]:
    """Share of tasks, per kind, that greedy decoding answers exactly."""
    return {k: float(v.mean()) for k, v in task_results(model, tasks).items()}


def task_results(model: LlamaCppModel, tasks) -> dict[str, np.ndarray]:
    """Per kind, one bool per task (in order): does greedy decoding answer it exactly?

    Each document is ``<s>`` then the tasks' prompt + answer lines; task k is right when
    every one of its answer tokens is the argmax given everything before it (the earlier
    lines, correctly answered, as in training). One forward pass scores a whole document.
    """
    right: dict[str, list[bool]] = {}
    by_kind: dict[str, list] = {}
    for t in tasks:
        by_kind.setdefault(t.kind, []).append(t)
    for kind, ts in by_kind.items():
        per = _PER_DOCUMENT.get(kind, 1)
        for i in range(0, len(ts), per):
            ids, spans = [model.llm.token_bos()], []
            for t in ts[i : i + per]:
                ids += model.tokenize(t.prompt)  # the previous answer ended its line
                answer = model.tokenize(t.answer)
                spans.append((len(ids), answer))
                ids += answer
            guesses = model.logits(ids).argmax(-1)
            for start, answer in spans:
                right.setdefault(kind, []).append(bool((guesses[start - 1 : start - 1 + len(answer)] == answer).all()))
    return {k: np.array(v) for k, v in right.items()}


def evaluate(
    path,
    reference: Scores | None = None,
    *,
    n_docs: int = 48,
    n_sums: int = 400,
    n_threads: int = 1,
    speed_tokens: int = 64,
) -> Scores:
    """Score one file; with ``reference`` (another file's Scores), also KL and top-1 against it."""
    m = runner.load(path, n_ctx=256, n_threads=n_threads)
    seqs = held_out_sequences(m, n_docs)
    logits = [m.logits(s) for s in seqs]
    # Position i predicts token i+1; the last position has no next token in the document.
    nlls = np.concatenate([nll(lg, s) for lg, s in zip(logits, seqs)])
    if reference is not None:
        if reference.tokens != seqs:
            raise KQuantError(
                f"{path} tokenizes the held-out text differently from {reference.path}: "
                "KL and top-1 compare files of one model (the same vocabulary), not different models"
            )
        # Means over every position of every document, not means of per-document means.
        kls = [kl_per_position(r, lg) for r, lg in zip(reference.logits, logits)]
        matches = [r.argmax(-1) == lg.argmax(-1) for r, lg in zip(reference.logits, logits)]
        kl = float(np.concatenate(kls).mean())
        top1 = float(np.mean(np.concatenate(matches)))
    else:
        kls, matches = [np.zeros(len(s)) for s in seqs], [np.ones(len(s)) for s in seqs]
        kl, top1 = 0.0, 1.0
    per_doc = {
        "nll": np.array([nll(lg, s).sum() for lg, s in zip(logits, seqs)]),
        "n_next": np.array([len(s) - 1 for s in seqs], dtype=np.float64),
        "kl": np.array([max(float(k.sum()), 0.0) for k in kls]),
        "top1": np.array([float(m.sum()) for m in matches]),
        "n": np.array([len(s) for s in seqs], dtype=np.float64),
    }
    results = task_results(m, held_out_tasks(n_sums))
    changed, flips = 0.0, np.zeros(sum(len(v) for v in results.values()), bool)
    if reference is not None:
        flips = np.concatenate([results[k] != reference.results[k] for k in sorted(results)])
        changed = float(flips.mean())
    return Scores(
        path=Path(path),
        size_mb=os.path.getsize(path) / 1e6,
        bpw=bits_per_weight(path),
        perplexity=float(np.exp(nlls.mean())),
        kl=max(kl, 0.0),  # a sum of float64 terms can land a hair below zero for identical files
        top1=top1,
        accuracy={k: float(v.mean()) for k, v in results.items()},
        changed=changed,
        tokens_per_s=m.tokens_per_second(speed_tokens),
        logits=logits,
        tokens=seqs,
        results=results,
        per_doc=per_doc,
        flips=flips,
    )


def compare(paths, **kwargs) -> ComparisonTable:
    """Score every file against the first one (the reference); return a printable table."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise KQuantError("compare needs at least one GGUF file; the first one is the reference")
    ref = evaluate(paths[0], **kwargs)
    return ComparisonTable([ref] + [evaluate(p, ref, **kwargs) for p in paths[1:]])


@dataclass
class ComparisonTable:
    """Scores of several files; ``print(table)`` shows them, ``table.rows`` holds the numbers."""

    rows: list[Scores]

    def __str__(self) -> str:
        kinds = sorted({k for r in self.rows for k in r.accuracy})
        head = ["file", "MB", "bpw", "ppl", "KL", "top-1"] + [f"{k} acc" for k in kinds] + ["changed", "tok/s"]
        lines = [head]
        for r in self.rows:
            lines.append(
                [r.path.name, f"{r.size_mb:.2f}", f"{r.bpw:.2f}"]
                + [_pm(r, m, spec) for m, spec in [("ppl", ".4f"), ("kl", ".1e"), ("top1", ".4f")]]
                + [_pm(r, k, ".3f") for k in kinds]
                + [_pm(r, "changed", ".3f"), f"{r.tokens_per_s:.0f}"]
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(head))]

        def fmt(row):
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        note = "± : half the width of the 95 % interval (bootstrap over documents or tasks, fixed seed)"
        return "\n".join([fmt(lines[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines[1:]] + [note])


def _pm(r: Scores, metric: str, spec: str) -> str:
    if metric not in _DOC_METRICS and metric != "changed" and metric not in r.results:
        return "nan"
    i = r.interval(metric)
    return f"{i.value:{spec}} ±{i.half_width:{'.0e' if 'e' in spec else spec}}"
