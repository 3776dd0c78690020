"""Exercises of notebook 05, the K family."""

import numpy as np

from kquant import reference
from kquant.exercises.core import LLAMA_CPP, Exercise, Wrong, as_array, as_number, as_text, call, random_k_block
from kquant.formats import dequantize, get_format, q5_k, quantize
from kquant.lessons import kfamily, metrics


def _check_block_bytes(fn, rng):
    cases = [
        (lay.level_bits, lay.group, lay.scale_bits + lay.min_bits, lay.n_fp16, lay.name)
        for lay in kfamily.LAYOUTS.values()
    ]
    for _ in range(4):  # made-up layouts too, so a table of the five answers does not pass
        cases.append(
            (
                int(rng.integers(1, 9)),
                int(rng.choice([8, 16, 32, 64])),
                int(rng.choice([4, 6, 8, 12, 16])),
                int(rng.integers(1, 3)),
                None,
            )
        )
    for level_bits, group, group_bits, n_fp16, name in cases:
        what = f"k_block_bytes({level_bits}, {group}, {group_bits}, {n_fp16})" + (f" ({name})" if name else "")
        got = as_number(call(fn, level_bits, group, group_bits, n_fp16), what)
        bits = 256 * level_bits + 256 // group * group_bits + 16 * n_fp16
        if got == bits / 8:
            continue
        if got == bits:
            raise Wrong(f"{what} = {got:g}: that is bits; the answer is in bytes")
        if got == (256 * level_bits + 256 // group * group_bits) / 8:
            raise Wrong(f"{what} = {got:g}: add the {n_fp16} float16 super-scale(s), 2 bytes each")
        if got == (256 * level_bits + group * group_bits + 16 * n_fp16) / 8:
            raise Wrong(f"{what} = {got:g}: a super-block has 256 / group groups, not group groups")
        if got == 256 * level_bits / 8:
            raise Wrong(f"{what} = {got:g}: that counts only the levels; every group stores its scale bits too")
        raise Wrong(f"{what} = {got:g} bytes; that is not what the super-block holds")
    return "the bytes of all five k-quant super-blocks, and of 4 made-up layouts"


q1 = Exercise(
    "nb05",
    "q1",
    "k_block_bytes(level_bits, group, group_bits, n_fp16)",
    _check_block_bytes,
    hints=[
        "Three parts: 256 levels of level_bits each; 256 // group groups of group_bits each; n_fp16 numbers of 16 "
        "bits.",
        "Add the three, then divide by 8 for bytes. Q4_K: (256·4 + 8·12 + 2·16) / 8 = 144.",
    ],
    solution="""
    bits = 256 * level_bits + (256 // group) * group_bits + 16 * n_fp16
    return bits / 8
    """,
)


def _check_q5_k(fn, rng):
    for k in range(6):
        block = random_k_block(rng, 176)
        what = f"dequantize_q5_k(<176 bytes>) (block {k + 1})"
        got = as_array(call(fn, block.tobytes()), (256,), what)
        want = q5_k.dequantize_blocks(block[None, :])[0]
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        f = q5_k.unpack(block[None, :])
        low = f._replace(q=f.q & 15)
        if np.allclose(got, q5_k.decode(low)[0], rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the fifth bit is missing: bit j of qh[l] adds 16 to the level of weight 32j + l")
        flipped = np.unpackbits(block[16:48][:, None], axis=1, bitorder="big").T.reshape(
            256
        )  # bit 7 first: the wrong end
        if np.allclose(got, q5_k.decode(f._replace(q=(f.q & 15) | (flipped << 4)))[0], rtol=1e-6, atol=1e-9):
            raise Wrong(
                f"{what}: the fifth bits are read from the wrong end: weight 32j + l is bit j (counting from the "
                "least significant) of qh[l]"
            )
        i = int(np.flatnonzero(~np.isclose(got, want, rtol=1e-6, atol=1e-9))[0])
        raise Wrong(f"{what}: weight {i} (group {i // 32}) came back as {got[i]:.6g}; llama.cpp decodes it differently")
    return "your decoder agrees with llama.cpp's on 6 random 176-byte Q5_K blocks"


q2 = Exercise(
    "nb05",
    "q2",
    "dequantize_q5_k(block)",
    _check_q5_k,
    hints=[
        "Bytes 0-15 are exactly Q4_K's (d, dmin, 12 scale bytes: q4_k.unpack_scales); the nibbles in bytes 48-175 "
        "too (q4_k.unpack_nibbles).",
        "The fifth bit of weight e = 32j + l is bit j of qh[l] = byte 16 + l: level = nibble + 16·((qh[l] >> j) & 1).",
    ],
    solution="""
    b = np.frombuffer(block, dtype=np.uint8)
    d, dmin = np.frombuffer(b[0:4].tobytes(), dtype="<f2").astype(np.float32)
    sc, m = q4_k.unpack_scales(b[None, 4:16])
    low = q4_k.unpack_nibbles(b[None, 48:176])[0]
    high = (b[16:48][None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # (8, 32): bit j of qh[l]
    q = (low + 16 * high.reshape(256)).reshape(8, 32)
    return (q * (d * sc[0])[:, None] - (dmin * m[0])[:, None]).reshape(256)
    """,
    forbidden=(
        q5_k.dequantize_blocks,
        q5_k.decode,
        q5_k.unpack,
        q5_k.unpack_high_bits,
        dequantize,
        reference,
        *LLAMA_CPP,
    ),
    task="the Q5_K decoder",
)


K_NAMES = tuple(kfamily.LAYOUTS)


def _check_cheapest(fn, rng):
    w = (rng.standard_t(5, (16, 512)) * 0.02).astype(np.float32)
    sqnr = {n: metrics.sqnr_db(w, dequantize(quantize(w, n), n)) for n in K_NAMES}
    ordered = sorted(K_NAMES, key=lambda n: get_format(n).bits_per_weight)
    # Targets just under each format's SQNR, so exactly that format is the cheapest to reach it.
    for name in ordered:
        target = round(sqnr[name] - 0.05, 2)
        what = f"cheapest_k_format(w, {target})"
        want = next(n for n in ordered if sqnr[n] >= target)
        got = as_text(call(fn, w.copy(), target), what, "Q4_K")
        if got.upper() == want:
            continue
        if got.upper() not in sqnr:
            raise Wrong(f"{what} returned {got!r}; answer with one of {', '.join(K_NAMES)}")
        if sqnr[got.upper()] < target:
            raise Wrong(f"{what} returned {got}, whose SQNR on w is {sqnr[got.upper()]:.1f} dB: below the target")
        raise Wrong(f"{what} returned {got}; a format with fewer bits per weight also reaches {target} dB")
    return "the right format for 5 targets, one just under each k-quant's SQNR"


q3 = Exercise(
    "nb05",
    "q3",
    "cheapest_k_format(w, target_db)",
    _check_cheapest,
    hints=[
        "For each of Q2_K .. Q6_K: metrics.sqnr_db(w, kquant.dequantize(kquant.quantize(w, name), name)).",
        "Go through them from the fewest bits per weight up (kquant.get_format(name).bits_per_weight) and return "
        "the first that reaches target_db.",
    ],
    solution="""
    names = sorted(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"], key=lambda n: kquant.get_format(n).bits_per_weight)
    for name in names:
        if metrics.sqnr_db(w, kquant.dequantize(kquant.quantize(w, name), name)) >= target_db:
            return name
    return None
    """,
    time_limit=30,
)
