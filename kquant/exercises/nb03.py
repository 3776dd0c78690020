"""Exercises of notebook 03, Blocks."""

import numpy as np

from kquant import reference
from kquant.exercises.core import LLAMA_CPP, Exercise, Wrong, as_array, as_bytes, call, same_bytes
from kquant.formats import dequantize, q4_0, quantize
from kquant.lessons import scale_zero_point


def _check_blockwise(fn, rng):
    for bits, block_size in [(4, 32), (3, 16), (8, 64), (2, 8)]:
        w = rng.standard_t(4, (64, 128)) * 0.02
        what = f"blockwise_absmax(w, {bits}, {block_size})"
        got = as_array(call(fn, w, bits, block_size), w.shape, what)
        want = scale_zero_point.fake_quantize(w, bits, "absmax", block_size)
        if np.allclose(got, want, rtol=1e-9, atol=1e-12):
            continue
        if np.allclose(got, scale_zero_point.fake_quantize(w, bits, "absmax", w.shape[1]), rtol=1e-9, atol=1e-12):
            raise Wrong(
                f"{what}: this uses one scale per row; a row holds {w.shape[1] // block_size} blocks of {block_size}"
                " weights, each with its own scale"
            )
        if np.allclose(got, scale_zero_point.fake_quantize(w, bits, "absmax"), rtol=1e-9, atol=1e-12):
            raise Wrong(
                f"{what}: this uses one scale for the whole tensor; give each run of {block_size} weights along a "
                "row its own"
            )
        qmax = 2 ** (bits - 1) - 1
        blocks = w.reshape(-1, block_size)
        levels = np.rint(blocks / (np.abs(blocks).max(axis=1, keepdims=True) / qmax)).reshape(w.shape)
        if np.allclose(got, levels):
            raise Wrong(f"{what}: these are the integer levels; return the dequantized weights ŵ = scale · q")
        if _blocks_down_columns(got, w, bits, block_size):
            raise Wrong(
                f"{what}: the blocks run down the columns; blocks are runs of weights along each row: "
                "w.reshape(-1, block_size)"
            )
        close = np.isclose(got, want, rtol=1e-9, atol=1e-12)
        i = int(np.flatnonzero(~close.ravel())[0])
        raise Wrong(
            f"{what}: weight {np.unravel_index(i, w.shape)} = {w.ravel()[i]:.5g} came back as "
            f"{got.ravel()[i]:.5g}, not the nearest level of its block"
        )
    return "each block's own absmax scale, right for 4 bit depths and block sizes"


def _blocks_down_columns(got, w, bits, block_size) -> bool:
    if w.shape[0] % block_size:
        return False
    t = scale_zero_point.fake_quantize(np.ascontiguousarray(w.T), bits, "absmax", block_size).T
    return np.allclose(got, t)


q1 = Exercise(
    "nb03",
    "q1",
    "blockwise_absmax(w, bits, block_size)",
    _check_blockwise,
    hints=[
        "w.reshape(-1, block_size) puts one block per row; then every max is taken along axis=1 with keepdims=True.",
        "scale = max|block| / (2**(bits-1) - 1) per block; ŵ = scale · round(w / scale); reshape back to w.shape.",
    ],
    solution="""
    qmax = 2 ** (bits - 1) - 1
    blocks = np.asarray(w, dtype=np.float64).reshape(-1, block_size)
    scale = np.abs(blocks).max(axis=1, keepdims=True) / qmax
    return (np.rint(blocks / scale) * scale).reshape(np.shape(w))
    """,
    forbidden=(scale_zero_point.fake_quantize, scale_zero_point.absmax_quantize, scale_zero_point.zero_point_quantize),
    task="blockwise absmax quantization",
)


_FLOAT64_TRAP = np.array(  # levels computed in float64 differ from ggml's at 8 weights
    [
        1.2677323818206787,
        -0.713099479675293,
        -1.188499093055725,
        1.188499093055725,
        0.8715659976005554,
        -0.8715659976005554,
        -1.188499093055725,
        0.713099479675293,
        0.5546329021453857,
        -0.8715659976005554,
        0.23769982159137726,
        0.5546329021453857,
        -0.8715659976005554,
        0.5546329021453857,
        0.23769982159137726,
        -0.3961663842201233,
        -0.07923327386379242,
        1.0300325155258179,
        1.188499093055725,
        -0.8715659976005554,
        -0.713099479675293,
        -0.8715659976005554,
        -0.07923327386379242,
        -0.8715659976005554,
        0.3961663842201233,
        0.07923327386379242,
        -0.713099479675293,
        1.0300325155258179,
        0.5546329021453857,
        1.0300325155258179,
        0.07923327386379242,
        -1.188499093055725,
    ],
    dtype=np.float32,
)
_DIVIDE_TRAP = np.array(  # x / d differs from x * (1/d) in float32 at 4 weights
    [
        1.1386046409606934,
        -0.6404651403427124,
        0.6404651403427124,
        -0.6404651403427124,
        0.49813953042030334,
        0.07116279006004333,
        0.49813953042030334,
        0.6404651403427124,
        0.7827906608581543,
        -0.07116279006004333,
        -0.49813953042030334,
        0.07116279006004333,
        0.07116279006004333,
        0.6404651403427124,
        -1.0674418210983276,
        0.6404651403427124,
        -0.07116279006004333,
        -1.0674418210983276,
        -0.6404651403427124,
        -0.3558139503002167,
        -0.49813953042030334,
        0.07116279006004333,
        0.3558139503002167,
        0.3558139503002167,
        0.3558139503002167,
        -0.3558139503002167,
        1.0674418210983276,
        -0.6404651403427124,
        -0.21348837018013,
        0.49813953042030334,
        0.21348837018013,
        0.21348837018013,
    ],
    dtype=np.float32,
)


