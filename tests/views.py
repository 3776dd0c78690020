"""Every figure of kquant.viz with inputs like its notebook's: the one list of views.

    for v in views():          # loads the bundled model once (a few seconds)
        v.draw(v.values[0])

``tests/test_viz.py`` draws each view once and checks it is a complete, labelled figure
that ends with ``plt.show()``; ``benchmarks/widgets.py`` times each redraw over the values
of its slider. One list serves both, so a new view cannot be tested and not timed, or the
other way round. Slider views get the bundled model's real inputs; the few plots of
measured results (scores, layer errors) get placeholder numbers of the right shape, since
only the drawing is under test here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kquant.formats import iq4_nl, q4_k
from kquant.formats import quantize as kquant_quantize
from kquant.gguf import anatomy
from kquant.lessons import metrics, published, requantize, samples, scale_zero_point
from kquant.methods import awq as awq_method
from kquant.methods import budget
from kquant.methods import gptq as gptq_method
from kquant.mixes import Choice, plan
from kquant.model import cache, calibrate, evaluate, forward, hub, runner, scores
from kquant.quantize_file import read_model
from kquant.viz import awq, compare, files, gptq, iquants, kquants, models, numbers, qlora
from kquant.viz import budget as budget_views

TABLE = iq4_nl.KVALUES.astype(np.int64)


@dataclass(frozen=True)
class View:
    """One figure: the notebook that shows it, its name, a drawing of one value, and the values."""

    notebook: str
    name: str
    draw: Callable[[object], None]  # draws one complete figure for one slider value, then plt.show()
    values: Sequence  # a slider's values, or one value for a figure without a slider
    slider: bool = True


def views() -> list[View]:
    """Every view and plot, in notebook order."""
    w = samples.example_weights().weights
    gains = np.linspace(1, 20, 39)
    curve = [
        metrics.sqnr_db(s[o], scale_zero_point.fake_quantize(s, 8)[o])
        for s, o in (scale_zero_point.scale_largest(w, g) for g in gains)
    ]
    x = w[0, :256]
    fields = q4_k.encode(x[None, :])
    model = read_model(hub.bundled())
    q4_k_m: list[Choice] = plan(model.tensors, model.params, "Q4_K_M")
    bundled = hub.bundled().read_bytes()
    q_bytes = cache.quantized(hub.bundled(), "Q4_K_M").read_bytes()  # notebook 07's second file, from the cache
    gguf_files = {  # read once, as notebook 07 does, and the same two files it draws
        "F16 (bundled)": (bundled, anatomy.read_layout(bundled)),
        "Q4_K_M": (q_bytes, anatomy.read_layout(q_bytes)),
    }
    # Notebook 08 compares F16 with quantized files; copies of the model stand in for them (the view reads logits).
    loaded = {m: runner.load(hub.bundled(), n_ctx=256) for m in ("F16", "Q8_0", "Q4_0")}
    bpw = {m: published.LLAMA31_8B_SIZES[m]["bpw"] for m in ["F16", "Q8_0", "Q4_K_M", "Q2_K"]}
    vectors = calibrate.collect(hub.bundled(), calibrate.calibration_text(), n_chunks=2).vectors()
    # Notebook 17 re-quantizes a Q4_1 file's weights; Q4_1 bytes of the sample weights stand in for them.
    # Notebook 15: a block of the sample weights and its IQ4_NL search; weights over their block max.
    iq4_x = w[0, :32].astype(np.float32)
    iq4_steps = iq4_nl.search_steps(iq4_x, iq4_x * iq4_x)
    blocks = w.reshape(-1, 32)
    iq4_u = (blocks / blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)][:, None]).ravel()
    iq4_levels = {"IQ4_NL": TABLE / -127.0, "Q4_0": (8 - np.arange(16)) / 8.0}
    grid_pair = requantize.off_grid(kquant_quantize(w[:4, :512], "Q4_1"), np.random.default_rng(0))
    # Notebook 11 spreads one matrix's rounding errors: layer 4's attn_k (32 rows) and its Hessian on 2 chunks.
    llama = forward.Llama.load(hub.bundled())
    hessian = gptq_method.hessians(llama, gptq_method.calibration(llama, 2, None), 4)["blk.4.attn_k.weight"]
    w11 = llama.weights["blk.4.attn_k.weight"][:32]
    # Notebook 12: a real matrix and its real inputs on one calibration chunk, and its α search curve.
    seen = awq_method.calibration_inputs(llama, calibrate.chunks(llama, calibrate.calibration_text(), 256, 2)[:1])
    awq_w, awq_x = llama.weights["blk.2.ffn_down.weight"], seen["blk.2.ffn_down.weight"][0]
    _, alphas, losses = awq_method.search_matrix(awq_w, awq_x, "Q4_0")
    # Placeholder scores and layer errors: the plots' inputs in shape only (the notebooks pass measured ones).
    n = np.array([100.0, 150.0, 200.0])  # positions of three documents

    def per_doc(kl):  # per-document totals, spread around the mean, for the error bars
        spread = np.array([0.5, 1.0, 1.5])
        return {"nll": 0.35 * n, "n_next": n - 1, "kl": kl * spread * n, "top1": (1 - 10 * kl * spread) * n, "n": n}

    rows = [
        evaluate.Scores(hub.bundled(), 13.1, b, 1.42, kl, 1 - kl * 10, {"sums": 0.4}, 0.0, 100.0, per_doc=per_doc(kl))
        for b, kl in [(16.0, 0.0), (8.5, 1.6e-5), (4.9, 1.6e-4), (3.1, 2.9e-3)]
    ]
    # Notebook 16: the same synthetic scores under method names, with task results for the sums panel.
    methods = {
        label: dataclasses.replace(r, results={"sums": np.arange(40) % (2 + i) == 0})
        for i, (label, r) in enumerate(zip(["F16", "Q8_0", "Q4_K_M", "Q2_K"], rows))
    }
    method_bits = {label: r.bpw for label, r in methods.items()}
    layers = np.geomspace(1e-3, 1e-1, model.params.n_layer)
    measured = _placeholder_measurement(q4_k_m)
    return [
        View("00", "levels_view", lambda b: numbers.levels_view(b), range(1, 9)),
        View("01", "pi_grid_view", lambda f: numbers.pi_grid_view(f), range(0, 21)),
        View("01", "float_fields_view", lambda v: numbers.float_fields_view(v), [np.pi, 0.1, 65504.0, 1e-6, -2.5]),
        View(
            "01",
            "error_vs_bits",
            lambda _: numbers.error_vs_bits([1, 2, 3], [6.0, 12.0, 18.1], [6, 12, 18], 6.0),
            [0],
            slider=False,
        ),
        View("02", "weight_histogram", lambda _: numbers.weight_histogram(w, "weights"), [0], slider=False),
        View("02", "quant_error_view", lambda b: numbers.quant_error_view(w, b, "absmax"), range(2, 9)),
        View(
            "02", "quant_error_view (zero point)", lambda b: numbers.quant_error_view(w, b, "zero point"), range(2, 9)
        ),
        View("02", "outlier_view", lambda g: numbers.outlier_view(w, g, gains, curve, 8), [1.0, 5.0, 10.0, 20.0]),
        View("03", "quant_error_view (blocks)", lambda bs: numbers.quant_error_view(w, 4, "absmax", bs), [32, 64]),
        View(
            "03",
            "tradeoff_plot",
            lambda _: numbers.tradeoff_plot({"a": [(4.5, 17.0, "32")], "b": [(5, 7.0, "5")]}, "trade-off"),
            [0],
            slider=False,
        ),
        View("03", "block_view", lambda bs: numbers.block_view(w, bs, 4), [8, 16, 32, 64, 128, 256, w.shape[1]]),
        View(
            "03",
            "error_along_row",
            lambda _: numbers.error_along_row({"x": np.ones(64), "y": np.full(64, 0.1)}, 3, "row"),
            [0],
            slider=False,
        ),
        View(
            "03",
            "block_bytes",
            lambda _: numbers.block_bytes(np.arange(18, dtype=np.uint8), [("d", 0, 2), ("qs", 2, 18)], "bytes"),
            [0],
            slider=False,
        ),
        View("04", "scale_search_view", lambda j: kquants.scale_search_view(x, j), range(8)),
        View("04", "scale_bits_view", lambda j: kquants.scale_bits_view(fields.sc[0], fields.m[0], j), range(8)),
        View("05", "k_block_view", lambda t: kquants.k_block_view(w, t), ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]),
        View("06", "plan_picture", lambda _: files.plan_picture({"Q4_K_M": q4_k_m}, "plan"), [0], slider=False),
        View("06", "mix_view", lambda m: files.mix_view(model.tensors, model.params, m), ["Q4_K_M", "Q2_K", "Q6_K"]),
        View(
            "07",
            "gguf_map_view",
            lambda n: files.gguf_map_view(gguf_files, n),
            ["blk.0.attn_q.weight", "output_norm.weight"],
        ),
        View(
            "08", "next_token_view", lambda m: models.next_token_view(loaded, "Once upon a time", m), ["Q8_0", "Q4_0"]
        ),
        View("08", "scores_vs_bpw", lambda _: models.scores_vs_bpw(rows, "scores"), [0], slider=False),
        View("16", "methods_view", lambda m: compare.methods_view(methods, method_bits, m), list(compare.METRICS)),
        View(
            "09",
            "memory_view",
            lambda m: models.memory_view(
                "Llama-2-70B", m, 32768, published.MODEL_LAYOUTS, bpw, max_ctx=published.MAX_CONTEXT
            ),
            list(bpw),
        ),
        View("10", "importance_view", lambda n: models.importance_view(vectors, n), list(vectors)[:8]),
        View(
            "10",
            "layer_errors_plot",
            lambda _: models.layer_errors_plot({"Q4_K_M": layers}, "errors"),
            [0],
            slider=False,
        ),
        View("11", "gptq_view", lambda c: gptq.gptq_view(w11, hessian, c, 0.01), [0, 40, 130, 255]),
        View("11", "gptq_view (damping)", lambda p: gptq.gptq_view(w11, hessian, 40, p), gptq.DAMPINGS),
        View("14", "levels_plot", lambda _: qlora.levels_plot({"uniform": qlora.UNIFORM_LEVELS}), [0], slider=False),
        View(
            "14",
            "nf4_view",
            lambda v: qlora.nf4_view(w, "weights", *v),
            [(64, "NF4"), (64, "uniform"), (128, "NF4"), (256, "uniform")],
        ),
        View(
            "14",
            "loss_curves",
            lambda _: qlora.loss_curves({"a": np.geomspace(3, 0.1, 50), "b": np.geomspace(2, 0.3, 50)}, "losses"),
            [0],
            slider=False,
        ),
        View("13", "sensitivity_map", lambda _: budget_views.sensitivity_map(measured, "kl"), [0], slider=False),
        View("13", "allocation_view", lambda b: budget_views.allocation_view(measured, b, "kl"), [3.0, 4.65, 6.0, 8.3]),
        View("13", "costs_compared", lambda _: budget_views.costs_compared(measured, "Q4_K"), [0], slider=False),
        View("15", "table_plot", lambda _: iquants.table_plot(iq4_u, iq4_levels), [0], slider=False),
        View("15", "search_view", lambda k: iquants.search_view(iq4_x, iq4_x * iq4_x, iq4_steps, k, TABLE), range(16)),
        View(
            "12",
            "alpha_view",
            lambda a: awq.alpha_view(awq_w, awq_x, "Q4_0", alphas, losses, a),
            [float(a) for a in alphas],
        ),
        View(
            "12",
            "channel_magnitudes_plot",
            lambda _: awq.channel_magnitudes_plot({"ffn_down": np.abs(awq_x).mean(0)}, "channels"),
            [0],
            slider=False,
        ),
        View(
            "12",
            "search_curves_plot",
            lambda _: awq.search_curves_plot({"ffn_down": (alphas, losses)}, "search"),
            [0],
            slider=False,
        ),
        View(
            "12",
            "outlier_plot",
            lambda _: awq.outlier_plot(
                [1, 10, 100],
                [scores.Interval(0.06, 0.05, 0.07)] * 3,
                [scores.Interval(0.05, 0.04, 0.06)] * 3,
                "outliers",
            ),
            [0],
            slider=False,
        ),
        View(
            "17",
            "requantization_view",
            lambda t: models.requantization_view(*grid_pair, t),
            ["Q4_1", "Q4_K", "Q5_K", "Q5_1", "Q6_K", "Q8_0"],
        ),
    ]


def _placeholder_measurement(choices) -> budget.Measurement:
    """Notebook 13's measurement in shape only: the bundled model's matrices and exact bits, made-up costs."""
    mats = [c for c in choices if len(c.shape) == 2]
    rest = [c for c in choices if len(c.shape) != 2]
    bits = np.array([[budget.tensor_bits(c.shape, t) for t in budget.TYPES] for c in mats])
    n = np.array([c.shape[0] * c.shape[1] for c in mats])
    scale = np.geomspace(1e-5, 1e-3, len(mats))[:, None]
    cost = scale * np.exp(-1.4 * (bits / n[:, None] - 2.6))  # about 4x less error per extra bit, as measured
    fixed = sum(int(np.prod(c.shape)) for c in rest)
    return budget.Measurement([c.name for c in mats], budget.TYPES, n, bits, cost, cost[::-1] * 3, 32 * fixed, fixed)
