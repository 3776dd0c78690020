"""Exercises of notebook 04, Q4_K, the super-block."""

import numpy as np

from kquant import reference
from kquant.exercises.core import (
    LLAMA_CPP,
    Exercise,
    Wrong,
    as_array,
    as_bytes,
    as_number,
    as_tuple,
    call,
    digest,
    random_k_block,
    same_bytes,
)
from kquant.formats import dequantize, q4_k, quantize


def _random_scale_bytes(rng) -> np.ndarray:
    return rng.integers(0, 256, 12).astype(np.uint8)


def _check_get_scale_min(fn, rng):
    fixed = [
        np.full(12, 255, np.uint8),  # every bit set: a bit lost anywhere shows
        np.array([192] * 8 + [0] * 4, np.uint8),  # only the top 2 bits of bytes 0-7: sub-blocks 4-7 are 48, 0-3 are 0
        np.array([63] * 8 + [255] * 4, np.uint8),  # no top bits: sub-blocks 4-7 are 15
    ]
    for scales in fixed + [_random_scale_bytes(rng) for _ in range(5)]:
        sc, m = q4_k.unpack_scales(scales[None, :])
        for j in range(8):
            what = f"get_scale_min_k4({j}, scales)"
            got = as_tuple(call(fn, j, scales.copy()), 2, "sc, m", what)
            got_sc, got_m = as_number(got[0], f"{what}: sc"), as_number(got[1], f"{what}: m")
            if (got_sc, got_m) == (sc[0, j], m[0, j]):
                continue
            if (got_sc, got_m) == (m[0, j], sc[0, j]):
                raise Wrong(f"{what}: scale and min are swapped: bytes 0-3 hold scales, bytes 4-7 mins")
            if j < 4 and (got_sc, got_m) == (scales[j], scales[j + 4]):
                raise Wrong(f"{what}: mask with & 63: bits 6-7 of bytes 0-7 belong to sub-blocks 4-7")
            if j >= 4 and (got_sc, got_m) == (scales[j + 4] & 15, scales[j + 4] >> 4):
                raise Wrong(
                    f"{what}: that is only the low 4 bits; the top 2 are bits 6-7 of byte {j - 4} (scale) and byte "
                    f"{j} (min)"
                )
            if j >= 4 and (got_sc, got_m) == (
                (scales[j + 4] & 15) | ((scales[j] >> 6) << 4),
                (scales[j + 4] >> 4) | ((scales[j - 4] >> 6) << 4),
            ):
                raise Wrong(
                    f"{what}: the top bits come from the wrong bytes: the scale's from byte j - 4 = {j - 4}, the min's"
                    f" from byte j = {j}"
                )
            if j >= 4 and (got_sc, got_m) == (
                (scales[j + 4] >> 4) | ((scales[j - 4] >> 6) << 4),
                (scales[j + 4] & 15) | ((scales[j] >> 6) << 4),
            ):
                raise Wrong(f"{what}: in byte j + 4 the scale is the *low* nibble and the min the high one")
            raise Wrong(f"{what} gave ({got_sc:g}, {got_m:g}); those are not the 6-bit scale and min of sub-block {j}")
    return "the right 6-bit scale and min for all 8 sub-blocks of 8 scale fields, all bits set included"


q1 = Exercise(
    "nb04",
    "q1",
    "get_scale_min_k4(j, scales)",
    _check_get_scale_min,
    hints=[
        "For j < 4 both are plain 6-bit fields: scales[j] & 63 and scales[j + 4] & 63.",
        "For j >= 4: low 4 bits in byte j + 4 (scale: low nibble, min: high nibble), top 2 bits in bits 6-7 of "
        "byte j - 4 (scale) and byte j (min).",
    ],
    solution="""
    scales = [int(b) for b in scales]
    if j < 4:
        return scales[j] & 63, scales[j + 4] & 63
    sc = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4)
    m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)
    return sc, m
    """,
    forbidden=(q4_k.unpack_scales, q4_k.unpack, q4_k.dequantize_blocks, dequantize, reference, *LLAMA_CPP),
    task="the 6-bit unpacking",
)


def _check_pack_scales(fn, rng):
    for k in range(10):
        sc, m = rng.integers(0, 64, 8).astype(np.uint8), rng.integers(0, 64, 8).astype(np.uint8)
        if k == 0:
            sc[:], m[:] = 63, 63  # every bit set: a packing that loses bits shows here
        what = f"pack_scales_k4(sc, m) (case {k + 1})"
        got = as_bytes(call(fn, sc.copy(), m.copy()), 12, what)
        want = q4_k.pack_scales(sc[None, :], m[None, :])[0].tobytes()
        if digest(got) == digest(want):
            continue
        if got[:4] == want[4:8] and got[4:8] == want[:4] and want[:4] != want[4:8]:
            raise Wrong(f"{what}: bytes 0-3 hold the scales sc[0..3], bytes 4-7 the mins m[0..3]")
        if got[:8] == bytes(np.concatenate([sc[:4], m[:4]])) and want[:8] != got[:8]:
            raise Wrong(f"{what}: bytes 0-7 also carry the top 2 bits of sc[4..7] and m[4..7], in their bits 6-7")
        if got[8:] == bytes(((sc[4:] >> 4) | ((m[4:] & 15) << 4)).astype(np.uint8)):
            raise Wrong(f"{what}: bytes 8-11 take the *low* 4 bits of sc[4..7] (low nibble) and m[4..7] (high nibble)")
        same_bytes(got, want, f"the bytes of {what}")
    return "the 12 bytes equal llama.cpp's packing for 10 sets of scales and mins, all-ones included"


