"""Collecting an importance matrix: run calibration text through kquant's forward pass.

    >>> from kquant.model import calibrate, hub
    >>> text = calibrate.calibration_text()                  # held-out corpus text, seed 4242
    >>> im = calibrate.collect(hub.bundled(), text, dataset=calibrate.CALIBRATION_DATASET)

What llama-imatrix records (tools/imatrix/imatrix.cpp of llama.cpp 0c1e57098), and so what
``collect`` records:

* the input (``src1``) of every ``MUL_MAT`` whose weight is named ``blk.*``: attn_q, attn_k,
  attn_v (all three see the same normed input), attn_output, ffn_gate, ffn_up, ffn_down;
* ``output.weight`` only with ``--process-output`` (``process_output=True``), and never
  ``token_embd.weight``: it is a row lookup, and in a tied model the output matmul uses a
  weight named token_embd.weight, which is neither ``blk.*`` nor ``output.weight``;
* only batches of at least 16 tokens (smaller ones are ignored: ``src1->ne[1] < 16``);
* one count per matrix, the number of token rows summed. 3-D expert tensors
  (``MUL_MAT_ID``) get one row of sums and one count per expert; kquant's forward pass
  runs dense llama models only, but files with expert entries load, save and quantize.

Text is cut as llama-imatrix cuts it: tokenized once (BOS first, special tokens parsed as
with ``--parse-special``), split into chunks of ``n_ctx`` tokens (the remainder is dropped),
the first token of every chunk replaced by BOS, each chunk evaluated as its own sequence.
Notebook 10 uses it.
"""

from __future__ import annotations

import numpy as np

from kquant.errors import KQuantError
from kquant.imatrix import Entry, Imatrix
from kquant.llamacpp import Tokenizer
from kquant.model import corpus
from kquant.model.forward import Llama

# Calibration text: held-out corpus documents from a seed of their own (corpus.CALIBRATION_SEED).
CALIBRATION_SEED = corpus.CALIBRATION_SEED

# The name collect() records for calibration_text() (llama-imatrix records its -f file name).
CALIBRATION_DATASET = f"kquant.model.corpus held-out documents, seed {CALIBRATION_SEED}"

# imatrix.cpp: "why are small batches ignored (<16 tokens)?" -- it does ignore them.
MIN_BATCH_TOKENS = 16


def calibration_text(n_docs: int = 64, seed: int = CALIBRATION_SEED) -> str:
    """Held-out corpus documents to collect activations on (never the evaluation text).

    Each document is ``<s>…</s>`` as in training, except that the text does not start with
    ``<s>``: the tokenizer adds that BOS itself, as llama-imatrix's does.
    """
    if seed in (corpus.TRAIN_SEED, corpus.HELD_OUT_SEED):
        raise KQuantError(
            f"seed {seed} draws the training or evaluation text: calibrate on other text (the default is "
            f"{CALIBRATION_SEED})"
        )
    return corpus.text(corpus.documents(seed, n_docs, held_out=True)).removeprefix(corpus.BOS)