def _q4_0_blocks(rng):
    yield "a Gaussian block", (rng.standard_normal(32) * 0.02).astype(np.float32)
    yield "a block whose largest weight is positive", np.abs(rng.standard_normal(32)).astype(np.float32)
    ties = np.concatenate([[-8.0], rng.integers(-7, 7, 31) + 0.5]).astype(
        np.float32
    )  # d = 1: x/d + 8.5 hits .0 exactly
    yield "a block of exact ties", ties
    yield "an all-zero block", np.zeros(32, np.float32)
    # Found by search: blocks where the textbook formula, computed another way, gives other levels.
    yield "a block where float64 arithmetic gives other levels", _FLOAT64_TRAP
    yield "a block where x / d and x · (1/d) differ in float32", _DIVIDE_TRAP
    for k in range(6):
        yield f"random block {k + 1}", (rng.standard_t(3, 32) * rng.uniform(1e-3, 10)).astype(np.float32)


def _check_q4_0_levels(fn, rng):
    n = 0
    for label, x in _q4_0_blocks(rng):
        what = f"q4_0_levels({label})"
        got = as_array(call(fn, x), (32,), what)
        want = q4_0.encode(x[None, :]).q[0]
        if np.array_equal(got, want):
            n += 1
            continue
        if got.min() < 0 or got.max() > 15:
            raise Wrong(
                f"{what}: levels must lie in 0..15 (the stored q, before subtracting 8), got "
                f"{got.min():g}..{got.max():g}"
            )
        pos_d = np.abs(x).max() / np.float32(8)
        if pos_d and np.array_equal(got, np.minimum(15, np.trunc(x / pos_d + np.float32(8.5)))):
            raise Wrong(
                f"{what}: d must be the *signed* largest-magnitude weight divided by -8, so that weight lands on "
                "level 0"
            )
        if np.array_equal(got, np.clip(np.rint(x * (np.float32(1) / (_signed_max(x) / np.float32(-8)))) + 8, 0, 15)):
            raise Wrong(f"{what}: ties differ: ggml computes trunc(x/d + 8.5), which rounds halves *up*, not to even")
        x64 = x.astype(np.float64)
        d64 = _signed_max(x64) / -8
        if d64 and np.array_equal(got, np.minimum(15, np.trunc(x64 / d64 + 8.5))):
            raise Wrong(
                f"{what}: these are the levels float64 arithmetic gives; ggml computes in float32, and near a "
                "rounding boundary the two differ"
            )
        d32 = _signed_max(x) / np.float32(-8)
        if d32 and np.array_equal(got, np.minimum(15, np.trunc(x / d32 + np.float32(8.5)))):
            raise Wrong(
                f"{what}: ggml does not divide by d: it computes id = 1/d once and multiplies, x * id, and in "
                "float32 the two can differ"
            )
        if np.abs(got - want).max() == 1 and np.count_nonzero(got != want) <= 2:
            raise Wrong(
                f"{what}: {np.count_nonzero(got != want)} level(s) off by one: compute every step in float32, as ggml"
                " does"
            )
        i = int(np.flatnonzero(got != want)[0])
        raise Wrong(f"{what}: weight {i} ({x[i]:.5g}) got level {got[i]:g}; ggml stores a different one")
    return (
        f"the same 32 levels as llama.cpp's Q4_0 on {n} blocks: exact ties, an all-zero block and two blocks where"
        " float64 or division would differ included"
    )


def _signed_max(x):
    return x[np.argmax(np.abs(x))]


q2 = Exercise(
    "nb03",
    "q2",
    "q4_0_levels(x)",
    _check_q4_0_levels,
    hints=[
        "max = x[np.argmax(np.abs(x))] keeps its sign; d = max / -8; id = 1/d (0 if d is 0).",
        "q = min(15, trunc(x * id + 8.5)), all in float32: np.float32(8.5), np.trunc, np.minimum.",
    ],
    solution="""
    x = np.asarray(x, dtype=np.float32)
    d = x[np.argmax(np.abs(x))] / np.float32(-8)
    inv = np.float32(1) / d if d != 0 else np.float32(0)
    return np.minimum(15, np.trunc(x * inv + np.float32(8.5))).astype(np.uint8)
    """,
    forbidden=(q4_0.encode, q4_0.encode_impl, quantize, reference, *LLAMA_CPP),
    task="Q4_0's levels",
)


