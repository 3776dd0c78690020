"""How long does each notebook widget take to redraw?

    python benchmarks/widgets.py [--repeat R]

Every interactive view of notebooks 00-10 but 07's (the ``*_view`` functions in kquant.viz)
is called with the values its slider produces, on the data its notebook uses, and
its figure is rendered exactly as Jupyter's inline backend renders it (PNG,
``bbox_inches="tight"``, default dpi). The printed time is that whole redraw: compute,
draw, encode. The target is under about 150 ms, so that dragging a slider feels
immediate; views over the target are marked "SLOW". Times are the median of R
redraws, cycling through the slider's values: wall-clock time, and the CPU time of
this process (on a busy shared machine the wall time includes waiting for a core;
the CPU time is what the redraw itself costs).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; the inline backend also renders with Agg
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from kquant import gguf_read, hub, imatrix, linear, metrics, published, run, samples, viz
from kquant.formats import q4_k

TARGET_MS = 150


def render_like_inline():
    """What plt.show() costs in a notebook: the current figure encoded as a PNG, then closed."""
    buf = io.BytesIO()
    plt.gcf().savefig(buf, format="png", bbox_inches="tight")
    plt.close("all")


def empty_figure(_):
    """The floor: an empty two-panel figure, rendered the same way. Views cannot be much cheaper."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax in (a, b):
        ax.plot([0, 1])
        ax.set_title("title")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    plt.show()


def views():
    """(notebook, view name, callable taking one slider value, the slider's values)."""
    W = samples.example_weights().weights
    gains = np.linspace(1, 20, 39)
    curve = [
        metrics.sqnr_db(w[o], linear.fake_quantize(w, 8)[o]) for w, o in (linear.scale_largest(W, g) for g in gains)
    ]
    x = W[0, :256]
    fields = q4_k.encode(x[None, :])
    model = gguf_read.read_model(hub.bundled())
    # Notebook 08 compares F16 with quantized files; two files of the model stand in for the mixes (the view only
    # reads logits).
    models = {
        "F16": run.load(hub.bundled(), n_ctx=256),
        "Q8_0": run.load(hub.bundled(), n_ctx=256),
        "Q4_0": run.load(hub.bundled(), n_ctx=256),
    }
    bpw = {m: published.LLAMA31_8B_SIZES[m]["bpw"] for m in ["F16", "Q8_0", "Q4_K_M", "Q2_K"]}
    vectors = imatrix.collect(hub.bundled(), imatrix.calibration_text(), n_chunks=2).vectors()
    return [
        ("--", "(empty two-panel figure)", empty_figure, [0]),
        ("00", "levels_view", lambda b: viz.levels_view(b), range(1, 9)),
        ("01", "pi_grid_view", lambda f: viz.pi_grid_view(f), range(0, 21)),
        ("01", "float_fields_view", lambda v: viz.float_fields_view(v), [np.pi, 0.1, 65504.0, 1e-6, -2.5]),
        ("02", "quant_error_view", lambda b: viz.quant_error_view(W, b, "absmax"), range(2, 9)),
        ("02", "quant_error_view (zero point)", lambda b: viz.quant_error_view(W, b, "zero point"), range(2, 9)),
        ("02", "outlier_view", lambda g: viz.outlier_view(W, g, gains, curve, 8), [1.0, 5.0, 10.0, 20.0]),
        (
            "03",
            "block_view",
            lambda bs: viz.block_view(W, bs, 4),
            [8, 16, 32, 64, 128, 256, W.shape[1]],
        ),  # the notebook's slider
        ("04", "scale_search_view", lambda j: viz.scale_search_view(x, j), range(8)),
        ("04", "scale_bits_view", lambda j: viz.scale_bits_view(fields.sc[0], fields.m[0], j), range(8)),
        ("05", "k_block_view", lambda t: viz.k_block_view(W, t), ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]),
        (
            "06",
            "mix_view",
            lambda m: viz.mix_view(model.tensors, model.params, m),
            ["Q4_K_M", "Q2_K", "Q6_K", "Q4_K_S"],
        ),
        ("08", "next_token_view", lambda m: viz.next_token_view(models, "Once upon a time", m), ["Q8_0", "Q4_0"]),
        (
            "09",
            "memory_view",
            lambda m: viz.memory_view("Llama-2-70B", m, 4096, published.MODEL_LAYOUTS, bpw),
            list(bpw),
        ),
        ("10", "importance_view", lambda n: viz.importance_view(vectors, n), list(vectors)[:8]),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=8, help="redraws per view (default 8)")
    args = parser.parse_args(argv)
    show = plt.show
    plt.show = render_like_inline  # the views end with plt.show(): make it render as Jupyter would
    slow = 0
    try:
        print(f"{'notebook':>8}  {'view':<32} {'wall ms':>8} {'CPU ms':>7}")
        for notebook, name, view, values in views():
            values = list(values)
            view(values[0])  # warm-up: first-call imports and caches are not a redraw
            wall, cpu = [], []
            for i in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                view(values[i % len(values)])
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            ms, cpu_ms = statistics.median(wall), statistics.median(cpu)
            flag = "  SLOW" if cpu_ms > TARGET_MS else ""
            slow += cpu_ms > TARGET_MS
            print(f"{notebook:>8}  {name:<32} {ms:>8.0f} {cpu_ms:>7.0f}{flag}")
    finally:
        plt.show = show
    print(f"target: under {TARGET_MS} ms of CPU per redraw; {slow} view(s) over it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