def collect(
    model,
    data,
    *,
    n_ctx: int | None = None,
    n_chunks: int | None = None,
    dataset: str | None = None,
    process_output: bool = False,
) -> Imatrix:
    """Run calibration data through kquant.model.forward and record what llama-imatrix records.

    ``model``: a ``kquant.model.forward.Llama`` or the path of a llama GGUF (any type it reads).
    ``data``: a text (tokenized and cut into ``n_ctx``-token chunks, each starting with BOS,
    as llama-imatrix does; ``n_ctx`` defaults to the model's context length, ``n_chunks``
    limits the chunks like ``--chunks``), or a list of token-id sequences, each evaluated as
    it is (chunk_size is then ``n_ctx``, used only for the chunk count).
    ``dataset``: the name recorded in imatrix.datasets (llama-imatrix records the -f file).
    ``process_output``: also record output.weight (``--process-output``; a tied model has none).

    Two differences from llama-imatrix, both rounding-sized: the activations are numpy's
    float32 ones (llama.cpp rounds the inputs of F16 / quantized matmuls on the way; tests
    measured 5e-4 of the largest column on the bundled F16 model), and the sums are kept in
    float64 until the end (llama.cpp adds float32 row by row). llama-imatrix also evaluates
    several chunks per batch and drops a *batch piece* (ubatch) under 16 tokens; kquant
    evaluates chunks one at a time and drops a *sequence* under 16 tokens, the same thing
    whenever n_ctx >= 16 and the batch splits evenly (e.g. n_ctx a power of two).
    """
    llama = model if isinstance(model, Llama) else Llama.load(model)
    n_ctx = llama.cfg.n_ctx if n_ctx is None else int(n_ctx)
    if n_ctx < MIN_BATCH_TOKENS:
        raise KQuantError(
            f"n_ctx = {n_ctx}: llama-imatrix ignores batches of fewer than {MIN_BATCH_TOKENS} tokens, so use n_ctx "
            f">= {MIN_BATCH_TOKENS}"
        )
    if isinstance(data, str):
        sequences = chunks(llama, data, n_ctx, n_chunks)
        dataset = dataset or "calibration text"
    else:
        sequences = [np.asarray(s) for s in data]
        if sequences and all(s.ndim == 0 for s in sequences):
            raise KQuantError("data is a single sequence of token ids: pass a list of sequences, e.g. [ids]")
        if n_chunks is not None:
            sequences = sequences[:n_chunks]
        if not sequences:
            raise KQuantError("no token sequences given: pass a text or a list of token-id lists")
        dataset = dataset or "token sequences"

    sums: dict[str, np.ndarray] = {}  # float64 while summing; llama.cpp sums in float32, row by row
    counts: dict[str, int] = {}

    def observe(name: str, x: np.ndarray) -> None:
        if not (name.startswith("blk.") or (process_output and name == "output.weight")):
            return
        if len(x) < MIN_BATCH_TOKENS:
            return
        x = x.astype(np.float64)
        if name in sums:
            sums[name] += (x * x).sum(axis=0)
        else:
            sums[name] = (x * x).sum(axis=0)
        counts[name] = counts.get(name, 0) + len(x)

    for seq in sequences:
        llama.forward(seq, observe)
    if not sums:
        raise KQuantError(
            f"nothing was recorded: every sequence had fewer than {MIN_BATCH_TOKENS} tokens (llama-imatrix ignores "
            "those)"
        )
    entries = {n: Entry(s.astype(np.float32)[None, :], np.array([counts[n]], dtype=np.int64)) for n, s in sums.items()}
    chunk_count = max(counts.values()) // n_ctx  # llama-imatrix's m_last_chunk: tokens seen / chunk size
    return Imatrix(entries, [dataset], chunk_count, n_ctx)


def chunks(llama, text: str, n_ctx: int, n_chunks: int | None = None) -> list[np.ndarray]:
    """Cut a text as llama-imatrix does: tokens (BOS first), n_ctx-token chunks, BOS at each chunk's start."""
    tokens = tokenize(llama, text)
    if len(tokens) < 2 * n_ctx:
        raise KQuantError(
            f"the text has {len(tokens)} tokens; llama-imatrix needs at least 2 * n_ctx = {2 * n_ctx}: give more "
            "text or a smaller n_ctx"
        )
    n = len(tokens) // n_ctx if n_chunks is None else min(int(n_chunks), len(tokens) // n_ctx)
    bos = tokens[0]
    out = []
    for i in range(n):
        chunk = np.array(tokens[i * n_ctx : (i + 1) * n_ctx])
        chunk[0] = bos
        out.append(chunk)
    return out


def tokenize(llama, text: str) -> list[int]:
    """Token ids of ``text`` with the model's own tokenizer (llama.cpp's): BOS first, specials parsed.

    This is llama-imatrix's ``common_tokenize(ctx, text, add_special=true, parse_special)``
    with --parse-special, so ``</s>`` in the text is the end-of-document token.
    """
    if llama.path is None:
        raise KQuantError(
            "this Llama was not loaded from a file, so there is no tokenizer: pass token-id sequences instead of text"
        )
    with Tokenizer(llama.path) as tok:
        return tok.tokenize(text, add_special=True, parse_special=True)
