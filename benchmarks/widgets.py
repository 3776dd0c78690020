"""How long does each notebook widget take to redraw?

    python benchmarks/widgets.py [--repeat R]

Every interactive view of notebooks 00-11 (the ``*_view`` functions in kquant.viz, listed
once in tests/views.py, which the tests draw too) is called with the values its slider
produces, on the data its notebook uses, and its figure is rendered exactly as Jupyter's inline
backend renders it in the notebooks (PNG, with the settings of ``kquant.viz.setup()``, which every
notebook calls: 80 dpi, no "tight" crop). The printed time is that whole redraw: compute,
draw, encode. The target is under about 150 ms, so that dragging a slider feels
immediate; views over the target are marked "SLOW", and so are views costing more than 1.2x the
floor (an empty two-panel figure: the cost of drawing anything at all), redrawn between the
view's redraws so that both sides of the ratio see the same spell of a shared machine. Times
are the median of R redraws, cycling through the slider's values: wall-clock time, and the CPU
time of this process (on a busy shared machine the wall time includes waiting for a core; the
CPU time is what the redraw itself costs).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # kquant without installing, and the one list of views
from views import View, views  # noqa: E402 -- after the path set-up above

from kquant.viz import style  # noqa: E402

TARGET_MS = 150
FLOOR_RATIO = 1.2


def render_like_inline():
    """What plt.show() costs in a notebook: the current figure encoded as a PNG, then closed."""
    buf = io.BytesIO()
    plt.gcf().savefig(buf, format="png", **style.PRINT_FIGURE_KWARGS)
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


def timed_views() -> list[View]:
    """Every slider view of tests/views.py (the list the tests draw)."""
    return [v for v in views() if v.slider]


def timed_ms(fn) -> tuple[float, float]:
    """(wall ms, CPU ms) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=8, help="redraws per view (default 8)")
    args = parser.parse_args(argv)
    style.setup()  # what each notebook's import cell does
    show = plt.show
    plt.show = render_like_inline  # the views end with plt.show(): make it render as Jupyter would
    slow = 0
    try:
        empty_figure(0)  # warm-up
        print(f"{'notebook':>8}  {'view':<32} {'wall ms':>8} {'CPU ms':>7} {'floor':>6} {'x floor':>7}")
        for v in timed_views():
            notebook, name, view, values = v.notebook, v.name, v.draw, list(v.values)
            view(values[0])  # warm-up: first-call imports and caches are not a redraw
            wall, cpu, floor = [], [], []
            for i in range(args.repeat):
                # The floor is redrawn between the view's redraws, so that a slow spell of a shared
                # machine weighs on both sides of the ratio.
                floor.append(timed_ms(lambda: empty_figure(0))[1])
                value = values[i % len(values)]
                w, c = timed_ms(lambda draw=view, value=value: draw(value))
                wall.append(w)
                cpu.append(c)
            ms, c_ms, f_ms = statistics.median(wall), statistics.median(cpu), statistics.median(floor)
            over = c_ms > TARGET_MS or c_ms > FLOOR_RATIO * f_ms
            slow += over
            flag = "  SLOW" if over else ""
            print(f"{notebook:>8}  {name:<32} {ms:>8.0f} {c_ms:>7.0f} {f_ms:>6.0f} {c_ms / f_ms:>7.2f}{flag}")
    finally:
        plt.show = show
    print(f"target: under {TARGET_MS} ms of CPU per redraw and {FLOOR_RATIO}x the floor; {slow} view(s) over it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
