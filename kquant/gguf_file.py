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

gguf-py's GGUFWriter writes all of it; the only nudge it needs is in ``_copy_metadata``.
The output goes to a temporary file in the destination folder, renamed over the
destination only once complete, so a crash, Ctrl-C or a full disk leaves no partial file.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFValueType, GGUFWriter, Keys
from gguf.quants import quant_shape_to_byte_shape

from .errors import KQuantError
from .formats import FORMATS, quantize
from .gguf_read import Model, metadata, read_model, weights
from .imatrix import Imatrix, as_importance
from .mixes import Choice, get_mix, plan, requires_imatrix
from .progress import progress_bar
from .summary import FileSummary, TensorRow

T = GGMLQuantizationType

# Keys llama-quantize sets itself (moved to the end) or drops.
_SET_AT_END = (Keys.General.QUANTIZATION_VERSION, Keys.General.FILE_TYPE)
_DROPPED = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
# The keys llama-quantize (the tool, through kv overrides) adds when given --imatrix.
IMATRIX_FILE = "quantize.imatrix.file"
IMATRIX_DATASET = "quantize.imatrix.dataset"
IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"


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
    progress: bool = True,
) -> FileSummary:
    """Quantize the F32 / F16 / BF16 llama GGUF ``src`` into ``dst`` with a llama.cpp mix.

    The options are llama-quantize's: ``pure`` (--pure), ``overrides`` ({regex: type},
    --tensor-type), ``output_type`` (--output-tensor-type), ``token_embd_type``
    (--token-embedding-type), ``imatrix`` (--imatrix: a kquant.imatrix.Imatrix, the path of
    an imatrix file, or a dict tensor name -> importance vector). ``dst`` is replaced only if
    ``overwrite``; ``src`` never is.
    Returns a FileSummary: per tensor its type, bytes, bits per weight, time and reason.
    """
    model = read_model(src)
    mix = get_mix(mix)
    importance, loaded = as_importance(imatrix)
    imatrix_keys = _imatrix_keys(imatrix, loaded, len(importance))
    choices = _plan(model, mix, pure, overrides, output_type, token_embd_type, has_imatrix=bool(importance))
    _check_required_entries(choices, mix, importance)
    dst = _check_destination(model.path, Path(dst), overwrite)
    source = {t.name: t for t in model.reader.tensors}

    start = time.perf_counter()
    rows = []
    try:
        with _atomic_output(dst) as tmp:
            writer = GGUFWriter(tmp, model.arch)
            try:
                _copy_metadata(model, writer, mix.file_type, imatrix_keys)
                for c in choices:
                    shape = quant_shape_to_byte_shape(c.shape, c.type)
                    writer.add_tensor_info(c.name, shape, np.dtype(np.uint8), math.prod(shape), raw_dtype=c.type)
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                total = sum(math.prod(c.shape) for c in choices)
                with progress_bar(total, f"{model.path.name} → {mix.name}", progress) as bar:
                    for c in choices:
                        t0 = time.perf_counter()
                        data = _encode(source[c.name], c, importance)
                        writer.write_tensor_data(data)  # pads to 32 bytes after the tensor
                        reason = c.reason + ("; weighted by its imatrix entry" if _weighted(c, importance) else "")
                        rows.append(TensorRow(c.name, c.shape, c.type, data.nbytes, reason, time.perf_counter() - t0))
                        bar.update(math.prod(c.shape))
            finally:
                writer.close()
    except OSError as e:
        raise KQuantError(f"could not write {dst}: {e.strerror or e}; nothing was written") from e
    return FileSummary(dst, rows, seconds=time.perf_counter() - start, mix=mix.name)


def _plan(model: Model, mix, pure, overrides, output_type, token_embd_type, has_imatrix=False) -> list[Choice]:
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
        if c.type != c.source and c.type not in FORMATS and c.type not in (T.F32, T.F16):
            raise KQuantError(
                f"{c.name} would become {c.type.name}, which kquant cannot write; choose one of "
                f"{', '.join(f.name for f in FORMATS)}, F16 or F32"
            )
        block = GGML_QUANT_SIZES[c.type][0]
        if c.shape[-1] % block:
            # Only an explicit output/token-embedding type skips llama.cpp's shape fallback.
            raise KQuantError(
                f"{c.name} has rows of {c.shape[-1]} weights, not a multiple of {c.type.name}'s "
                f"block of {block}: choose another type for it"
            )
    return choices


