"""Whole models: quantize a GGUF file exactly as llama.cpp's llama-quantize does.

    import kquant
    summary = kquant.quantize_gguf("tiny-f32.gguf", "tiny-Q4_K_M.gguf", "Q4_K_M")
    print(summary)                         # every tensor: type, bytes, bits per weight

The file written is byte-for-byte the one ``llama_cpp.llama_model_quantize`` writes for the
same input and mix (the tests compare sha256). That takes four decisions, each made as in
src/llama-quant.cpp of llama.cpp 0c1e57098:

1. Tensor order: llama.cpp walks its tensors sorted by layer (non-block tensors first),
   then by name, and writes them in that order, not in the source file's order.
2. Metadata: every key of the source, in the source's order, except that
   general.quantization_version (2) and general.file_type (the mix's id, 15 for Q4_K_M)
   are appended at the end (llama.cpp's gguf_set_val_u32 removes a key, then appends it).
   Split keys (split.no, split.count, split.tensors.count) are dropped.
3. Formats: one per tensor, from ``kquant.mixes.plan``; quantized with ``kquant.quantize``,
   which gives ggml_quantize_chunk's bytes.
4. Layout: the metadata and then every tensor are padded with zeros to 32 bytes.

With an importance matrix (``imatrix=``, llama-quantize's ``--imatrix FILE``), as
llama-quant.cpp and tools/quantize/quantize.cpp do it:

* every tensor that is converted (its type changes) and has an entry of the same name is
  encoded with ``kquant.quantize(x, type, imatrix=entry)``; a 3-D expert tensor gets one
  slice of the entry per expert. No entry: quantized without one (llama.cpp only logs
  "did not find weights"). An entry of the wrong length (not n_cols × n_experts) is an error,
  except for token_embd.weight, which is then quantized without it.
* the mix rules see ``has_imatrix`` (Q4_0 / Q5_0: ffn_down of the first n_layer/8 layers
  become Q4_1 / Q5_1).
* after general.file_type come the keys the llama-quantize tool adds (the library adds none):
  quantize.imatrix.file (the path as given, at most 127 bytes), quantize.imatrix.dataset
  (the first of imatrix.datasets, if any), quantize.imatrix.entries_count (uint32, all entries
  of the file) and quantize.imatrix.chunks_count (uint32, imatrix.chunk_count, if > 0).
  A plain dict {name: vector} is what ``llama_model_quantize`` itself takes: no keys then.

gguf-py's GGUFWriter writes the header, metadata and tensor infos (the only nudge it needs is in
``_copy_metadata``); the tensor data is then written at the offsets those fix, row range by row
range (``_units``), by this process or by worker processes (``threads``).
The output goes to a temporary file in the destination folder, renamed over the
destination only once complete, so a crash, Ctrl-C or a full disk leaves no partial file.

Notebooks 06-10 quantize with it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import (
    GGML_QUANT_SIZES,
    GGML_QUANT_VERSION,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)
from gguf.quants import quant_shape_to_byte_shape

from kquant.errors import KQuantError
from kquant.formats import FORMATS, dequantize, quantize
from kquant.formats.alloc import keep_freed_memory, libc_function
from kquant.formats.cops import to_fp16
from kquant.gguf.llama_keys import check_llama
from kquant.gguf.reader import GGUFFile, StringArray, open_gguf, shape_of, weights
from kquant.gguf.summary import FileSummary, TensorRow
from kquant.gguf.writer import GGUFWriter, atomic_output, check_destination
from kquant.imatrix import Imatrix, as_importance, quantize_keys
from kquant.mixes import Choice, ModelParams, TensorSpec, get_mix, plan, requires_imatrix
from kquant.progress import progress_bar

T = GGMLQuantizationType

# Keys llama-quantize sets itself (moved to the end) or drops.
_SET_AT_END = (Keys.General.QUANTIZATION_VERSION, Keys.General.FILE_TYPE)
_DROPPED = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)


# kquant quantizes from these (llama-quantize also takes them; it refuses quantized input by default).
SOURCE_TYPES = (T.F32, T.F16, T.BF16)
# The architectures whose mix rules kquant.mixes implements.
SUPPORTED_ARCHS = ("llama",)
# Keys llama.cpp cannot load a llama model without (so llama-quantize fails without them too).
_REQUIRED = ("context_length", "embedding_length", "block_count", "attention.layer_norm_rms_epsilon")


@dataclass
class SourceModel:
    """A source model, checked: where it is, the open file, hyper-parameters and tensors (file order)."""

    path: Path
    file: GGUFFile
    arch: str
    params: ModelParams
    tensors: list[TensorSpec]


def read_model(path) -> SourceModel:
    """Open a model kquant can quantize: a llama GGUF of F32 / F16 / BF16 tensors that llama.cpp would load.

    ``open_gguf`` and ``check_llama`` refuse what llama.cpp's loader refuses; the checks here are
    kquant's own: the architectures whose mix rules it knows, and source types it can read.
    """
    f = open_gguf(path)
    path = Path(path)
    arch = f.get(Keys.General.ARCHITECTURE)
    if arch is None:
        raise KQuantError(f"{path} has no general.architecture key, so llama.cpp cannot load it")
    if arch not in SUPPORTED_ARCHS:
        raise KQuantError(
            f"{path}: architecture {arch!r} is not supported; kquant follows llama.cpp's mix rules for "
            f"{', '.join(SUPPORTED_ARCHS)} models"
        )
    for key in _REQUIRED:
        if f"{arch}.{key}" not in f.fields:
            raise KQuantError(f"{path} lacks the metadata key {arch}.{key}, which llama.cpp needs to load the model")
    check_llama(f)
    if (f.get(Keys.Split.LLM_KV_SPLIT_COUNT) or 1) > 1:
        raise KQuantError(f"{path} is one shard of a split model: merge the shards first (llama-gguf-split --merge)")
    if f.alignment != GGUF_DEFAULT_ALIGNMENT:
        raise KQuantError(
            f"{path} uses general.alignment = {f.alignment}; llama-quantize writes 32-byte alignment only"
        )
    if not f.tensors:
        raise KQuantError(f"{path} holds no tensors: nothing to quantize")

    tensors = []
    for t in f.tensors:
        if t.type not in SOURCE_TYPES:
            if GGML_QUANT_SIZES[t.type][0] > 1:
                raise KQuantError(
                    f"{path} is already quantized ({t.name} is {t.type.name}): start from the F32, F16 or BF16 model"
                )
            raise KQuantError(
                f"{path}: tensor {t.name} has type {t.type.name}; kquant reads F32, F16 and BF16 tensors only"
            )
        tensors.append(TensorSpec(t.name, shape_of(t), t.type))

    n_head = _first(f.get(f"{arch}.attention.head_count"), 0)
    n_head_kv = _first(f.get(f"{arch}.attention.head_count_kv"), n_head)  # llama.cpp's default: no GQA
    params = ModelParams(
        n_layer=int(f.get(f"{arch}.block_count")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_expert=int(f.get(f"{arch}.expert_count") or 0),
    )
    return SourceModel(path, f, arch, params, tensors)


def _first(value, default: int) -> int:
    """A per-layer value: llama.cpp accepts one number or an array with one per layer (it uses layer 0)."""
    if value is None:
        return default
    if isinstance(value, np.ndarray):
        return int(value[0]) if len(value) else default
    return int(value)


def metadata(f: GGUFFile) -> list[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
    """Every metadata pair as llama-quantize copies it: (key, value, type, array item type), for GGUFWriter.

    llama.cpp copies each pair with gguf_set_kv, which reads keys and strings as C strings: they end
    at the first NUL byte, and a key that becomes equal to an earlier one replaces it and moves to
    the end. Strings stay bytes, so they are copied exactly even when they are not valid UTF-8.
    """
    pairs: dict[str, tuple] = {}
    for field in f.fields.values():
        key = field.name.split("\0", 1)[0]
        v = field.value
        if field.type == GGUFValueType.ARRAY and field.item_type == GGUFValueType.ARRAY:
            raise KQuantError(f"metadata key {key} is an array of arrays, which llama.cpp cannot copy either")
        if field.type == GGUFValueType.ARRAY and len(v) == 0:
            raise KQuantError(f"metadata key {key} is an empty array, which gguf-py's GGUFWriter cannot write")
        if isinstance(v, StringArray):
            v = [b.split(b"\0", 1)[0] for b in v]
        elif isinstance(v, np.ndarray):
            v = v.tolist()  # plain Python values: any GGUFWriter takes them (kquant's packs a list in one piece)
        elif isinstance(v, bytes):
            v = v.split(b"\0", 1)[0]
        pairs.pop(key, None)  # gguf_set_*: remove the key, then append it
        pairs[key] = (key, v, field.type, field.item_type)
    return list(pairs.values())


def plan_gguf(
    path, mix="Q4_K_M", *, pure=False, overrides=(), output_type=None, token_embd_type=None, imatrix=None
) -> list[Choice]:
    """The format (and the reason) llama-quantize would give each tensor of a GGUF model.

    ``imatrix`` (an Imatrix, its file, or True) turns on the rules that apply only with one.
    """
    model = read_model(path)
    has_imatrix = imatrix is True or bool(as_importance(None if imatrix is True else imatrix)[0])
    return _plan(model, mix, pure, overrides, output_type, token_embd_type, has_imatrix)


def quantize_gguf(
    src,
    dst,
    mix="Q4_K_M",
    *,
    overwrite: bool = False,
    pure: bool = False,
    overrides=(),
    output_type=None,
    token_embd_type=None,
    imatrix=None,
    weights=None,
    blocks=None,
    threads: int | None = None,
    progress: bool = True,
) -> FileSummary:
    """Quantize the F32 / F16 / BF16 llama GGUF ``src`` into ``dst`` with a llama.cpp mix.

    The options are llama-quantize's: ``pure`` (--pure), ``overrides`` ({regex: type},
    --tensor-type), ``output_type`` (--output-tensor-type), ``token_embd_type``
    (--token-embedding-type), ``imatrix`` (--imatrix: a kquant.imatrix.Imatrix, the path of
    an imatrix file, or a dict tensor name -> importance vector). ``dst`` is replaced only if
    ``overwrite``; ``src`` never is.

    Two doors for the methods of notebooks 11-16, which change what is written but not how
    the file is laid out: ``weights`` ({tensor name: float array of the tensor's shape})
    replaces a tensor's values before it is converted (AWQ's rescaled matrices and norms,
    a merged LoRA); ``blocks`` ({tensor name: uint8 array}) supplies a quantized tensor's
    bytes, which must have the size its planned type gives (GPTQ's blocks). Each name must
    be a tensor of ``src``; ``plan_gguf`` tells which type each one gets.

    ``threads`` (llama-quantize's --threads; default: every CPU, as llama-quantize) worker
    processes encode row ranges at once and write them at offsets the plan fixes; the bytes do
    not depend on it. Small models are done in this process (forking would cost more).
    Returns a FileSummary: per tensor its type, bytes, bits per weight, time and reason.
    """
    model = read_model(src)
    mix = get_mix(mix)
    importance, loaded = as_importance(imatrix)
    imatrix_keys = _imatrix_keys(imatrix, loaded, len(importance))
    choices = _plan(model, mix, pure, overrides, output_type, token_embd_type, has_imatrix=bool(importance))
    _check_required_entries(choices, mix, importance)
    dst = check_destination(dst, overwrite=overwrite, protect=[model.path])
    weights, blocks = _check_replacements(choices, weights, blocks)

    threads = _threads(threads)

    start = time.perf_counter()
    try:
        with atomic_output(dst, overwrite=overwrite, protect=[model.path]) as tmp:
            writer = GGUFWriter(tmp, model.arch)
            try:
                _copy_metadata(model, writer, mix.file_type, imatrix_keys)
                for c in choices:
                    shape = quant_shape_to_byte_shape(c.shape, c.type)
                    writer.add_tensor_info(c.name, shape, np.dtype(np.uint8), math.prod(shape), raw_dtype=c.type)
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                writer.fout[0].flush()
                data_start = GGUFWriter.ggml_pad(writer.fout[0].tell(), GGUF_DEFAULT_ALIGNMENT)
            finally:
                writer.close()
            units, end = _units(choices, data_start)
            os.truncate(tmp, end)  # the zero padding after every tensor, and room for all of them
            job = _Job(tmp, model, choices, importance, weights, blocks)
            seconds = _run(job, units, threads, f"{model.path.name} → {mix.name}", progress)
    except OSError as e:
        raise KQuantError(f"could not write {dst}: {e.strerror or e}; nothing was written") from e
    rows = []
    for i, c in enumerate(choices):
        reason = c.reason + ("; weighted by its imatrix entry" if _weighted(c, importance) else "")
        nbytes = math.prod(quant_shape_to_byte_shape(c.shape, c.type))
        rows.append(TensorRow(c.name, c.shape, c.type, nbytes, reason, seconds[i]))
    return FileSummary(dst, rows, seconds=time.perf_counter() - start, mix=mix.name)


# Whole-file work is cut into units of about this many weights: large enough that numpy's per-call
# cost vanishes, small enough that workers share a large tensor and memory stays bounded.
_UNIT_WEIGHTS = 1 << 20
# Below this many weights in all (the bundled model has 6.5 M), forking workers costs more than it
# saves, and a notebook's kernel is not forked for it.
_PARALLEL_MIN_WEIGHTS = 1 << 24


def _threads(threads) -> int:
    if threads is None:
        return os.cpu_count() or 1  # llama-quantize: std::thread::hardware_concurrency()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise KQuantError(f"threads must be a whole number ≥ 1, not {threads!r}")
    return threads


@dataclass(frozen=True)
class _Unit:
    """Rows [row0, row1) of choices[index] (inside one matrix of it), written at ``offset`` of the output."""

    index: int
    matrix: int  # which expert matrix of a 3-D tensor (0 for a 2-D one): its slice of the imatrix entry
    row0: int
    row1: int
    offset: int


def _units(choices: list[Choice], data_start: int) -> tuple[list[_Unit], int]:
    """Every tensor's rows in units, and where the data ends; each tensor starts 32-byte aligned."""
    units, offset = [], data_start
    for i, c in enumerate(choices):
        ncols = c.shape[-1]
        row_bytes = quant_shape_to_byte_shape(c.shape, c.type)[-1]
        per_matrix = c.shape[-2] if len(c.shape) > 1 else 1
        n_matrices = math.prod(c.shape[:-2]) if len(c.shape) > 2 else 1
        step = max(1, _UNIT_WEIGHTS // ncols)
        for m in range(n_matrices):
            for r0 in range(m * per_matrix, (m + 1) * per_matrix, step):
                r1 = min(r0 + step, (m + 1) * per_matrix)
                units.append(_Unit(i, m, r0, r1, offset + r0 * row_bytes))
        offset = GGUFWriter.ggml_pad(offset + per_matrix * n_matrices * row_bytes, GGUF_DEFAULT_ALIGNMENT)
    return units, offset


@dataclass
class _Job:
    """What every unit needs; a forked worker inherits it (and the source's memory map) as it is."""

    path: Path  # the temporary output file
    model: SourceModel
    choices: list[Choice]
    importance: dict
    weights: dict
    blocks: dict
    source: dict = dataclasses.field(init=False)  # tensor name -> the source's Tensor

    def __post_init__(self):
        self.source = {t.name: t for t in self.model.file.tensors}

    def encode(self, u: _Unit) -> np.ndarray:
        c = self.choices[u.index]
        rows = slice(u.row0, u.row1)
        if c.name in self.blocks:
            return self.blocks[c.name].reshape(math.prod(c.shape[:-1]), -1)[rows].reshape(-1)
        t = self.source[c.name]
        replaced = self.weights.get(c.name)
        if replaced is not None:
            replaced = replaced.reshape(-1, c.shape[-1])[rows]
        data = _encode(t, c, self.importance, replaced, rows, u.matrix)
        self.model.file.release(t)  # memory bounded by a unit, not by the file
        return data


_JOB: _Job | None = None  # set before the workers fork, so each inherits it


def _work(u: _Unit) -> tuple[int, int, float]:
    """Encode one unit and write it at its offset (in a worker, or in this process)."""
    t0 = time.perf_counter()
    data = _JOB.encode(u)
    fd = os.open(_JOB.path, os.O_WRONLY)
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):  # pwrite may write less than asked
            written += os.pwrite(fd, view[written:], u.offset + written)
        if _sync_file_range is not None:
            # Start writing these bytes to disk now, while the other units are encoded: the
            # fsync that makes the file durable before its rename then has little left to wait for.
            _sync_file_range(fd, u.offset, len(view), _SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)
    return u.index, (u.row1 - u.row0) * _JOB.choices[u.index].shape[-1], time.perf_counter() - t0


_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the range, do not wait for it
_sync_file_range = None  # Linux's sync_file_range, in a worker (see _worker_init)


def _find_sync_file_range():
    """glibc's sync_file_range(fd, offset, nbytes, flags), or None where there is none."""
    f = libc_function("sync_file_range")
    if f is None:
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    f.restype = ctypes.c_int
    return f


def _worker_init() -> None:
    """In a forked worker: the default SIGTERM / SIGINT, and a malloc that keeps what numpy frees.

    Signals: the worker inherits the atomic writer's handlers, which would turn the pool's own
    SIGTERM into a traceback; the parent removes the temporary file.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the pool
    # glibc: numpy's temporaries from the heap, and up to 1 GiB of freed memory kept (a worker's
    # memory stays what one unit needs at once, and all goes back when it exits). By default a
    # 300 M-weight file cost the workers ~300 000 page faults, a third of their CPU time.
    keep_freed_memory(1 << 30)
    global _sync_file_range
    _sync_file_range = _find_sync_file_range()


def _run(job: _Job, units: list[_Unit], threads: int, label: str, progress: bool) -> list[float]:
    """Do every unit, in ``threads`` forked workers when worth it; the seconds spent on each tensor."""
    global _JOB
    seconds = [0.0] * len(job.choices)
    total = sum((u.row1 - u.row0) * job.choices[u.index].shape[-1] for u in units)
    parallel = threads > 1 and total >= _PARALLEL_MIN_WEIGHTS and "fork" in mp.get_all_start_methods()
    _JOB = job
    try:
        with progress_bar(total, label, progress) as bar:
            if parallel:
                # fork: the workers start at once with the job and the memory map; each reads the rows
                # of its units from the page cache and writes its bytes with pwrite.
                pool = mp.get_context("fork").Pool(threads, initializer=_worker_init)
                try:
                    for index, n, sec in pool.imap_unordered(_work, units, chunksize=1):
                        seconds[index] += sec
                        bar.update(n)
                    pool.close()  # done: let the workers exit on their own
                finally:
                    pool.terminate()  # on an error or Ctrl-C: stop them (a no-op after close and exit)
                    pool.join()
            else:
                for u in units:
                    index, n, sec = _work(u)
                    seconds[index] += sec
                    bar.update(n)
    finally:
        _JOB = None
    return seconds


def _plan(model: SourceModel, mix, pure, overrides, output_type, token_embd_type, has_imatrix=False) -> list[Choice]:
    choices = plan(
        model.tensors,
        model.params,
        mix,
        pure=pure,
        overrides=overrides,
        output_type=output_type,
        token_embd_type=token_embd_type,
        has_imatrix=has_imatrix,
    )
    for c in choices:
        if c.type != c.source and c.type not in FORMATS and c.type not in (T.F32, T.F16, T.BF16):
            raise KQuantError(
                f"{c.name} would become {c.type.name}, which kquant cannot write; choose one of "
                f"{', '.join(f.name for f in FORMATS)}, F16, BF16 or F32"
            )
        block = GGML_QUANT_SIZES[c.type][0]
        if c.shape[-1] % block:
            # Only an explicit output/token-embedding type skips llama.cpp's shape fallback.
            raise KQuantError(
                f"{c.name} has rows of {c.shape[-1]} weights, not a multiple of {c.type.name}'s "
                f"block of {block}: choose another type for it"
            )
    return choices


def _check_replacements(choices: list[Choice], new_weights, new_blocks) -> tuple[dict, dict]:
    """quantize_gguf's ``weights`` and ``blocks``, checked against the plan before anything is written."""
    by_name = {c.name: c for c in choices}
    out_w, out_b = {}, {}
    for name, x in (new_weights or {}).items():
        c = by_name.get(name)
        if c is None:
            raise KQuantError(f"weights= names {name!r}, which is not a tensor of the source model")
        x = np.asarray(x, dtype=np.float32)
        if x.shape != tuple(c.shape):
            raise KQuantError(f"weights= gives {name} the shape {x.shape}; the tensor's shape is {tuple(c.shape)}")
        if not np.isfinite(x).all():
            raise KQuantError(f"weights= gives {name} NaN or Inf values; llama.cpp refuses such a tensor")
        out_w[name] = x
    for name, b in (new_blocks or {}).items():
        c = by_name.get(name)
        if c is None:
            raise KQuantError(f"blocks= names {name!r}, which is not a tensor of the source model")
        if name in out_w:
            raise KQuantError(f"{name} is given both weights= and blocks=: give one")
        b = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
        size = math.prod(quant_shape_to_byte_shape(c.shape, c.type))
        if b.size != size:
            raise KQuantError(
                f"blocks= gives {name} {b.size} bytes; as {c.type.name} it takes {size} (see plan_gguf for its type)"
            )
        out_b[name] = b
    return out_w, out_b


def _encode(t, c: Choice, importance: dict, replaced=None, rows: slice | None = None, matrix: int = 0) -> np.ndarray:
    """The bytes of some rows of one output tensor: a copy, a float conversion, or kquant.quantize.

    ``rows`` of the tensor seen as (rows, last axis), all inside expert matrix ``matrix``.
    """
    rows = slice(None) if rows is None else rows
    if replaced is None:
        if c.type == c.source:
            data = np.ascontiguousarray(t.data)
            return np.ascontiguousarray(data.reshape(-1, data.shape[-1])[rows]).reshape(-1).view(np.uint8)
        x = weights(t, rows)  # float32; also refuses NaN and Inf, as llama.cpp does for every tensor it reads
    else:
        x = replaced  # quantize_gguf(weights=): checked float32 rows of the tensor
    qw = _importance_for(c, importance)  # checked for every converted tensor, F16 targets included
    if c.type == T.F32:
        return np.ascontiguousarray(x).reshape(-1).view(np.uint8)
    if c.type == T.BF16:
        return _to_bf16(np.ascontiguousarray(x)).reshape(-1).view(np.uint8)
    if c.type == T.F16:
        h = to_fp16(x)  # round to nearest even, as ggml_fp32_to_fp16_row (numpy's cast, ~2.5x faster)
        if not np.isfinite(h).all():
            raise KQuantError(f"{c.name} has weights beyond F16's range (±65504); llama.cpp fails on them too")
        return h.reshape(-1).view(np.uint8)
    try:
        # kquant.quantize refuses blocks whose fp16 scale would overflow, as llama.cpp's
        # ggml_validate_row_data does after quantizing.
        if qw is None:
            return quantize(x, c.type).reshape(-1)
        ncols = c.shape[-1]  # one slice of the entry per expert matrix (a dense 2-D tensor is one "expert")
        return quantize(x, c.type, imatrix=qw[matrix * ncols : (matrix + 1) * ncols]).reshape(-1)
    except KQuantError as e:
        raise KQuantError(f"{c.name} as {c.type.name}: {e}") from None


def _to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even as ggml_fp32_to_bf16 does (finite input)."""
    u = x.view(np.uint32)
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)


def _check_required_entries(choices, mix, importance: dict) -> None:
    """Refuse what llama.cpp refuses: a tensor that requires an imatrix (Q2_K in Q2_K_S) without an entry."""
    for c in choices:
        if c.type != c.source and requires_imatrix(c.name, c.type, mix):
            if not importance:
                raise KQuantError(
                    f"{mix.name} requires an importance matrix (llama.cpp refuses to write {c.name} as "
                    f"{c.type.name} without one): pass imatrix= (--imatrix FILE)"
                )
            if c.name not in importance:
                raise KQuantError(
                    f"the imatrix has no entry for {c.name}, which {mix.name} writes as {c.type.name} only with one "
                    f"(llama.cpp: 'the result will be garbage, so bailing out'): use an imatrix of this model"
                )


def _importance_for(c: Choice, importance: dict):
    """The imatrix entry llama.cpp would pass for this tensor, or None (llama_model_quantize_impl)."""
    qw = importance.get(c.name)
    if qw is None:
        return None  # llama.cpp: "did not find weights for ..." and quantizes without
    n_mat = math.prod(c.shape[:-2]) if len(c.shape) > 2 else 1
    if qw.size != c.shape[-1] * n_mat:
        if c.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return None  # llama.cpp lets this one pass: it "always causes this warning"
        raise KQuantError(
            f"the imatrix entry for {c.name} has {qw.size} values but the tensor needs {c.shape[-1] * n_mat} "
            f"(one per column{' per expert' if n_mat > 1 else ''}): was the imatrix made for another model?"
        )
    return qw


def _weighted(c: Choice, importance: dict) -> bool:
    """Did ggml's encoder use an importance vector for this tensor? (F16/F32 and Q8_0 ignore it.)"""
    return c.type != c.source and c.type not in (T.F16, T.F32, T.Q8_0) and _importance_for(c, importance) is not None


def _imatrix_keys(imatrix, loaded: Imatrix | None, n_entries: int) -> list[tuple[str, object, GGUFValueType]]:
    """The quantize.imatrix.* keys llama-quantize adds, typed for GGUFWriter (none for a plain dict)."""
    return [
        (key, value, GGUFValueType.STRING if isinstance(value, bytes) else GGUFValueType.UINT32)
        for key, value in quantize_keys(imatrix, loaded, n_entries)
    ]


def _copy_metadata(model: SourceModel, writer: GGUFWriter, file_type: int, extra=()) -> None:
    """Every source key in its order, then quantization_version, file_type and ``extra``, as llama.cpp does."""
    # GGUFWriter adds general.architecture first on its own; take it out so the key lands
    # where the source had it (kv_data is the writer's public table of pending keys).
    del writer.kv_data[0][Keys.General.ARCHITECTURE]
    at_end = set(_SET_AT_END) | {key for key, _, _ in extra}  # gguf_set_val_* removes a key, then appends it
    for key, value, vtype, sub_type in metadata(model.file):
        if key not in at_end and key not in _DROPPED:
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_file_type(int(file_type))
    for key, value, vtype in extra:
        writer.add_key_value(key, value, vtype)


def dequantize_gguf(src, dst, *, overwrite: bool = False) -> Path:
    """Write the llama GGUF ``src`` with every tensor as F32 (quantized ones decoded with kquant.dequantize).

    The way to quantize a file that is already quantized: its F32 copy holds exactly the weights
    llama.cpp computes with, and ``quantize_gguf`` (or llama-quantize) starts from it. Metadata is
    copied as llama-quantize copies it, with general.file_type 0 (all F32). ``src`` is never replaced.
    """
    f = open_gguf(src)
    arch = f.get(Keys.General.ARCHITECTURE)
    if arch not in SUPPORTED_ARCHS:
        raise KQuantError(f"{src}: architecture {arch!r} is not supported ({', '.join(SUPPORTED_ARCHS)} only)")
    model = SourceModel(Path(src), f, arch, ModelParams(n_layer=0, n_head=0, n_head_kv=0), [])
    try:
        with atomic_output(dst, overwrite=overwrite, protect=[model.path]) as tmp:
            writer = GGUFWriter(tmp, arch)
            try:
                _copy_metadata(model, writer, 0)
                for t in f.tensors:
                    writer.add_tensor_info(t.name, shape_of(t), np.dtype(np.float32), math.prod(shape_of(t)) * 4)
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                for t in f.tensors:
                    if t.type in SOURCE_TYPES:
                        x = weights(t)
                    elif t.type in FORMATS:
                        x = dequantize(np.ascontiguousarray(t.data), t.type.name)
                    else:
                        raise KQuantError(f"{t.name} has type {t.type.name}, which kquant cannot decode")
                    writer.write_tensor_data(np.ascontiguousarray(x, dtype=np.float32).reshape(shape_of(t)))
                    f.release(t)
            finally:
                writer.close()
    except OSError as e:
        raise KQuantError(f"could not write {dst}: {e.strerror or e}; nothing was written") from e
    return Path(dst)
