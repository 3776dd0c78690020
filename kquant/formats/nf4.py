"""NF4, QLoRA's 4-bit NormalFloat: 64 weights share one absmax; each weight is one of 16 fixed levels.

    y = NF4_LEVELS[q] * absmax        q in 0..15,  absmax = max |x| over the block

The 16 levels are quantiles of a standard normal, scaled to [-1, 1], with an exact 0 and one more
level above zero than below (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs",
arXiv 2305.14314, section 3). A weight goes to the level whose interval holds ``x / absmax``; the
interval ends are bitsandbytes' own: the 15 constants of ``dQuantizeNF4``'s decision tree
(csrc/kernels.cu), each the float32 midpoint of two neighbouring levels, compared with ``x > t``
so that a weight exactly on a threshold takes the LOWER level. A nearest-level search computes
``|x - level|`` in float32 and can round a tie either way: ``nearest_level_codes`` shows it.

Double quantization (QLoRA's ``compress_statistics=True``): the float32 absmaxes are themselves
quantized to 8 bits. Their mean ``offset`` is subtracted, and each run of 256 is coded with
bitsandbytes' dynamic map (``create_dynamic_map``, 256 signed values in [-1, 1]) against its own
float32 absmax: 8 + 32/256 bits per 64 weights instead of 32, so 4.127 bits per weight, not 4.5.

This module mirrors bitsandbytes 0.50.2 on CPU byte for byte: ``functional.quantize_4bit`` /
``dequantize_4bit`` (the torch kernels in backends/default/ops.py), ``quantize_blockwise`` for the
absmaxes (``quantize_cpu_impl`` in csrc/cpu_ops.cpp: a 65536-entry lookup table), and the float32
``torch.mean`` of the absmaxes (ATen's cascade sum, see ``torch_mean``). NF4 is not a ggml type:
llama.cpp cannot run it, so nothing here is registered in ``kquant.formats``' type tables; to run
a model with llama.cpp, dequantize to F16.

Packed layout, bitsandbytes' nibble order (the weights in flat, row-major order)::

    byte i:   bit 7 .. 4   bit 3 .. 0
              q[2i]        q[2i + 1]          (an odd count pads a 0.0 weight: low nibble 0b0111)

    absmax:   float32, one per block of ``blocksize`` (the last block may be partial)
    or, double-quantized:
              uint8 code per block   -> DYNAMIC_MAP[code] * absmax2[block // 256] + offset
              absmax2: float32, one per 256 blocks;  offset: one float32

Notebook 14 (QLoRA) uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kquant.errors import KQuantError
from kquant.formats.cops import c_semantics

f32 = np.float32

# bitsandbytes' get_4bit_type("nf4"): the table it ships (generated once by
# create_normal_map(offset=0.9677083), see normal_levels), ascending, code q -> NF4_LEVELS[q].
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=f32,
)

# dQuantizeNF4's tree (csrc/kernels.cu), its 15 constants in ascending order: code = number of
# thresholds t with x > t. Each equals the float32 midpoint (L[i] + L[i+1]) / 2 that the CPU
# kernel bucketizes with (tests check both), so CUDA and CPU agree on every float.
NF4_THRESHOLDS = np.array(
    [
        -0.8480964004993439,
        -0.6106329262256622,
        -0.4599952697753906,
        -0.33967943489551544,
        -0.23460740596055984,
        -0.13791173323988914,
        -0.045525018125772476,
        0.03979014977812767,
        0.1202552504837513,
        0.2035212516784668,
        0.2920137718319893,
        0.3893125355243683,
        0.5016634166240692,
        0.6427869200706482,
        0.8614784181118011,
    ],
    dtype=f32,
)

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what quantize_4bit accepts
ABSMAX_BLOCKSIZE = 256  # quantize_4bit's blocksize for the absmaxes when compress_statistics=True
LUT_SIZE = 65536  # kLUTSize: quantize_cpu_impl's table from [-1, 1] to the nearest code
TINY = f32(1e-38)  # absmax.clamp(min=1e-38) before dividing: an all-zero block codes as 0.0 (stored 0,
# except a partial last block's, stored clamped: a quirk of quantize_4bit's kernel, reproduced)


def _linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace for a float32 tensor: the first half counts up from ``start``, the second
    down from ``end``, by a float32 ``step``; each value ``start + step * i`` rounded ONCE (torch's
    kernel compiles to a fused multiply-add: two roundings differ at i = 3 of linspace(0.1, 1, 9)).
    float64 holds ``start + step * i`` exactly for these small i, so it is formed there and rounded."""
    a, b = f32(start), f32(end)
    step = float((b - a) / f32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    up = float(a) + step * i
    down = float(b) - step * (steps - 1 - i)
    return np.where(i < steps // 2, up, down).astype(f32)


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """The standard normal's inverse CDF in float64 (scipy's norm.ppf; the stdlib's, no scipy)."""
    from statistics import NormalDist

    return np.array([NormalDist().inv_cdf(float(v)) for v in p], dtype=np.float64)


def normal_levels(offset: float = 0.9677083, use_extra_value: bool = True) -> np.ndarray:
    """bitsandbytes' ``create_normal_map``: the 16 NF4 levels from normal quantiles, float32.

    8 positive quantiles between ``offset`` and 0.5 (7 with ``use_extra_value=False``), 7 negative
    ones, and 0, each rounded to float32 and divided by the largest. ``offset`` is the outermost
    quantile: 0.9677083 puts the top level at norm.ppf(0.9677083) = 1.848 standard deviations before
    scaling to 1. bitsandbytes pads the list to 256 with zeros (an 8-bit table); here the distinct levels.
    """
    if not 0.5 < offset < 1:
        raise KQuantError(f"offset {offset} is not a quantile above the median: pass 0.5 < offset < 1")
    pos, neg = (9, 8) if use_extra_value else (8, 8)
    v1 = _norm_ppf(_linspace_f32(offset, 0.5, pos)[:-1])
    v3 = -_norm_ppf(_linspace_f32(offset, 0.5, neg)[:-1])
    values = np.sort(np.concatenate([v1, [0.0], v3]).astype(f32))  # bitsandbytes' padding zeros: one level
    return (values / values.max()).astype(f32)


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """bitsandbytes' ``create_dynamic_map``: 256 ascending float32 values in [-1, 1] (Dettmers 2016).

    For exponent e = 0..6 the decade 10^(e-6) holds 2^e linearly spaced means in [0.1, 1),
    both signs; plus 0 and 1. Codes the absmaxes under double quantization.
    """
    non_sign_bits = total_bits - 1
    data: list[float] = []
    for i in range(max_exponent_bits):
        items = (
            2 ** (i + non_sign_bits - max_exponent_bits) + 1
            if signed
            else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        )
        bounds = _linspace_f32(0.1, 1, items)
        means = (bounds[:-1] + bounds[1:]) / f32(2)
        scale = f32(10 ** (-(max_exponent_bits - 1) + i))  # a Python float times a float32 tensor: float32
        data += (scale * means).tolist()
        if signed:
            data += (-scale * means).tolist()
    data += [0.0, 1.0]
    if len(data) != 2**total_bits:
        raise KQuantError(f"create_dynamic_map made {len(data)} values, not {2**total_bits}: use the defaults")
    return np.sort(np.array(data, dtype=f32))


DYNAMIC_MAP = create_dynamic_map()


@dataclass(frozen=True, eq=False)  # arrays inside: compare the fields, e.g. np.array_equal(a.packed, b.packed)
class NF4Tensor:
    """A tensor in NF4, as bitsandbytes' ``quantize_4bit(..., quant_type="nf4")`` leaves it.

    ``packed``: uint8, two codes per byte (see the module docstring). ``absmax``: float32 per
    block, or with double quantization uint8 codes into ``DYNAMIC_MAP``, with ``absmax2`` (float32
    per 256 blocks) and ``offset`` (float32) as QuantState's ``state2.absmax`` and ``offset``.
    """

    packed: np.ndarray
    absmax: np.ndarray
    shape: tuple[int, ...]
    blocksize: int = 64
    offset: np.float32 | None = None
    absmax2: np.ndarray | None = None

    @property
    def double_quant(self) -> bool:
        return self.absmax2 is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def codes(self) -> np.ndarray:
        """The 4-bit codes, one per weight, flat: the packed nibbles undone (high nibble first)."""
        q = np.empty(2 * self.packed.size, dtype=np.uint8)
        q[0::2] = self.packed >> 4
        q[1::2] = self.packed & 0x0F
        return q[: self.size]

    def scales(self) -> np.ndarray:
        """The float32 absmax of every block, double quantization undone as dequantize_4bit does."""
        if not self.double_quant:
            return self.absmax
        per_block = np.repeat(self.absmax2, ABSMAX_BLOCKSIZE)[: self.absmax.size]
        return DYNAMIC_MAP[self.absmax] * per_block + self.offset  # two float32 roundings, as in C and torch


def _check(x, blocksize: int) -> np.ndarray:
    if blocksize not in BLOCKSIZES:
        raise KQuantError(f"blocksize {blocksize} is not one bitsandbytes accepts: use one of {BLOCKSIZES}")
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float16):  # bitsandbytes takes 16/32-bit floats only
        raise KQuantError(f"NF4 quantizes float32 or float16, not {a.dtype}: pass x.astype(np.float32)")
    if a.size == 0:
        raise KQuantError("nothing to quantize: pass an array with at least one weight")
    if not np.isfinite(a).all():
        raise KQuantError("x holds NaN or inf, which NF4 has no code for: replace them before quantizing")
    return a.astype(f32).reshape(-1)


def block_absmax(flat: np.ndarray, blocksize: int) -> np.ndarray:
    """max |x| per block of ``blocksize`` flat weights, the last block partial."""
    n = flat.size
    full = n - n % blocksize
    am = np.abs(flat[:full]).reshape(-1, blocksize).max(axis=1)
    if full < n:
        am = np.append(am, np.abs(flat[full:]).max())
    return am.astype(f32)


@c_semantics
def scaled_weights(flat: np.ndarray, absmax: np.ndarray, blocksize: int) -> np.ndarray:
    """x / absmax in [-1, 1] exactly as quantize_4bit's kernel rounds it.

    Full blocks multiply by the float32 reciprocal ``1.0 / absmax``; the partial last block
    divides (``A_flat[full:] / am``): the two can differ in the last bit, so both are kept.
    """
    n = flat.size
    full = n - n % blocksize
    am = np.maximum(absmax, TINY)
    out = np.empty(n, dtype=f32)
    inv = f32(1) / am[: full // blocksize]
    out[:full] = (flat[:full].reshape(-1, blocksize) * inv[:, None]).reshape(-1)
    if full < n:
        out[full:] = flat[full:] / am[-1]
    return np.clip(out, f32(-1), f32(1))


def encode_levels(s: np.ndarray) -> np.ndarray:
    """Scaled weights in [-1, 1] -> codes 0..15: dQuantizeNF4's tree, x > t takes the upper side.

    ``searchsorted(..., side="left")`` counts the thresholds strictly below x, which is what the
    tree's comparisons and torch.bucketize(right=False) compute.
    """
    return np.searchsorted(NF4_THRESHOLDS, s, side="left").astype(np.uint8)


def nearest_level_codes(s: np.ndarray) -> np.ndarray:
    """The naive encoder, for comparison only: argmin of float32 |s - level| (first on a tie).

    bitsandbytes' CPU path did this before 0.50; on a weight exactly on a threshold the float32
    distances need not tie, and it can pick the upper level where the tree picks the lower.
    """
    d = np.abs(np.asarray(s, dtype=f32)[..., None] - NF4_LEVELS)
    return d.argmin(axis=-1).astype(np.uint8)


def pack(codes: np.ndarray) -> np.ndarray:
    """Codes (flat) -> bytes, first code in the high nibble; an odd count pads code 7 (0.0)."""
    q = np.asarray(codes, dtype=np.uint8)
    if q.size % 2:
        q = np.append(q, np.uint8(encode_levels(np.zeros(1, f32))[0]))
    return (q[0::2] << 4) | q[1::2]


def _ceil_log2(x: int) -> int:
    return 1 if x <= 2 else (x - 1).bit_length()


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """ATen's multi_row_sum: (size, ...) float32 summed along axis 0 in a 4-level cascade.

    Runs of ``level_step`` rows are summed left to right into level 0; a full run moves up a
    level, and every level_step runs of a level move up again, so only sums of similar size meet.
    """
    size = rows.shape[0]
    level_power = max(4, _ceil_log2(size) // 4)
    step = 1 << level_power
    mask = step - 1
    acc = np.zeros((4, *rows.shape[1:]), dtype=f32)
    i = 0
    while i + step <= size:
        acc[0] = np.add.reduce(rows[i : i + step], axis=0)  # left to right; level 0 was 0
        i += step
        for j in range(1, 4):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (mask << (j * level_power)):
                break
    for r in rows[i:]:
        acc[0] += r
    for j in range(1, 4):
        acc[0] += acc[j]
    return acc[0]


def _row_sum(items: np.ndarray) -> np.ndarray:
    """ATen's row_sum: four interleaved partial sums (ilp_factor 4), the leftovers, then combined."""
    size_ilp = items.shape[0] // 4
    partial = _multi_row_sum(items[: 4 * size_ilp].reshape(size_ilp, 4, *items.shape[1:]))
    for r in items[4 * size_ilp :]:
        partial[0] += r
    for k in range(1, 4):
        partial[0] += partial[k]
    return partial[0]


GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: shorter reductions run on one thread


def _cascade_sum(a: np.ndarray, lanes: int) -> np.float32:
    """ATen's cascade_sum over one contiguous run: lanes, then the tail, then the lanes in order."""
    if a.size < lanes:
        return f32(_row_sum(a[:, None])[0])
    n_vec = a.size // lanes
    lane_sums = _row_sum(a[: n_vec * lanes].reshape(n_vec, lanes))
    total = f32(0)
    for v in a[n_vec * lanes :]:
        total = f32(total + v)
    for v in lane_sums:
        total = f32(total + v)
    return total


def torch_sum(a: np.ndarray, lanes: int = 8, threads: int = 1) -> np.float32:
    """torch.sum of a 1-D contiguous float32 tensor on CPU, bit for bit: ATen's cascade_sum.

    Runs of ``lanes`` floats are summed lane by lane (``lanes`` = Vectorized<float>::size(): 8 is
    what torch 2.13.0 used on this project's x86 CPU, an AVX-512 one), the tail left to right, then
    the lanes in order. From GRAIN_SIZE floats on, torch's ``threads`` (torch.get_num_threads())
    each sum an equal contiguous share (parallel_for's chunks), and the shares are added in order.
    CUDA sums in yet another order: a GPU's offset may differ in its last bit (it is stored).
    """
    a = np.ascontiguousarray(a, dtype=f32).reshape(-1)
    n = a.size
    parts = 1 if n < GRAIN_SIZE else max(1, min(threads, -(-n // GRAIN_SIZE)))
    chunk = -(-n // parts)
    total = f32(0)
    for start in range(0, n, chunk):
        total = f32(total + _cascade_sum(a[start : start + chunk], lanes))
    return total


def torch_mean(a: np.ndarray, lanes: int = 8, threads: int = 1) -> np.float32:
    """torch.mean of a float32 tensor on CPU: the cascade sum, then one float32 division."""
    return f32(torch_sum(a, lanes, threads) / f32(a.size))


def quantize_lut(code: np.ndarray) -> np.ndarray:
    """quantize_cpu_impl's build_quantize_lut: for each of 65536 points of [-1, 1], the nearest code.

    Point i is -1 + 2i/65535; it takes the first code whose float32 midpoint with the next is not
    below it, a search bitsandbytes does once per codebook instead of once per value.
    """
    mid = f32(0.5) * (code[:-1] + code[1:])
    points = f32(-1) + (f32(2) * np.arange(LUT_SIZE, dtype=f32)) / f32(LUT_SIZE - 1)
    return np.searchsorted(mid, points, side="left").astype(np.uint8)


_DYNAMIC_LUT = quantize_lut(DYNAMIC_MAP)


def lut_index(v: np.ndarray, fused: bool = False) -> np.ndarray:
    """norm_to_lut_index: v in [-1, 1] -> 0..65535, ``(v + 1) * 0.5`` exact, then ``* 65535 + 0.5``
    rounded twice (C as written) or, ``fused``, once (an FMA: float64 holds the product exactly)."""
    t = (v + f32(1)) * f32(0.5)
    if fused:
        return (t.astype(np.float64) * (LUT_SIZE - 1) + 0.5).astype(f32).astype(np.uint16)
    return (t * f32(LUT_SIZE - 1) + f32(0.5)).astype(np.uint16)


@c_semantics
def quantize_blockwise(a: np.ndarray, blocksize: int = ABSMAX_BLOCKSIZE) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' 8-bit ``quantize_blockwise`` on CPU with the dynamic map -> (uint8 codes, absmax).

    Per block: absmax = max |a|, then the LUT index ``(uint16)((v / absmax + 1) * 0.5f * 65535 + 0.5f)``
    in float32 (whether a compiler fuses the last multiply-add never changes the index: a test checks
    it). An all-zero block codes 0 (-1.0 times an absmax of 0).
    """
    a = np.asarray(a, dtype=f32).reshape(-1)
    n = a.size
    nb = -(-n // blocksize)
    padded = np.zeros(nb * blocksize, dtype=f32)
    padded[:n] = a
    absmax = np.abs(padded).reshape(nb, blocksize).max(axis=1)  # the padding zeros never win
    inv = f32(1) / absmax
    v = np.clip(padded.reshape(nb, blocksize) * inv[:, None], f32(-1), f32(1))
    idx = lut_index(v)
    q = np.where((absmax == 0)[:, None], np.uint8(0), _DYNAMIC_LUT[idx]).reshape(-1)[:n]
    return q.astype(np.uint8), absmax.astype(f32)


def quantize_nf4(x, blocksize: int = 64, double_quant: bool = True, *, lanes: int = 8, threads: int = 1) -> NF4Tensor:
    """x (any shape, float32 or float16) -> NF4Tensor, as bitsandbytes' quantize_4bit on CPU.

    ``double_quant`` is compress_statistics. ``lanes`` and ``threads`` matter only then, and only
    to the last bit of the absmaxes' mean ``offset`` (torch sums in an order they set, see
    ``torch_sum``; ``threads`` from 32768 blocks on, i.e. tensors of 2M weights and more).
    """
    flat = _check(x, blocksize)
    absmax = block_absmax(flat, blocksize)
    if flat.size % blocksize:  # bitsandbytes stores the partial block's absmax clamped, the others not
        absmax[-1] = max(absmax[-1], TINY)
    packed = pack(encode_levels(scaled_weights(flat, absmax, blocksize)))
    shape = tuple(int(d) for d in np.shape(x))
    if not double_quant:
        return NF4Tensor(packed, absmax, shape, blocksize)
    offset = torch_mean(absmax, lanes, threads)
    q, absmax2 = quantize_blockwise(absmax - offset, ABSMAX_BLOCKSIZE)
    return NF4Tensor(packed, q, shape, blocksize, offset, absmax2)


def dequantize_nf4(t: NF4Tensor) -> np.ndarray:
    """NF4Tensor -> float32 array of its shape: NF4_LEVELS[q] * absmax, the blocks flat and in order."""
    scale = np.repeat(t.scales(), t.blocksize)[: t.size]
    return (NF4_LEVELS[t.codes] * scale).astype(f32).reshape(t.shape)


def bits_per_weight(t: NF4Tensor) -> float:
    """Stored bits per weight: codes, absmaxes and, double-quantized, absmax2 and the offset.

    The two tables (16 and 256 float32) are constants of the format and not counted; nor is
    QuantState's bookkeeping (shape, dtype).
    """
    bits = 8 * t.packed.nbytes + 8 * t.absmax.nbytes
    if t.double_quant:
        bits += 8 * t.absmax2.nbytes + 32
    return bits / t.size