def _encode(t, c: Choice, importance: dict) -> np.ndarray:
    """The bytes of one output tensor: a copy, a float conversion, or kquant.quantize."""
    x = weights(t)  # float32; also refuses NaN and Inf, as llama.cpp does for every tensor it reads
    if c.type == c.source:
        return np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
    qw = _importance_for(c, importance)  # checked for every converted tensor, F16 targets included
    if c.type == T.F32:
        return x.reshape(-1).view(np.uint8)
    if c.type == T.F16:
        h = x.astype(np.float16)  # round to nearest even, as ggml_fp32_to_fp16_row
        if not np.isfinite(h).all():
            raise KQuantError(f"{c.name} has weights beyond F16's range (±65504); llama.cpp fails on them too")
        return h.reshape(-1).view(np.uint8)
    try:
        # kquant.quantize refuses blocks whose fp16 scale would overflow, as llama.cpp's
        # ggml_validate_row_data does after quantizing.
        if qw is None:
            return quantize(x, c.type).reshape(-1)
        # One slice of the entry per expert matrix (a dense 2-D tensor is a single "expert").
        experts = x.reshape(-1, *x.shape[-2:])
        ncols = x.shape[-1]
        return np.concatenate(
            [quantize(e, c.type, imatrix=qw[i * ncols : (i + 1) * ncols]).reshape(-1) for i, e in enumerate(experts)]
        )
    except KQuantError as e:
        raise KQuantError(f"{c.name} as {c.type.name}: {e}") from None


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
    """The quantize.imatrix.* keys llama-quantize adds, in its order (none for a plain dict)."""
    if loaded is None:
        return []
    keys = []
    name = str(imatrix) if isinstance(imatrix, (str, Path)) else loaded.file
    if name is not None:  # the tool copies the --imatrix argument into a 128-byte field
        keys.append((IMATRIX_FILE, name.encode()[:127], GGUFValueType.STRING))
    if loaded.datasets:
        keys.append((IMATRIX_DATASET, loaded.datasets[0].encode()[:127], GGUFValueType.STRING))
    keys.append((IMATRIX_N_ENTRIES, n_entries, GGUFValueType.UINT32))
    if loaded.chunk_count > 0:
        keys.append((IMATRIX_N_CHUNKS, int(loaded.chunk_count), GGUFValueType.UINT32))
    return keys


def _copy_metadata(model: Model, writer: GGUFWriter, file_type: int, extra=()) -> None:
    """Every source key in its order, then quantization_version, file_type and ``extra``, as llama.cpp does."""
    # GGUFWriter adds general.architecture first on its own; take it out so the key lands
    # where the source had it (kv_data is the writer's public table of pending keys).
    del writer.kv_data[0][Keys.General.ARCHITECTURE]
    at_end = set(_SET_AT_END) | {key for key, _, _ in extra}  # gguf_set_val_* removes a key, then appends it
    for key, value, vtype, sub_type in metadata(model.reader):
        if key not in at_end and key not in _DROPPED:
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_file_type(int(file_type))
    for key, value, vtype in extra:
        writer.add_key_value(key, value, vtype)


def _check_destination(src: Path, dst: Path, overwrite: bool) -> Path:
    """Refuse to write over the input, into a missing folder, or over a file unless asked."""
    if not dst.parent.is_dir():
        raise KQuantError(f"cannot write {dst}: the folder {dst.parent} does not exist")
    if dst.is_dir():
        raise KQuantError(f"cannot write {dst}: it is a folder; give a file name")
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise KQuantError(f"refusing to overwrite the input {src}: choose another output file")
    if dst.exists() and not overwrite:
        raise KQuantError(f"{dst} already exists: pass overwrite=True (--force on the command line) to replace it")
    return dst


@contextmanager
def _atomic_output(dst: Path):
    """Yield a temporary path beside ``dst``; rename it to ``dst`` only if the block completes."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, dst)
    except BaseException:  # including KeyboardInterrupt: never leave a partial file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
