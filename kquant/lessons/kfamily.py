"""The K family side by side: what each super-block spends its bits on, and the grid it decodes to.

Every k-quant (Q2_K .. Q6_K, llama.cpp PR #1684) cuts a row into super-blocks of
QK_K = 256 weights and each super-block into groups of 16 or 32 weights. A group has
an integer scale (and, for the asymmetric types, an integer min) stored in a few bits;
the super-block has one or two float16 numbers that scale those integers. Each weight
is an integer level. The layouts below are ggml's structs (ggml-common.h), as drawn in
each format module; ``budget`` adds them up, and a test checks the sum against the
format's block size.

Notebooks 05 and 09 use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kquant.errors import KQuantError
from kquant.formats import get_format

QK_K = 256


@dataclass(frozen=True)
class BlockLayout:
    """One k-quant super-block: bits per level, group size, bits per group scale (and min), fp16 numbers."""

    name: str
    level_bits: int
    group: int  # weights per group (sub-block)
    scale_bits: int  # bits of one group's scale
    min_bits: int  # bits of one group's min (0: symmetric, no min)
    n_fp16: int  # float16 numbers per super-block (d, and dmin when there are mins)
    decodes: str  # the decoder's formula, as in the format module

    @property
    def groups(self) -> int:
        return QK_K // self.group


LAYOUTS = {
    lay.name: lay
    for lay in (
        BlockLayout("Q2_K", 2, 16, 4, 4, 2, "d·sc·q − dmin·m,  q in 0..3"),
        BlockLayout("Q3_K", 3, 16, 6, 0, 1, "d·(s − 32)·(q − 4),  q in 0..7"),
        BlockLayout("Q4_K", 4, 32, 6, 6, 2, "d·sc·q − dmin·m,  q in 0..15"),
        BlockLayout("Q5_K", 5, 32, 6, 6, 2, "d·sc·q − dmin·m,  q in 0..31"),
        BlockLayout("Q6_K", 6, 16, 8, 0, 1, "d·s·(q − 32),  q in 0..63"),
    )
}


def layout(name: str) -> BlockLayout:
    """The BlockLayout of a k-quant by name ("Q4_K"); a clear error for anything else."""
    key = str(name).upper()
    if key not in LAYOUTS:
        raise KQuantError(f"{name!r} is not a k-quant: use one of {', '.join(LAYOUTS)}")
    return LAYOUTS[key]


def budget(name: str) -> dict[str, int]:
    """Bits one super-block spends on each part: levels, group scales (and mins), super-scales."""
    lay = layout(name)
    parts = {f"levels ({QK_K} x {lay.level_bits} bits)": QK_K * lay.level_bits}
    what = "scales and mins" if lay.min_bits else "scales"
    per_group = lay.scale_bits + lay.min_bits
    parts[f"{what} ({lay.groups} groups x {per_group} bits)"] = lay.groups * per_group
    parts[f"super-scales ({lay.n_fp16} float16)"] = 16 * lay.n_fp16
    return parts


def group_levels(block: np.ndarray, name: str) -> np.ndarray:
    """Every value a super-block's groups can decode to: (groups, 2**level_bits), float32.

    Found by asking the format's own decoder: keep the block's scales, set every level
    to k, decode. So row j is the grid group j's weights were rounded onto. ``block``
    may also be many super-blocks, (n, type_size): then the result is (n, groups, 2**level_bits).
    """
    lay, fmt = layout(name), get_format(name)
    block = np.asarray(block, dtype=np.uint8)
    blocks = block.reshape(-1, fmt.type_size)
    fields = fmt.module.unpack(blocks)
    out = np.empty((blocks.shape[0], lay.groups, 2**lay.level_bits), dtype=np.float32)
    for k in range(2**lay.level_bits):
        q = np.full_like(fields.q, k)
        out[:, :, k] = fmt.module.decode(fields._replace(q=q))[:, :: lay.group]
    return out[0] if block.ndim == 1 else out


def on_even_grid(values, n_levels: int, atol: float = 1e-3):
    """Whether each group of ``values`` fits on ``n_levels`` evenly spaced points (some may be unused).

    A linear code of b bits, x ≈ scale · q + offset with whole q in 0..2**b − 1, always
    decodes a group to such a grid, so this is True for every group a k-quant or a legacy
    format decodes; False for a code book such as IQ4_NL's 16 uneven values, or for the
    centroids a clustering would find. The grid's step must divide the range (max − min)
    into j equal parts, j < n_levels: try each j and see whether every value lands on a
    whole step, up to float32 rounding (``atol`` of a step).

    ``values``: one group (n,) -> a bool; or groups (g, n) -> g bools.
    """
    v = np.asarray(values, dtype=np.float64)
    groups = v.reshape(-1, v.shape[-1])  # (g, n)
    lo, span = groups.min(-1, keepdims=True), np.ptp(groups, axis=-1, keepdims=True)
    found = span[:, 0] == 0  # a single level
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = (groups - lo) / span  # (g, n) in [0, 1]
        for j in range(1, n_levels):
            steps = unit * j
            found |= (np.abs(steps - np.round(steps)) <= atol).all(-1)
    return bool(found[0]) if v.ndim == 1 else found
