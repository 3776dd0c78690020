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
  answers that change both ways: on the bundled model Q2_K takes sums from 39.3% to 32.0%
  right while 9.3% of all 528 verdicts change; Q4_K_M keeps 38.5% and changes 1.3%.
* **tokens per second**: generation speed (one token at a time) on ``n_threads`` threads.

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
from kquant.model.scores import kl_per_position, nll

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
        kl = float(np.concatenate([kl_per_position(r, lg) for r, lg in zip(reference.logits, logits)]).mean())
        top1 = float(
            np.mean(np.concatenate([r.argmax(-1) == lg.argmax(-1) for r, lg in zip(reference.logits, logits)]))
        )
    else:
        kl, top1 = 0.0, 1.0
    results = task_results(m, held_out_tasks(n_sums))
    changed = 0.0
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
                [r.path.name, f"{r.size_mb:.2f}", f"{r.bpw:.2f}", f"{r.perplexity:.4f}", f"{r.kl:.2e}", f"{r.top1:.4f}"]
                + [f"{r.accuracy.get(k, float('nan')):.3f}" for k in kinds]
                + [f"{r.changed:.3f}", f"{r.tokens_per_s:.0f}"]
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(head))]

        def fmt(row):
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        return "\n".join([fmt(lines[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines[1:]])
