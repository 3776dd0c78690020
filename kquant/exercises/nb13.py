"""Exercises of notebook 13, bit budgets: what a type choice costs, one greedy step, which layers fit."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_number, call
from kquant.lessons import offload
from kquant.methods import budget

# (weights per block, bytes per block): ggml's table, as the notebook prints it.
SIZES = {"Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}
SIZES["Q8_0"] = (32, 34)
NOMINAL = {"Q2_K": 2, "Q3_K": 3, "Q4_K": 4, "Q5_K": 5, "Q6_K": 6, "Q8_0": 8}


def _check_matrix_bits(fn, rng):
    for k in range(6):
        t = ("Q4_K", "Q2_K", "Q8_0", "Q6_K", "Q3_K", "Q5_K")[k]
        rows, cols = int(rng.integers(2, 40)), 256 * int(rng.integers(1, 5))
        what = f"matrix_bits(({rows}, {cols}), {t!r}) (case {k + 1})"
        got = as_number(call(fn, (rows, cols), t), what)
        block, nbytes = SIZES[t]
        want = rows * (cols // block) * nbytes * 8
        if got == want:
            continue
        if got == want / 8:
            raise Wrong(f"{what} = {got:.0f}: that is bytes; a budget in bits per weight counts bits")
        if got == rows * cols * NOMINAL[t]:
            raise Wrong(
                f"{what} = {got:.0f}: {t} is not {NOMINAL[t]} bits per weight; its blocks also store scales "
                "(and mins): count the block's bytes"
            )
        if t != "Q8_0" and got == rows * (cols // 32) * nbytes * 8:
            raise Wrong(f"{what} = {got:.0f}: a K-quant block (super-block) holds 256 weights, not 32")
        raise Wrong(f"{what} = {got:.0f}: count the blocks in the matrix and the bytes of each block")
    return "the exact bits of 6 matrices, one at each type"


q1 = Exercise(
    "nb13",
    "q1",
    "matrix_bits(shape, type_name)",
    _check_matrix_bits,
    hints=[
        "ex.SIZES[type_name] gives (weights per block, bytes per block); a row of cols weights holds "
        "cols // block blocks.",
        "rows × (cols // block) blocks × bytes per block × 8 bits.",
    ],
    solution="""
    block, nbytes = ex.SIZES[type_name]
    rows, cols = shape
    return rows * (cols // block) * nbytes * 8
    """,
    forbidden=(budget.tensor_bits,),
    task="the bits of a type choice",
)


def _problem(rng, n: int):
    """n matrices with convex, falling costs over 4 options of rising size; each at some option below the top."""
    steps = rng.integers(1, 9, size=(n, 3))
    bits = np.concatenate([rng.integers(2, 6, size=(n, 1)), steps], axis=1).cumsum(axis=1)
    savings = np.sort(rng.uniform(0.1, 10, size=(n, 3)), axis=1)[:, ::-1]  # less saved each step: convex
    cost = 20 - np.concatenate([np.zeros((n, 1)), savings.cumsum(axis=1)], axis=1)
    choice = rng.integers(0, 3, size=n)
    return bits, cost, choice


def _check_greedy_step(fn, rng):
    for k in range(8):
        n = int(rng.integers(3, 7))
        bits, cost, choice = _problem(rng, n)
        idx = np.arange(n)
        extra = bits[idx, choice + 1] - bits[idx, choice]
        saved = cost[idx, choice] - cost[idx, choice + 1]
        ratio = saved / extra
        room = int(rng.integers(extra.min(), extra.max() + 2)) if k < 6 else int(extra.min()) - 1
        if k == 1:  # the best buy per bit does not fit, a worse one does
            room = int(extra[np.argmax(ratio)]) - 1 if extra[np.argmax(ratio)] > extra.min() else room
        fits = extra <= room
        want = int(np.flatnonzero(fits)[np.argmax(ratio[fits])]) if fits.any() else None
        what = f"greedy_step(<{n} matrices>, room={room}) (case {k + 1})"
        raw = call(fn, bits.copy(), cost.copy(), choice.copy(), room)
        if want is None:
            if raw is not None:
                raise Wrong(f"{what} returned {raw!r}: no upgrade fits in {room} bits; return None")
            continue
        if raw is None:
            raise Wrong(f"{what} returned None, but an upgrade fits in {room} bits")
        got = as_number(raw, what)
        if got == want:
            continue
        if got == int(np.argmax(ratio)) and not fits[int(np.argmax(ratio))]:
            raise Wrong(f"{what} = {got:.0f}: that upgrade needs more bits than the room left; take the best that fits")
        if got == int(np.flatnonzero(fits)[np.argmax(saved[fits])]):
            raise Wrong(f"{what} = {got:.0f}: that saves the most cost, but not per bit; divide by the extra bits")
        if got == int(np.flatnonzero(fits)[np.argmin(extra[fits])]):
            raise Wrong(
                f"{what} = {got:.0f}: the cheapest upgrade in bits is not the best buy; compare cost saved per bit"
            )
        raise Wrong(f"{what} = {got:.0f}: pick the matrix whose next step saves the most cost per extra bit and fits")
    return "8 greedy steps, some where the best buy per bit does not fit, one where nothing does"


q2 = Exercise(
    "nb13",
    "q2",
    "greedy_step(bits, cost, choice, room)",
    _check_greedy_step,
    hints=[
        "Matrix i would go from option choice[i] to choice[i] + 1: extra bits = bits[i, c+1] - bits[i, c], "
        "cost saved = cost[i, c] - cost[i, c+1].",
        "Among the matrices whose extra bits are <= room, return the index with the largest saved / extra; "
        "None if none fits.",
    ],
    solution="""
    idx = np.arange(len(choice))
    extra = bits[idx, choice + 1] - bits[idx, choice]
    saved = cost[idx, choice] - cost[idx, choice + 1]
    fits = np.flatnonzero(extra <= room)
    if len(fits) == 0:
        return None
    return int(fits[np.argmax(saved[fits] / extra[fits])])
    """,
    forbidden=(budget.greedy, budget.exact),
    task="one step of the greedy",
)


# Misconceptions about n_gpu_layers, each as the answer it gives: (message, answer(layers, output, vram)).
_FIT_MISTAKES = [
    (
        "llama.cpp offloads the *last* layers (and first of all the output layer), not layer 0 onwards",
        lambda layers, output, vram: int((np.cumsum(layers) <= vram).sum()),
    ),
    (
        "the output layer is a slot too, and the first one on the GPU",
        lambda layers, output, vram: int((np.cumsum(layers[::-1]) <= vram).sum()),
    ),
    (
        "a slot that fills the VRAM exactly still fits",
        lambda layers, output, vram: int((np.cumsum(np.append(layers, output)[::-1]) < vram).sum()),
    ),
    (
        "the layers differ in size; add them up one by one instead of dividing by their average",
        lambda layers, output, vram: int(vram // layers.mean()),
    ),
]


def _fit_cases(rng):
    """Layers of different sizes (so every misconception shows), one case that fills the VRAM exactly."""
    cases = [(np.array([0.2, 0.4, 0.6, 0.8, 1.0, 1.2]), 0.5, 2.0), (np.ones(5), 1.0, 3.0)]
    for _ in range(4):
        n_layer = int(rng.integers(4, 12))
        layers = rng.uniform(0.3, 1.2, n_layer).round(2)
        output = round(float(rng.uniform(0.2, 1.5)), 2)
        order = np.append(layers, output)[::-1].cumsum()
        m = int(rng.integers(1, n_layer))
        cases.append((layers, output, float(order[m - 1] + 0.5 * (order[m] - order[m - 1]))))
    return cases


def _check_layers_that_fit(fn, rng):
    cases = _fit_cases(rng)
    got, want = [], []
    for k, (layers, output, vram) in enumerate(cases):
        what = f"layers_that_fit(<{len(layers)} layers>, output {output}, vram {vram:.3f}) (case {k + 1})"
        got.append(as_number(call(fn, layers.copy(), output, vram), what))
        want.append(int((np.cumsum(np.append(layers, output)[::-1]) <= vram).sum()))
    if got == want:
        return f"{len(cases)} models with layers of different sizes, one filling the VRAM exactly"
    k = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    what = f"layers_that_fit(<{len(cases[k][0])} layers>, output {cases[k][1]}, vram {cases[k][2]:.3f}) (case {k + 1})"
    for message, mistake in _FIT_MISTAKES:
        if all(g == mistake(*c) for g, c in zip(got, cases)):
            raise Wrong(f"{what} = {got[k]:.0f}: {message}")
    raise Wrong(f"{what} = {got[k]:.0f}: add up the slots from the output layer backwards while they fit")


q3 = Exercise(
    "nb13",
    "q3",
    "layers_that_fit(layer_bytes, output_bytes, vram_bytes)",
    _check_layers_that_fit,
    hints=[
        "n_gpu_layers = g puts the last g of the n_layer + 1 slots on the GPU: the output layer, then layer "
        "n_layer - 1, then n_layer - 2, …",
        "Running sum over [output, layer n-1, layer n-2, …]: count how many prefix sums are <= vram_bytes.",
    ],
    solution="""
    slots = np.append(np.asarray(layer_bytes, dtype=float), output_bytes)[::-1]
    return int((np.cumsum(slots) <= vram_bytes).sum())
    """,
    forbidden=(offload.layers_that_fit,),
    task="the layers that fit",
)