def _check_pack(fn, rng):
    for k in range(8):
        d = np.float16(rng.uniform(-2, 2) * 10.0 ** rng.integers(-4, 1))
        q = rng.integers(0, 16, 32).astype(np.uint8)
        what = f"pack_q4_0(d, q) (block {k + 1})"
        got = as_bytes(call(fn, d, q), 18, what)
        want = q4_0.pack(q4_0.Fields(np.array([d]), q[None, :]))[0].tobytes()
        if got[:2] == want[1::-1] and got[:2] != want[:2]:
            raise Wrong(f"{what}: the fp16 scale is stored little-endian: low byte first")
        if got[2:] == bytes((q[0::2] | (q[1::2] << 4)).astype(np.uint8)) and got[2:] != want[2:]:
            raise Wrong(f"{what}: nibbles pair weights j and j+16, not neighbours: byte j = q[j] | q[j+16] << 4")
        if got[2:] == bytes((q[16:] | (q[:16] << 4)).astype(np.uint8)) and got[2:] != want[2:]:
            raise Wrong(
                f"{what}: the halves are swapped: weight j goes in the *low* nibble, weight j+16 in the high one"
            )
        same_bytes(got, want, f"the bytes of {what}")
    return "the 18 bytes equal llama.cpp's layout for 8 random blocks"


q3 = Exercise(
    "nb03",
    "q3",
    "pack_q4_0(d, q)",
    _check_pack,
    hints=[
        "Bytes 0-1: np.float16(d) as little-endian bytes, np.array([d], '<f2').tobytes().",
        "Bytes 2-17: byte j = q[j] | (q[j+16] << 4): weight j in the low nibble, j+16 in the high one.",
    ],
    solution="""
    q = np.asarray(q, dtype=np.uint8)
    nibbles = q[:16] | (q[16:] << 4)
    return np.array([d], dtype="<f2").tobytes() + nibbles.astype(np.uint8).tobytes()
    """,
    forbidden=(q4_0.pack, q4_0.pack_nibbles, quantize, reference, *LLAMA_CPP),
    task="the Q4_0 packing",
)


def _check_dequantize(fn, rng):
    for k in range(8):
        d = np.float16(rng.uniform(-1, 1) * 10.0 ** rng.integers(-3, 1))
        q = rng.integers(0, 16, 32).astype(np.uint8)
        block = q4_0.pack(q4_0.Fields(np.array([d]), q[None, :]))[0]
        what = f"dequantize_q4_0(<18 bytes>) (block {k + 1})"
        got = as_array(call(fn, block.tobytes()), (32,), what)
        want = q4_0.decode(q4_0.unpack(block[None, :]))[0]
        if np.array_equal(got.astype(np.float32), want):
            continue
        q16 = q4_0.unpack(block[None, :]).q[0].astype(np.float16)
        if not np.array_equal(got.astype(np.float32), want) and np.array_equal(
            got.astype(np.float32), ((q16 - np.float16(8)) * np.float16(d)).astype(np.float32)
        ):
            raise Wrong(f"{what}: that multiplies in float16; ggml turns d into float32 first and computes in float32")
        if np.allclose(got, -want):
            raise Wrong(f"{what}: the sign is flipped: a weight is (q - 8) · d")
        if np.allclose(got, q4_0.unpack(block[None, :]).q[0] * np.float32(d)):
            raise Wrong(f"{what}: subtract 8 from every level first: a weight is (q - 8) · d")
        if np.allclose(got, (np.concatenate([block[2:] >> 4, block[2:] & 15]).astype(np.float32) - 8) * np.float32(d)):
            raise Wrong(f"{what}: low nibbles are weights 0-15, high nibbles weights 16-31")
        i = int(np.flatnonzero(got.astype(np.float32) != want)[0])
        raise Wrong(f"{what}: weight {i} came back as {got[i]:.6g}; llama.cpp decodes it differently")
    return "your decoder gives llama.cpp's 32 float32 weights, bit for bit, on 8 random blocks"


q4 = Exercise(
    "nb03",
    "q4",
    "dequantize_q4_0(block)",
    _check_dequantize,
    hints=[
        "np.frombuffer(block[:2], '<f2')[0] is d. np.frombuffer(block[2:], np.uint8) are the 16 nibble bytes.",
        "Levels: low nibbles (b & 15) are weights 0-15, high nibbles (b >> 4) weights 16-31; each weight is (q - "
        "8) · d in float32.",
    ],
    solution="""
    d = np.frombuffer(block[:2], dtype="<f2")[0].astype(np.float32)
    b = np.frombuffer(block[2:18], dtype=np.uint8)
    q = np.concatenate([b & 15, b >> 4]).astype(np.float32)
    return (q - 8) * d
    """,
    forbidden=(
        q4_0.decode,
        q4_0.unpack,
        q4_0.unpack_nibbles,
        q4_0.dequantize_blocks,
        dequantize,
        reference,
        *LLAMA_CPP,
    ),
    task="the Q4_0 decoder",
)
