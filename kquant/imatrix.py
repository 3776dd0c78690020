"""Importance matrices: which input columns of each weight matrix matter, measured on real text.

A weight ``W[r, j]`` only ever meets the activation ``x[j]`` (``y = W · x``), so an error in
column j costs about ``x[j]²`` on average. llama.cpp's llama-imatrix runs calibration text
through the model and records, for every weight matrix, the *sum of squared inputs per
column* and the number of rows (tokens) summed. llama-quantize divides one by the other
(the mean squared activation) and hands that vector to ggml as the weights of its error
(``kquant.quantize(x, qtype, imatrix=...)``): columns that see large activations are
rounded more carefully.

    >>> import kquant
    >>> from kquant import imatrix, hub
    >>> text = imatrix.calibration_text()                                   # held-out corpus text, seed 4242
    >>> im = imatrix.collect(hub.bundled(), text, dataset=imatrix.CALIBRATION_DATASET)  # numpy forward pass
    >>> im.save("tiny.imatrix.gguf")                                        # llama.cpp's file format
    >>> im = imatrix.Imatrix.load("tiny.imatrix.gguf")                      # or a file llama-imatrix wrote
    >>> im.importance("blk.0.ffn_down.weight")                              # (768,) float32: sums / count
    >>> kquant.quantize_gguf(hub.bundled(), "tiny-Q4_K_M.gguf", "Q4_K_M", imatrix="tiny.imatrix.gguf")

What llama-imatrix records (tools/imatrix/imatrix.cpp of llama.cpp 0c1e57098), and so what
``collect`` records:

* the input (``src1``) of every ``MUL_MAT`` whose weight is named ``blk.*``: attn_q, attn_k,
  attn_v (all three see the same normed input), attn_output, ffn_gate, ffn_up, ffn_down;
* ``output.weight`` only with ``--process-output`` (``process_output=True``), and never
  ``token_embd.weight``: it is a row lookup, and in a tied model the output matmul uses a
  weight named token_embd.weight, which is neither ``blk.*`` nor ``output.weight``;
* only batches of at least 16 tokens (smaller ones are ignored: ``src1->ne[1] < 16``);
* one count per matrix, the number of token rows summed. 3-D expert tensors
  (``MUL_MAT_ID``) get one row of sums and one count per expert; kquant.forward runs dense
  llama models only, but files with expert entries load, save and quantize.

Text is cut as llama-imatrix cuts it: tokenized once (BOS first, special tokens parsed as
with ``--parse-special``), split into chunks of ``n_ctx`` tokens (the remainder is dropped),
the first token of every chunk replaced by BOS, each chunk evaluated as its own sequence.

Format version: the GGUF imatrix format exactly as llama.cpp 0c1e57098 writes it
(tools/imatrix/imatrix.cpp ``save_imatrix``, a GGUF v3 file, 32-byte alignment) and reads it
(common/imatrix-loader.cpp ``common_imatrix_load``, then tools/quantize/quantize.cpp
``load_imatrix``). The file carries no version number of its own; it is:

* metadata, in this order: ``general.type`` = "imatrix" (string), ``imatrix.datasets``
  (array of strings), ``imatrix.chunk_count`` (uint32), ``imatrix.chunk_size`` (uint32);
* two F32 tensors per entry, entries sorted by name: ``<name>.in_sum2`` with ggml shape
  ne = (n_cols, n_mat) and ``<name>.counts`` with ne = (1, n_mat) (a GGUF drops the
  trailing 1s, so a dense matrix's are 1-D: (n_cols,) and (1,)); counts are token counts
  stored as floats (rounded with lround on reading).

llama-quantize's importance for column j of matrix m is ``in_sum2[m, j] / counts[m]``, and
1.0 for every column of a matrix whose count is 0 (an expert never routed to). The legacy
``.dat`` format (llama-imatrix ``--output-format dat``) loads too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from . import corpus
from .errors import KQuantError
from .formats import check_importance

T = GGMLQuantizationType

# Calibration text: held-out corpus documents from a seed of their own. Training used seed 1
# (scripts/train_model.py), evaluation uses run.HELD_OUT_SEED (999), training-time task checks
# seed 0; an imatrix computed on the evaluation text would flatter the quantized model.
CALIBRATION_SEED = 4242

# The name collect() records for calibration_text() (llama-imatrix records its -f file name).
CALIBRATION_DATASET = f"kquant.corpus held-out documents, seed {CALIBRATION_SEED}"

# imatrix.cpp: "why are small batches ignored (<16 tokens)?" -- it does ignore them.
MIN_BATCH_TOKENS = 16

GENERAL_TYPE = "general.type"
DATASETS = "imatrix.datasets"
CHUNK_COUNT = "imatrix.chunk_count"
CHUNK_SIZE = "imatrix.chunk_size"
SUMS_SUFFIX = ".in_sum2"
COUNTS_SUFFIX = ".counts"


def calibration_text(n_docs: int = 64, seed: int = CALIBRATION_SEED) -> str:
    """Held-out corpus documents to collect activations on (never the evaluation text).

    Each document is ``<s>…</s>`` as in training, except that the text does not start with
    ``<s>``: the tokenizer adds that BOS itself, as llama-imatrix's does.
    """
    from .run import HELD_OUT_SEED

    if seed in (1, HELD_OUT_SEED):
        raise KQuantError(
            f"seed {seed} draws the training or evaluation text: calibrate on other text (the default is "
            f"{CALIBRATION_SEED})"
        )
    return corpus.text(corpus.documents(seed, n_docs, held_out=True)).removeprefix(corpus.BOS)


# ---------------------------------------------------------------------------- the statistics


@dataclass
class Entry:
    """What llama-imatrix keeps for one weight matrix (its ``Stats``)."""

    in_sum2: np.ndarray  # (n_mat, n_cols) float32: sum over tokens of x[j]², one row per expert (1 for dense)
    counts: np.ndarray  # (n_mat,) int64: tokens summed into each row

    def importance(self, legacy: bool = False) -> np.ndarray:
        """The vector llama-quantize hands to ggml: (n_mat * n_cols,) float32, mean squared input per column."""
        sums = np.asarray(self.in_sum2, dtype=np.float32)
        if legacy:  # .dat files store sums already divided by the token count and multiplied by ncall
            ncall = int(self.counts[0])
            return (sums / np.float32(ncall) if ncall > 0 else sums).reshape(-1)
        out = np.ones(sums.shape, dtype=np.float32)  # a matrix that saw no token: every column 1
        seen = np.asarray(self.counts) > 0
        # float32 / float32, as (float) sums / (float) count in C
        out[seen] = sums[seen] / np.asarray(self.counts)[seen, None].astype(np.float32)
        return out.reshape(-1)


@dataclass
class Imatrix:
    """Per weight matrix, the sums of squared inputs and the token counts; plus where they came from."""

    entries: dict[str, Entry]
    datasets: list[str] = field(default_factory=list)  # imatrix.datasets: the calibration text's name(s)
    chunk_count: int = 0  # imatrix.chunk_count: chunks of chunk_size tokens processed
    chunk_size: int = 0  # imatrix.chunk_size: tokens per chunk (n_ctx)
    file: str | None = None  # the file it was loaded from or saved to (llama-quantize records it)
    legacy: bool = False  # loaded from a legacy .dat file (sums already normalised)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def importance(self, name: str) -> np.ndarray:
        """Mean squared input per column of ``name``, as llama-quantize computes it from the file."""
        if name not in self.entries:
            raise KQuantError(
                f"the imatrix has no entry {name!r}; it has {len(self.entries)} entries, e.g. {self.names()[:3]}"
            )
        return self.entries[name].importance(self.legacy)

    def vectors(self) -> dict[str, np.ndarray]:
        """Every entry's importance: the name -> floats table llama-quantize passes to llama_model_quantize."""
        return {name: self.importance(name) for name in self.names()}

    # ------------------------------------------------------------------------ files

    def save(self, path) -> Path:
        """Write llama.cpp's GGUF imatrix file (as llama-imatrix's save_imatrix), atomically."""
        from .gguf_file import _atomic_output

        path = Path(path)
        if not path.parent.is_dir():
            raise KQuantError(f"cannot write {path}: the folder {path.parent} does not exist")
        if not self.entries:
            raise KQuantError("this imatrix has no entries: collect some activations first")
        if not self.datasets:
            raise KQuantError(
                "give the imatrix a dataset name (im.datasets = ['my-text.txt']): gguf-py cannot write an empty "
                "imatrix.datasets array"
            )
        if self.legacy:
            raise KQuantError(
                "this imatrix came from a legacy .dat file, whose sums are already divided by their counts: "
                "convert it with llama-imatrix --in-file old.dat -o new.gguf, or quantize with it directly"
            )
        for name, e in self.entries.items():
            if np.ndim(e.in_sum2) != 2 or np.shape(e.in_sum2)[0] != np.size(e.counts) or np.ndim(e.counts) != 1:
                raise KQuantError(
                    f"entry {name}: in_sum2 must be (n_mat, n_cols) with one count per row, "
                    f"got {np.shape(e.in_sum2)} and {np.shape(e.counts)} counts"
                )
        try:
            with _atomic_output(path) as tmp:
                w = GGUFWriter(tmp, arch="imatrix")
                del w.kv_data[0]["general.architecture"]  # an imatrix file has none; GGUFWriter adds it on its own
                w.add_key_value(GENERAL_TYPE, "imatrix", GGUFValueType.STRING)
                w.add_key_value(DATASETS, list(self.datasets), GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
                w.add_key_value(CHUNK_COUNT, int(self.chunk_count), GGUFValueType.UINT32)
                w.add_key_value(CHUNK_SIZE, int(self.chunk_size), GGUFValueType.UINT32)
                for name in self.names():  # std::sort: byte order, which Python's str order equals for UTF-8
                    e = self.entries[name]
                    n_mat = len(e.counts)
                    sums = np.ascontiguousarray(e.in_sum2, dtype=np.float32)
                    counts = e.counts.astype(np.float32).reshape(n_mat, 1)
                    # ggml_n_dims drops trailing 1s from ne, so a dense matrix's tensors are 1-D.
                    w.add_tensor(name + SUMS_SUFFIX, sums.reshape(-1) if n_mat == 1 else sums)
                    w.add_tensor(name + COUNTS_SUFFIX, counts.reshape(-1) if n_mat == 1 else counts)
                w.write_header_to_file()
                w.write_kv_data_to_file()
                w.write_tensors_to_file()
                w.close()
        except OSError as e:
            raise KQuantError(f"could not write {path}: {e.strerror or e}; nothing was written") from e
        self.file = str(path)
        return path

    @classmethod
    def load(cls, path) -> Imatrix:
        """Read an imatrix file: llama.cpp's GGUF format, or the legacy .dat format."""
        path = Path(path)
        if not path.is_file():
            raise KQuantError(
                f"{path}: no such file" if not path.exists() else f"{path} is a folder, not an imatrix file"
            )
        with open(path, "rb") as f:
            magic = f.read(4)
        im = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
        im.file = str(path)
        return im


def _load_gguf(path: Path) -> Imatrix:
    """common_imatrix_load, with llama-quantize's checks (metadata present, pairs complete, F32)."""
    from .gguf_read import open_gguf

    r = open_gguf(path)
    kind = _string(r, GENERAL_TYPE)
    if kind not in (None, "imatrix"):
        raise KQuantError(
            f"{path} is a GGUF {kind!r}, not an imatrix (general.type is not 'imatrix'): pass the file "
            "llama-imatrix or kquant.imatrix wrote"
        )
    if not r.tensors:
        raise KQuantError(f"{path} holds no tensors: llama.cpp refuses an imatrix without data")
    if not any(t.name.endswith((SUMS_SUFFIX, COUNTS_SUFFIX)) for t in r.tensors):
        raise KQuantError(f"{path} has no <name>.in_sum2 / <name>.counts tensors: it is not an imatrix file")
    missing = [k for k in (DATASETS, CHUNK_COUNT, CHUNK_SIZE) if k not in r.fields]
    if missing:
        raise KQuantError(
            f"{path} lacks the imatrix metadata {', '.join(missing)}: llama-quantize refuses it (is it an imatrix "
            "file?)"
        )
    f = r.fields[DATASETS]
    if f.types[0] != GGUFValueType.ARRAY or (len(f.types) > 1 and f.types[1] != GGUFValueType.STRING):
        raise KQuantError(f"{path}: {DATASETS} must be an array of strings")
    datasets = [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data] if len(f.types) > 1 else []

    pairs: dict[str, dict[str, object]] = {}
    for t in r.tensors:
        for suffix in (SUMS_SUFFIX, COUNTS_SUFFIX):
            if t.name.endswith(suffix) and len(t.name) > len(suffix):
                pairs.setdefault(t.name[: -len(suffix)], {})[suffix] = t
    entries = {}
    for name, pair in sorted(pairs.items()):
        if len(pair) != 2:
            raise KQuantError(
                f"{path}: {name} has {'no .counts' if SUMS_SUFFIX in pair else 'no .in_sum2'} tensor; the file is "
                "damaged, write it again"
            )
        sums_t, counts_t = pair[SUMS_SUFFIX], pair[COUNTS_SUFFIX]
        if sums_t.tensor_type != T.F32 or counts_t.tensor_type != T.F32:
            raise KQuantError(f"{path}: the sums and counts of {name} must be F32 (llama.cpp refuses other types)")
        sums = np.asarray(sums_t.data, dtype=np.float32).reshape(-1)
        counts = np.asarray(counts_t.data, dtype=np.float32).reshape(-1)
        if counts.size == 0 or sums.size % counts.size:
            raise KQuantError(
                f"{path}: {name} has {sums.size} sums for {counts.size} counts, not a whole row per count; the "
                "file is damaged"
            )
        if not (np.isfinite(counts).all() and (counts >= 0).all()):
            raise KQuantError(f"{path}: the counts of {name} must be finite and >= 0; the file is damaged")
        entries[name] = Entry(sums.reshape(counts.size, -1).copy(), _lround(counts))
    return Imatrix(entries, datasets, _uint(r, CHUNK_COUNT, path), _uint(r, CHUNK_SIZE, path))


def _lround(x: np.ndarray) -> np.ndarray:
    """C's lround: halves away from zero (numpy's rint rounds them to even)."""
    return (np.sign(x) * np.floor(np.abs(x).astype(np.float64) + 0.5)).astype(np.int64)


def _string(r, key: str):
    f = r.fields.get(key)
    if f is None or f.types[0] != GGUFValueType.STRING:
        return None
    return bytes(f.parts[-1]).decode("utf-8", errors="replace")


def _uint(r, key: str, path: Path) -> int:
    f = r.fields[key]
    if f.types[0] != GGUFValueType.UINT32:
        raise KQuantError(f"{path}: {key} must be a uint32 (it is {f.types[0].name})")
    return int(f.parts[-1][0])


def _load_legacy(path: Path) -> Imatrix:
    """The legacy format (common_imatrix_load_legacy), little-endian int32 fields throughout:

    n_entries, then per entry: name length, name, ncall, nval, nval float32
    ((sum / count) * ncall); then optionally chunk count, dataset length, dataset name.
    """
    data = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise KQuantError(
                f"{path} is not a GGUF imatrix and ends in the middle of {what} as a legacy .dat imatrix: is it an "
                "imatrix file at all?"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("the entry count")
    if n_entries < 1:
        raise KQuantError(f"{path} is neither a GGUF nor a legacy imatrix with data (entry count {n_entries})")
    entries = {}
    for i in range(n_entries):
        n = i32(f"entry {i}'s name length")
        if n < 0:
            raise KQuantError(f"{path}: entry {i} has a negative name length; the file is damaged")
        name = take(n, f"entry {i}'s name").decode("utf-8", errors="replace")
        ncall, nval = i32(f"entry {name}"), i32(f"entry {name}")
        if nval < 1:
            raise KQuantError(f"{path}: entry {name} has {nval} values; the file is damaged")
        sums = np.frombuffer(take(4 * nval, f"the values of {name}"), dtype="<f4").astype(np.float32)
        entries[name] = Entry(sums.reshape(1, -1), np.array([ncall], dtype=np.int64))
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):  # the trailing chunk count and dataset name are optional
        chunk_count = i32("the chunk count")
        if pos + 4 <= len(data):
            n = i32("the dataset name length")
            if n > 0 and pos + n <= len(data):
                datasets = [take(n, "the dataset name").split(b"\0")[0].decode("utf-8", errors="replace")]
    return Imatrix(entries, datasets, chunk_count, 0, legacy=True)


# ---------------------------------------------------------------------------- collecting


def collect(
    model,
    data,
    *,
    n_ctx: int | None = None,
    n_chunks: int | None = None,
    dataset: str | None = None,
    process_output: bool = False,
) -> Imatrix:
    """Run calibration data through kquant.forward and record what llama-imatrix records.

    ``model``: a ``kquant.forward.Llama`` or the path of a llama GGUF (any type it reads).
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
    from .forward import Llama

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
    """Token ids of ``text`` with the model's own tokenizer (llama.cpp's, vocabulary only): BOS first, specials parsed.

    This is llama-imatrix's ``common_tokenize(ctx, text, add_special=true, parse_special)``
    with --parse-special, so ``</s>`` in the text is the end-of-document token.
    """
    import logging

    if llama.path is None:
        raise KQuantError(
            "this Llama was not loaded from a file, so there is no tokenizer: pass token-id sequences instead of text"
        )
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load log, else printed
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # the tokenizer only: no weights, no context
    model = llama_cpp.llama_model_load_from_file(str(llama.path).encode(), params)
    if not model:
        raise KQuantError(f"llama.cpp could not read the tokenizer of {llama.path}")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        data = text.encode()
        room = len(data) + 2  # never more tokens than bytes, plus BOS (and EOS)
        ids = (llama_cpp.llama_token * room)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), ids, room, True, True)
        if n < 0:
            raise KQuantError(f"llama.cpp could not tokenize the text ({n})")
        return list(ids[:n])
    finally:
        llama_cpp.llama_model_free(model)


def as_importance(imatrix) -> tuple[dict[str, np.ndarray], Imatrix | None]:
    """The name -> importance table llama-quantize would pass, from an Imatrix, a file or a plain dict."""
    if imatrix is None:
        return {}, None
    if isinstance(imatrix, (str, Path)):
        imatrix = Imatrix.load(imatrix)
    if isinstance(imatrix, Imatrix):
        if not imatrix.entries:
            raise KQuantError("the imatrix has no entries: llama-quantize refuses an imatrix without data")
        vectors = imatrix.vectors()
        source = imatrix
    elif isinstance(imatrix, dict):
        vectors = {str(k): np.asarray(v) for k, v in imatrix.items()}
        source = None
    else:
        raise KQuantError(
            f"imatrix must be an Imatrix, a file path or a dict name -> importance vector, not {type(imatrix).__name__}"
        )
    if not vectors:
        raise KQuantError("the imatrix has no entries: llama-quantize refuses an imatrix without data")
    for name, v in vectors.items():
        v = np.asarray(v)
        if v.ndim != 1 or v.size == 0:
            raise KQuantError(
                f"imatrix entry {name} has shape {v.shape}: give one flat vector of importances per tensor"
            )
        try:
            vectors[name] = check_importance(v, v.size)
        except KQuantError as e:
            raise KQuantError(f"imatrix entry {name}: {e}") from None
    return vectors, source