q2 = Exercise(
    "nb04",
    "q2",
    "pack_scales_k4(sc, m)",
    _check_pack_scales,
    hints=[
        "Bytes 0-3: sc[0..3] in bits 0-5, plus bits 4-5 of sc[4..7] in bits 6-7. Bytes 4-7: the same with m.",
        "Bytes 8-11: (sc[4..7] & 15) | ((m[4..7] & 15) << 4). Work on np.uint8 arrays and return .tobytes().",
    ],
    solution="""
    sc, m = np.asarray(sc, dtype=np.uint8), np.asarray(m, dtype=np.uint8)
    out = np.empty(12, dtype=np.uint8)
    out[0:4] = sc[0:4] | ((sc[4:8] >> 4) << 6)
    out[4:8] = m[0:4] | ((m[4:8] >> 4) << 6)
    out[8:12] = (sc[4:8] & 15) | ((m[4:8] & 15) << 4)
    return out.tobytes()
    """,
    forbidden=(q4_k.pack_scales, q4_k.pack, quantize, reference, *LLAMA_CPP),
    task="the 12-byte packing",
)


def _check_dequantize(fn, rng):
    for k in range(6):
        block = random_k_block(rng, 144)
        what = f"dequantize_q4_k(<144 bytes>) (block {k + 1})"
        got = as_array(call(fn, block.tobytes()), (256,), what)
        want = q4_k.dequantize_blocks(block[None, :])[0]
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        f = q4_k.unpack(block[None, :])
        d, dmin = np.float32(f.d[0]), np.float32(f.dmin[0])
        plus = (f.q[0].reshape(8, 32) * (d * f.sc[0])[:, None] + (dmin * f.m[0])[:, None]).ravel()
        if np.allclose(got, plus, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the min is subtracted: y = d·sc·q − dmin·m")
        q_pairs = np.stack([block[16:] & 15, block[16:] >> 4], axis=1).ravel()
        pairs = (q_pairs.reshape(8, 32) * (d * f.sc[0])[:, None] - (dmin * f.m[0])[:, None]).ravel()
        if np.allclose(got, pairs, rtol=1e-6, atol=1e-9):
            raise Wrong(
                f"{what}: the nibbles are not neighbours: byte 32c + l holds weight 64c + l (low) and 64c + 32 + l "
                "(high)"
            )
        low6 = block[4:12] & 63
        only_low = (
            f.q[0].reshape(8, 32) * (d * np.concatenate([low6[:4], block[12:16] & 15]))[:, None]
            - (dmin * np.concatenate([low6[4:8], block[12:16] >> 4]))[:, None]
        ).ravel()
        if np.allclose(got, only_low, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: sub-blocks 4-7 lose the top 2 bits of their scale and min (bits 6-7 of bytes 4-11)")
        i = int(np.flatnonzero(~np.isclose(got, want, rtol=1e-6, atol=1e-9))[0])
        raise Wrong(
            f"{what}: weight {i} (sub-block {i // 32}) came back as {got[i]:.6g}; llama.cpp decodes it differently"
        )
    return "your decoder agrees with llama.cpp's on 6 random 144-byte blocks, all 256 weights each"


q3 = Exercise(
    "nb04",
    "q3",
    "dequantize_q4_k(block)",
    _check_dequantize,
    hints=[
        "d and dmin: np.frombuffer(block[0:4], '<f2'). Scales and mins: your get_scale_min_k4 on block[4:16], or "
        "q4_k.unpack_scales.",
        "Levels: byte 16 + 32c + l holds weight 64c + l in its low nibble and 64c + 32 + l in its high nibble; y = "
        "d·sc[j]·q − dmin·m[j], j = weight // 32.",
    ],
    solution="""
    b = np.frombuffer(block, dtype=np.uint8)
    d, dmin = np.frombuffer(b[0:4].tobytes(), dtype="<f2").astype(np.float32)
    sc, m = q4_k.unpack_scales(b[None, 4:16])
    qs = b[16:144].reshape(4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=1).reshape(8, 32)
    return (q * (d * sc[0])[:, None] - (dmin * m[0])[:, None]).reshape(256)
    """,
    forbidden=(q4_k.dequantize_blocks, q4_k.decode, q4_k.unpack, dequantize, reference, *LLAMA_CPP),
    task="the Q4_K decoder",
)


def _check_block(fn, rng):
    # Fresh random blocks have no recorded digest (kquant.reference.recorded): without llama.cpp the bytes to
    # match are kquant.quantize's, which tests/test_codecs.py proves equal to llama.cpp's on thousands of blocks.
    oracle = reference.quantize if reference.available() else quantize
    blocks = [
        ("a Gaussian block", rng.standard_normal(256) * 0.02),
        ("a heavy-tailed block", rng.standard_t(3, 256) * 0.05),
        ("an all-positive block", np.abs(rng.standard_normal(256))),
        ("a block with one zero sub-block", np.where(np.arange(256) // 32 == 3, 0.0, rng.standard_normal(256))),
        ("a block with one loud sub-block", np.where(np.arange(256) // 32 == 5, 40.0, 1.0) * rng.standard_normal(256)),
    ]
    for label, x in blocks:
        x = x.astype(np.float32)
        what = f"my_q4_k_block({label})"
        got = as_bytes(call(fn, x.copy()), 144, what)
        want = oracle(x[None, :], "Q4_K")[0]
        if digest(got) != digest(want.tobytes()):
            _diagnose_block(np.frombuffer(got, np.uint8), want, what)
            same_bytes(got, want.tobytes(), f"the bytes of {what}")
    if oracle is quantize:
        return (
            "your 144 bytes equal kquant.quantize's, which are llama.cpp's (tests/test_codecs.py), byte for byte, on 5"
            " fresh blocks (llama.cpp is not installed here to ask it directly)"
        )
    return "your 144 bytes are llama.cpp's own, byte for byte, on 5 fresh blocks"


def _diagnose_block(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Name the step whose field differs: d and dmin, the 6-bit scales and mins, or the levels."""
    g, w = q4_k.unpack(got[None, :]), q4_k.unpack(want[None, :])
    if got[0:2].tobytes() != want[0:2].tobytes() or got[2:4].tobytes() != want[2:4].tobytes():
        which = [name for name, a, b in (("d", 0, 2), ("dmin", 2, 4)) if got[a:b].tobytes() != want[a:b].tobytes()]
        raise Wrong(
            f"{what}: the super-block scale(s) {' and '.join(which)} (bytes 0-3) differ from llama.cpp's: they come"
            " from the 8 sub-block fits through quantize_scales (section 3); check the fit (section 2) first"
        )
    sub = sorted(set(np.flatnonzero(g.sc[0] != w.sc[0])) | set(np.flatnonzero(g.m[0] != w.m[0])))
    if sub:
        raise Wrong(
            f"{what}: d and dmin match, but the 6-bit scales or mins of sub-block(s) {', '.join(map(str, sub))} differ"
            " (bytes 4-15): check the fit of each sub-block (its 32 weights are a column of x.reshape(8, 32).T) and"
            " the 6-bit quantization of scales and mins (section 3) and their 12-byte packing (section 5)"
        )
    gq, wq = g.q[0], w.q[0]
    if np.array_equal(np.sort(gq.reshape(4, 64), axis=1), np.sort(wq.reshape(4, 64), axis=1)):
        raise Wrong(
            f"{what}: d, dmin, scales, mins and the levels match, but the levels sit in the wrong nibbles: byte 16 +"
            " 32c + l holds weight 64c + l in its low nibble and weight 64c + 32 + l in its high one (section 5)"
        )
    first = int(np.flatnonzero(gq != wq)[0])
    raise Wrong(
        f"{what}: d, dmin, scales and mins match, but {int(np.count_nonzero(gq != wq))} of 256 levels differ (the"
        f" first in sub-block {first // 32}): the levels must be recomputed from the *quantized* scales and mins"
        " (requantize, section 4)"
    )


q4 = Exercise(
    "nb04",
    "q4",
    "my_q4_k_block(x)",
    _check_block,
    hints=[
        "Follow sections 2-5: xt = x.reshape(8, 32).T (one sub-block per column); q4_k.subblock_fit(xt, 15, -1.0, "
        "0.1, 20).",
        "Then q4_k.quantize_scales(scales[None], mins[None]), q4_k.requantize(...), q4_k.Fields(...), "
        "q4_k.pack(...)[0].",
    ],
    solution="""
    xt = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(8, 32).T)
    scales, mins, L = q4_k.subblock_fit(xt, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
    d, dmin, sc, m = q4_k.quantize_scales(scales[None, :], mins[None, :])
    L = q4_k.requantize(xt, L, d, dmin, sc, m, nmax=15)
    fields = q4_k.Fields(d, dmin, sc, m, np.ascontiguousarray(L.T).reshape(1, 256))
    return q4_k.pack(fields)[0].tobytes()
    """,
    forbidden=(q4_k.encode, q4_k.encode_impl, quantize, reference, *LLAMA_CPP),
    task="the Q4_K encoder, step by step,",
    time_limit=20,
)
