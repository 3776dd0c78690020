"""Run GGUF models with llama.cpp (through llama-cpp-python) and measure what quantization costs.

    >>> from kquant import run
    >>> m = run.load("data/kquant-tiny-f16.gguf")
    >>> m.generate("Once upon a time", seed=1)
    >>> print(run.compare(["data/kquant-tiny-f16.gguf", "tiny-Q4_K_M.gguf", "tiny-Q2_K.gguf"]))

``compare`` scores every file on the same held-out text and tasks (from kquant.corpus, never
seen in training) against the first file, the reference:

* **perplexity**: exp(mean negative log-likelihood of the next token). On easy text it
  hardly moves, even at Q2_K (tiny-model-notes.md measured 1.321 → 1.322).
* **KL divergence** KL(reference ‖ file), nats per token, averaged over the same positions:
  how far the whole next-token distribution moved. Zero only for identical logits.
* **top-1 agreement**: the share of positions where both pick the same most likely token.
* **task accuracy**: the share of held-out sums and fact questions the model gets exactly
  right with greedy decoding. Greedy decoding produces the answer if and only if every
  answer token is the most likely one given the prompt and the answer so far, so one
  forward pass over prompt + answer decides it; no sampling, no luck.
* **changed**: the share of tasks one file gets right and the other wrong. Accuracy hides
  answers that change both ways: on the bundled model Q2_K takes sums from 39.3% to 32.0%
  right while 9.3% of all 528 verdicts change; Q4_K_M keeps 38.5% and changes 1.3%.
* **tokens per second**: generation speed (one token at a time) on ``n_threads`` threads.

One thread is the default. On a shared 2-core machine llama.cpp's worker threads spin
while they wait for each other, and with another process on the cores a 2-thread run was
measured 10 to 70 times slower than a 1-thread run (0.48 s against 0.10 s for 100 tokens).

All logits come from llama.cpp with an **F32 KV cache**: its default F16 cache rounds keys
and values, and that noise (max logit difference 6e-3 in tiny-model-notes.md) would blur
the comparison of weight formats, which is the point here.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import corpus
from .errors import KQuantError
from .summary import inspect_gguf

# Held-out stories, sums and facts: corpus seed 999 draws text disjoint from training (seed 1).
HELD_OUT_SEED = 999
GGML_TYPE_F32 = 0


@dataclass
class Model:
    """A GGUF model loaded in llama.cpp, with the few calls the workbook needs."""

    path: Path
    llm: object  # llama_cpp.Llama; imported lazily, it is slow to import

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids; ``<s>`` and ``</s>`` in the text are read as the special tokens."""
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return ([self.llm.token_bos()] if bos else []) + ids

    def detokenize(self, ids) -> str:
        return self.llm.detokenize(list(ids)).decode(errors="replace")

    def logits(self, ids) -> np.ndarray:
        """Logits (len(ids), n_vocab) of one sequence, from a fresh context."""
        ids = list(ids)
        if not 0 < len(ids) <= self.n_ctx:
            raise KQuantError(f"{len(ids)} tokens: a sequence must have 1 to {self.n_ctx} (the context size)")
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def generate(self, prompt: str, max_tokens: int = 80, temperature: float = 0.8, seed: int = 0) -> str:
        """Continue ``prompt``; temperature 0 is greedy. Seeded, so a rerun gives the same text.

        On this corpus greedy decoding repeats the likeliest name at every free choice
        (tiny-model-notes.md §2), so the default samples at 0.8.
        """
        self.llm.set_seed(seed)
        out = self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=seed,
        )
        return out["choices"][0]["text"]

    def tokens_per_second(self, n: int = 64, prompt: str = "Once upon a time") -> float:
        """Generation speed: ``n`` greedy tokens, one at a time, after ``prompt`` (its few tokens included)."""
        self.llm.reset()
        start = time.perf_counter()
        made = 0
        for _ in self.llm.generate(self.tokenize(prompt, bos=True), temp=0.0, reset=True):
            made += 1
            if made == n:
                break
        return made / (time.perf_counter() - start)


