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
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter, Keys
from gguf.quants import quant_shape_to_byte_shape

from .errors import KQuantError
from .formats import FORMATS, quantize
from .gguf_read import Model, metadata, read_model, weights
from .mixes import Choice, get_mix, plan
from .progress import progress_bar
from .summary import FileSummary, TensorRow

T = GGMLQuantizationType

# Keys llama-quantize sets itself (moved to the end) or drops.
_SET_AT_END = (Keys.General.QUANTIZATION_VERSION, Keys.General.FILE_TYPE)
_DROPPED = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)


def plan_gguf(path, mix="Q4_K_M", *, pure=False, overrides=(), output_type=None, token_embd_type=None) -> list[Choice]:
    """The format (and the reason) llama-quantize would give each tensor of a GGUF model."""
    model = read_model(path)
    return _plan(model, mix, pure, overrides, output_type, token_embd_type)


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
    progress: bool = True,
) -> FileSummary:
    """Quantize the F32 / F16 / BF16 llama GGUF ``src`` into ``dst`` with a llama.cpp mix.

    The options are llama-quantize's: ``pure`` (--pure), ``overrides`` ({regex: type},
    --tensor-type), ``output_type`` (--output-tensor-type), ``token_embd_type``
    (--token-embedding-type). ``dst`` is replaced only if ``overwrite``; ``src`` never is.
    Returns a FileSummary: per tensor its type, bytes, bits per weight, time and reason.
    """
    model = read_model(src)
    mix = get_mix(mix)
    choices = _plan(model, mix, pure, overrides, output_type, token_embd_type)
    dst = _check_destination(model.path, Path(dst), overwrite)
    source = {t.name: t for t in model.reader.tensors}

    start = time.perf_counter()
    rows = []
    try:
        with _atomic_output(dst) as tmp:
            writer = GGUFWriter(tmp, model.arch)
            try:
                _copy_metadata(model, writer, mix.file_type)
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
                        data = _encode(source[c.name], c)
                        writer.write_tensor_data(data)  # pads to 32 bytes after the tensor
                        rows.append(TensorRow(c.name, c.shape, c.type, data.nbytes, c.reason, time.perf_counter() - t0))
                        bar.update(math.prod(c.shape))
            finally:
                writer.close()
    except OSError as e:
        raise KQuantError(f"could not write {dst}: {e.strerror or e}; nothing was written") from e
    return FileSummary(dst, rows, seconds=time.perf_counter() - start, mix=mix.name)


def _plan(model: Model, mix, pure, overrides, output_type, token_embd_type) -> list[Choice]:
    choices = plan(
        model.tensors, model.params, mix, pure=pure, overrides=overrides, output_type=output_type, token_embd_type=token_embd_type
    )
    for c in choices:
        if c.type != c.source and c.type not in FORMATS and c.type not in (T.F32, T.F16):
            raise KQuantError(f"{c.name} would become {c.type.name}, which kquant cannot write; choose one of "
                              f"{', '.join(f.name for f in FORMATS)}, F16 or F32")
        block = GGML_QUANT_SIZES[c.type][0]
        if c.shape[-1] % block:
            # Only an explicit output/token-embedding type skips llama.cpp's shape fallback.
            raise KQuantError(f"{c.name} has rows of {c.shape[-1]} weights, not a multiple of {c.type.name}'s "
                              f"block of {block}: choose another type for it")
    return choices


def _encode(t, c: Choice) -> np.ndarray:
    """The bytes of one output tensor: a copy, a float conversion, or kquant.quantize."""
    x = weights(t)  # float32; also refuses NaN and Inf, as llama.cpp does for every tensor it reads
    if c.type == c.source:
        return np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
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
        return quantize(x, c.type).reshape(-1)
    except KQuantError as e:
        raise KQuantError(f"{c.name} as {c.type.name}: {e}") from None


def _copy_metadata(model: Model, writer: GGUFWriter, file_type: int) -> None:
    """Every source key in its order, then quantization_version and file_type, as llama.cpp does."""
    # GGUFWriter adds general.architecture first on its own; take it out so the key lands
    # where the source had it (kv_data is the writer's public table of pending keys).
    del writer.kv_data[0][Keys.General.ARCHITECTURE]
    for key, value, vtype, sub_type in metadata(model.reader):
        if key not in _SET_AT_END and key not in _DROPPED:
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_file_type(int(file_type))


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
