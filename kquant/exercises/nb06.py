"""Exercises of notebook 06, the Q4_K_M recipe."""

import math

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kquant import mixes
from kquant.exercises.core import Exercise, Wrong, as_bool, as_number, as_text, call
from kquant.gguf import summary
from kquant.mixes import rules

KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


# Plausible rules a reader may infer from a few printed depths, each with what it gets wrong.
_MORE_BITS_MISREADINGS = [
    (
        lambda i, n: i < n // 8 or (i - n // 8) % 3 == 2,
        "the last eighth of the layers (from 7 * n // 8 on) gets more bits too",
    ),
    (
        lambda i, n: i >= 7 * n // 8 or (i - n // 8) % 3 == 2,
        "the first eighth of the layers (below n // 8) gets more bits too",
    ),
    (
        lambda i, n: i < n // 8 or i >= 7 * n // 8 or i % 3 == 2,
        "'every third' counts from the end of the first eighth (layer n // 8), not from layer 0",
    ),
    (
        lambda i, n: i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 0,
        "the every-third run is shifted: compare where its first bump after the first eighth falls in the lists",
    ),
    (
        lambda i, n: i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 1,
        "the every-third run is shifted by one: compare where its first bump after the first eighth falls",
    ),
    (
        lambda i, n: i < n // 8 or i >= 7 * (n // 8) or (i - n // 8) % 3 == 2,
        "the last eighth starts elsewhere when n is not a multiple of 8: C multiplies 7 * n before it divides",
    ),
    (
        lambda i, n: i < n / 8 or i >= 7 * n / 8 or (i - n // 8) % 3 == 2,
        "the eighths are whole layers: llama.cpp's C code divides integers and rounds down (n // 8, 7 * n // 8)",
    ),
    (
        lambda i, n: i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 2 == 1,
        "between the eighths it is every *third* layer, not every other one",
    ),
]


def _check_use_more_bits(fn, rng):
    sizes = [8, 32, 80, 20, 5, 3, 1, 12, 26] + [int(n) for n in rng.integers(2, 100, 4)]
    for n in sizes:
        got = [as_bool(call(fn, i, n), f"use_more_bits({i}, {n})") for i in range(n)]
        want = [mixes.use_more_bits(i, n) for i in range(n)]
        if got == want:
            continue
        wrong = [i for i in range(n) if got[i] != want[i]]
        for rule, why in _MORE_BITS_MISREADINGS:
            if got == [bool(rule(i, n)) for i in range(n)]:
                raise Wrong(f"for n = {n} layers your rule picks other layers: {why}")
        i = wrong[0]
        raise Wrong(
            f"use_more_bits({i}, {n}) is {got[i]}, and {len(wrong)} of the {n} layers of that model are wrong; "
            f"print [i for i in range({n}) if mixes.use_more_bits(i, {n})] and compare"
        )
    return f"right for every layer of {len(sizes)} model depths, from {min(sizes)} to {max(sizes)} layers"


q1 = Exercise(
    "nb06",
    "q1",
    "use_more_bits(i, n)",
    _check_use_more_bits,
    hints=[
        "Look at the lists printed above: for n = 32, layers 0-3 are the first eighth and 28-31 the last. Which "
        "layers are picked in between, and where does the run start?",
        "Print the list for n = 20 and n = 5 too: the eighths of such models are not whole, and C's integer "
        "division decides (n // 8, 7 * n // 8).",
        "In between, a layer is picked when (i - n // 8) % 3 == 2.",
    ],
    solution="""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
    """,
    forbidden=(mixes.use_more_bits, rules.more_bits_words, mixes.plan),
    task="the rule",
)


def _dense_model(n: int):
    """A plain llama model with n layers (no GQA, widths that are multiples of 256), as TensorSpecs."""
    f16 = GGMLQuantizationType.F16
    shapes = {
        "attn_q": (512, 512),
        "attn_k": (512, 512),
        "attn_v": (512, 512),
        "attn_output": (512, 512),
        "ffn_gate": (1024, 512),
        "ffn_up": (1024, 512),
        "ffn_down": (512, 1024),
    }
    tensors = [mixes.TensorSpec(f"blk.{i}.{k}.weight", shapes[k], f16) for i in range(n) for k in KINDS]
    tensors += [
        mixes.TensorSpec("token_embd.weight", (1000, 512), f16),
        mixes.TensorSpec("output.weight", (1000, 512), f16),
    ]
    return tensors, mixes.ModelParams(n_layer=n, n_head=8, n_head_kv=8)


def _check_q4_k_m_type(fn, rng):
    for n in [8, 32] + [int(v) for v in rng.integers(4, 60, 2)]:
        tensors, params = _dense_model(n)
        planned = {c.name: c.type.name for c in mixes.plan(tensors, params, "Q4_K_M")}
        for i in range(n):
            for kind in KINDS:
                what = f"q4_k_m_type({kind!r}, {i}, {n})"
                got = as_text(call(fn, kind, i, n), what, "Q4_K")
                want = planned[f"blk.{i}.{kind}.weight"]
                if got.upper() == want:
                    continue
                if kind in ("attn_q", "attn_k", "attn_output") and got.upper() != "Q4_K":
                    raise Wrong(f"{what} = {got}: Q4_K_M leaves {kind} at the default Q4_K in every layer")
                if kind in ("ffn_gate", "ffn_up") and got.upper() != "Q4_K":
                    raise Wrong(f"{what} = {got}: only ffn_down gets more bits, {kind} stays Q4_K")
                raise Wrong(
                    f"{what} = {got}; llama.cpp's Q4_K_M gives {want} (use_more_bits decides for attn_v and ffn_down)"
                )
    return "the Q4_K_M type of every layer's seven matrices, for 4 model depths, as llama.cpp plans them"


q2 = Exercise(
    "nb06",
    "q2",
    "q4_k_m_type(kind, i, n)",
    _check_q4_k_m_type,
    hints=[
        "Only two kinds depend on the layer: attn_v and ffn_down get Q6_K where mixes.use_more_bits(i, n) is True.",
        "Everything else (attn_q, attn_k, attn_output, ffn_gate, ffn_up) is the mix's default, Q4_K.",
    ],
    solution="""
    if kind in ("attn_v", "ffn_down") and mixes.use_more_bits(i, n):
        return "Q6_K"
    return "Q4_K"
    """,
    forbidden=(
        mixes.plan,
        rules.Rules.choose,
        rules.Rules.pick,
        rules.Rules.mix_rule,
        rules.Rules.attn_v_rule,
        rules.Rules.ffn_down_rule,
    ),
    task="the choice of type",
)


def _check_average_bpw(fn, rng):
    names = ["F32", "F16", "Q4_K", "Q6_K", "Q5_K", "Q8_0", "Q4_0"]
    for k in range(6):
        rows = []
        for _ in range(int(rng.integers(2, 8))):
            t = names[int(rng.integers(len(names)))]
            shape = (
                (int(rng.integers(1, 20)) * 32, 256 * int(rng.integers(1, 4)))
                if t not in ("F32",)
                else (256 * int(rng.integers(1, 4)),)
            )
            rows.append((shape, t))
        what = f"average_bpw(<{len(rows)} tensors>) (case {k + 1})"
        got = as_number(call(fn, list(rows)), what)
        n = [math.prod(s) for s, _ in rows]
        nbytes = [
            math.prod(s) // GGML_QUANT_SIZES[GGMLQuantizationType[t]][0] * GGML_QUANT_SIZES[GGMLQuantizationType[t]][1]
            for s, t in rows
        ]
        want = 8 * sum(nbytes) / sum(n)
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        plain = sum(8 * b / w for b, w in zip(nbytes, n)) / len(rows)
        if math.isclose(got, plain, rel_tol=1e-9):
            raise Wrong(
                f"{what} = {got:.4f}: that is the mean over tensors; weigh each tensor by its number of weights "
                "(total bits / total weights)"
            )
        if math.isclose(got, want / 8, rel_tol=1e-9):
            raise Wrong(f"{what} = {got:.4f}: that is bytes per weight; multiply by 8")
        raise Wrong(f"{what} = {got:.4f} bits per weight; the file's tensors hold a different average")
    return "the average bits per weight of 6 random mixes of tensors"


q3 = Exercise(
    "nb06",
    "q3",
    "average_bpw(rows)",
    _check_average_bpw,
    hints=[
        "A tensor of n weights in a format of B bytes per block of K weights takes n // K * B bytes; "
        "kquant.get_format(t) has block_size and type_size, but not F32/F16: use "
        "GGML_QUANT_SIZES[GGMLQuantizationType[t]] = (K, B).",
        "The average is 8 x (all bytes) / (all weights), not the mean of the tensors' bits per weight.",
    ],
    solution="""
    total_bits = total_weights = 0
    for shape, t in rows:
        n = math.prod(shape)
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[t]]
        total_bits += 8 * (n // block) * type_size
        total_weights += n
    return total_bits / total_weights
    """,
    forbidden=(summary.FileSummary.bpw.fget, summary.plan_summary),
    task="the average",
)