def load(path, n_ctx: int | None = None, n_threads: int = 1) -> Model:
    """Load a GGUF file in llama.cpp (CPU, F32 KV cache, every position's logits kept)."""
    path = Path(path)
    if not path.is_file():
        raise KQuantError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise KQuantError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    # Until a Llama(verbose=False) exists, llama-cpp-python prints llama.cpp's whole log.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    import llama_cpp

    try:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx or 0,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=True,
            type_k=GGML_TYPE_F32,
            type_v=GGML_TYPE_F32,
            verbose=False,
        )
    except ValueError as e:  # llama-cpp-python's wording for "llama.cpp refused the file"
        raise KQuantError(f"llama.cpp could not load {path}: {e}") from None
    return Model(path, llm)


# ---------------------------------------------------------------------------- held-out data


def held_out_sequences(model: Model, n_docs: int = 24) -> list[list[int]]:
    """Held-out documents as token sequences (each ``<s> … </s>``, cut to the context)."""
    docs = corpus.documents(HELD_OUT_SEED, n_docs, held_out=True)
    return [model.tokenize(corpus.BOS + d + corpus.EOS)[: model.n_ctx] for d in docs]


def held_out_tasks(n_sums: int = 400) -> list[corpus.Task]:
    return corpus.tasks(seed=HELD_OUT_SEED, n_sums=n_sums)


# ---------------------------------------------------------------------------- scores


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


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def nll(logits: np.ndarray, tokens) -> np.ndarray:
    """Negative log-likelihood of each next token: position i predicts tokens[i + 1]; shape (n - 1,)."""
    tokens = np.asarray(tokens)
    return -log_softmax(logits[:-1])[np.arange(len(tokens) - 1), tokens[1:]]


def perplexity(logits: np.ndarray, tokens) -> float:
    """exp(mean negative log-likelihood of the next token) of one sequence."""
    return float(np.exp(nll(logits, tokens).mean()))


def kl_per_position(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(reference ‖ file) at every position, in nats: Σ p_ref · (log p_ref − log p)."""
    lp_ref, lp = log_softmax(ref_logits), log_softmax(logits)
    return (np.exp(lp_ref) * (lp_ref - lp)).sum(-1)


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(reference ‖ file) over the positions of one sequence."""
    return float(kl_per_position(ref_logits, logits).mean())


def top1_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Share of positions where both pick the same most likely token."""
    return float(np.mean(ref_logits.argmax(-1) == logits.argmax(-1)))


def next_token_logits(model: Model, prompt: str) -> np.ndarray:
    """The model's logits for the token after ``prompt`` (which follows ``<s>``), shape (1, n_vocab)."""
    return model.logits(model.tokenize(prompt, bos=True))[-1:]


def bits_per_weight(path) -> float:
    """Bits of tensor data per weight, over every tensor (metadata not counted)."""
    return inspect_gguf(path).bpw


# Tasks are asked in the layout the model was trained on: several to a document, one per
# line (sums six to a document, so the line after each is still a sum, never "</s>").
_PER_DOCUMENT = {"sums": 6, "facts": 4}


def task_accuracy(model: Model, tasks) -> dict[str, float]:
    """Share of tasks, per kind, that greedy decoding answers exactly."""
    return {k: float(v.mean()) for k, v in task_results(model, tasks).items()}


def task_results(model: Model, tasks) -> dict[str, np.ndarray]:
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
    m = load(path, n_ctx=256, n_threads=n_threads)
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


def compare(paths, **kwargs) -> Table:
    """Score every file against the first one (the reference); return a printable table."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise KQuantError("compare needs at least one GGUF file; the first one is the reference")
    ref = evaluate(paths[0], **kwargs)
    return Table([ref] + [evaluate(p, ref, **kwargs) for p in paths[1:]])


@dataclass
class Table:
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
        fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
        return "\n".join([fmt(lines[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines[1:]])
