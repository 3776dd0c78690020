"""Exercises of notebook 16, every method compared: reading a table of bits against quality.

The three ideas a comparison needs: a method is only better at the same size or smaller
(the Pareto front), a difference is only real when its interval leaves zero (a verdict), and
two files scored on the same documents are compared document by document (a paired interval).
"""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_number, as_text, call

# ---------------------------------------------------------------------------------------------
# q1: the Pareto front of (bits per weight, KL)


def _front(rows) -> set[str]:
    """Labels no other row beats: none has bpw <= and KL <= with one of them strictly smaller."""
    out = set()
    for label, b, k in rows:
        if not any((b2 <= b and k2 <= k) and (b2 < b or k2 < k) for _, b2, k2 in rows):
            out.add(label)
    return out


def _labels(raw, what: str) -> set[str]:
    if raw is None:
        raise Wrong(f"{what} returned None: did the function forget to `return` its result?")
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
        raise Wrong(f"{what} should return a list of labels (the first item of each row), got {type(raw).__name__}")
    if not all(isinstance(x, str) for x in raw):
        raise Wrong(f"{what} should return the rows' labels (strings), not whole rows or numbers")
    return set(raw)


def _cases(rng):
    # Fixed cases first: each is a misconception's trap. Then random tables.
    yield "a tie in bits per weight", [("A", 4.5, 3e-4), ("B", 4.5, 2e-4), ("C", 4.9, 1e-4)]
    yield "two identical rows", [("A", 4.5, 2e-4), ("B", 4.5, 2e-4), ("C", 5.5, 1e-4), ("D", 6.0, 2e-4)]
    yield "the smallest file is also the worst", [("A", 2.6, 2e-3), ("B", 4.5, 3e-4), ("C", 4.9, 4e-4)]
    for _ in range(3):
        n = int(rng.integers(5, 9))
        bpw = np.round(rng.uniform(2.5, 8.5, n), 2)
        kl = np.round(10 ** rng.uniform(-5, -2, n), 7)
        yield "a random table", [(f"M{i}", float(b), float(k)) for i, (b, k) in enumerate(zip(bpw, kl))]


def _check_front(fn, rng):
    for k, (kind, rows) in enumerate(_cases(rng)):
        what = f"pareto_front(<{len(rows)} rows: {kind}>) (case {k + 1})"
        got = _labels(call(fn, [tuple(r) for r in rows]), what)
        want = _front(rows)
        if got == want:
            continue
        missing = want - got
        twins = {a for a, b, k in rows if sum((b2, k2) == (b, k) for _, b2, k2 in rows) > 1}
        if missing and missing <= twins and not got - want:
            raise Wrong(
                f"{what} drops rows that have an identical twin: two equal rows do not beat each other (one must "
                "be strictly better in size or KL), so both stay on the front"
            )
        best_kl = {min(rows, key=lambda r: r[2])[0]}
        smallest = {min(rows, key=lambda r: r[1])[0]}
        if got in (best_kl, smallest) and len(want) > 1:
            raise Wrong(
                f"{what}: one row is not the front; every row that no other row beats on both size and KL belongs "
                "to it (a smaller file that is worse is still a choice someone would make)"
            )
        dominated = got - want
        if dominated:
            raise Wrong(
                f"{what} keeps a row that another beats: some row is as small or smaller AND has as low or lower "
                "KL, one of them strictly"
            )
        raise Wrong(
            f"{what} leaves out a row that no other row beats; a row is off the front only if another is no "
            "larger and no worse, and strictly better in one of the two"
        )
    return "the Pareto front of 6 tables, ties and identical rows included"


q1 = Exercise(
    "nb16",
    "q1",
    "pareto_front(rows)",
    _check_front,
    hints=[
        "rows holds (label, bits per weight, KL). A row is beaten when another row is no larger AND no worse, "
        "and strictly better in at least one of the two.",
        "Keep a row unless some other row has bpw2 <= bpw and kl2 <= kl with (bpw2 < bpw or kl2 < kl). "
        "Two identical rows do not beat each other.",
    ],
    solution="""
    front = []
    for label, b, k in rows:
        beaten = any(b2 <= b and k2 <= k and (b2 < b or k2 < k) for _, b2, k2 in rows)
        if not beaten:
            front.append(label)
    return front
    """,
)


# ---------------------------------------------------------------------------------------------
# q2: a verdict from a paired difference's 95 % interval


def _verdict(lo: float, hi: float, lower_is_better: bool) -> str:
    if lo <= 0 <= hi:
        return "within noise"
    improved = hi < 0 if lower_is_better else lo > 0
    return "better" if improved else "worse"


_VERDICT_CASES = [
    # (lo, hi, lower_is_better): each names a trap
    (-3e-4, -1e-4, True),  # KL fell: better, although both ends are negative numbers
    (1e-4, 3e-4, True),  # KL rose: worse
    (-2e-4, 5e-5, True),  # the point estimate (the middle) is negative, but the interval holds 0
    (0.002, 0.011, False),  # top-1 rose: better, because higher is better for top-1
    (-0.011, -0.002, False),  # top-1 fell: worse
    (0.0, 0.004, False),  # an end exactly at 0: 0 is inside the interval
    (-0.004, 0.0, True),
]


def _check_verdict(fn, rng):
    for k, (lo, hi, lower) in enumerate(_VERDICT_CASES):
        what = f"verdict({lo}, {hi}, lower_is_better={lower}) (case {k + 1})"
        got = as_text(call(fn, lo, hi, lower), what, "within noise").strip().lower()
        want = _verdict(lo, hi, lower)
        if got == want:
            continue
        if got not in ("better", "worse", "within noise"):
            raise Wrong(f"{what} returned {got!r}: answer 'better', 'worse' or 'within noise'")
        if want == "within noise":
            raise Wrong(
                f"{what}: the interval holds 0, so the data cannot tell the two apart; the middle of the interval "
                "is not evidence on its own"
            )
        if got == "within noise":
            raise Wrong(f"{what}: the whole interval lies on one side of 0, so the difference is more than noise")
        raise Wrong(
            f"{what}: wrong direction; the interval is method minus baseline, and whether a rise is good depends "
            "on the metric (KL and perplexity: lower is better; top-1 and accuracy: higher is better)"
        )
    return "7 intervals of KL and top-1 differences, ends at 0 included"


q2 = Exercise(
    "nb16",
    "q2",
    "verdict(lo, hi, lower_is_better)",
    _check_verdict,
    hints=[
        "(lo, hi) is the 95 % interval of (method − baseline). If it contains 0, the difference is within noise.",
        "Otherwise the sign decides: a difference below 0 is an improvement when lower is better (KL), a "
        "difference above 0 when higher is better (top-1).",
    ],
    solution="""
    if lo <= 0 <= hi:
        return "within noise"
    improved = hi < 0 if lower_is_better else lo > 0
    return "better" if improved else "worse"
    """,
)


# ---------------------------------------------------------------------------------------------
# q3: a paired interval: the same documents scored twice


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def _documents(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-document KL of a baseline and a method: documents differ a lot, the method a little."""
    hardness = rng.lognormal(-8, 1.0, n)  # some documents are much harder than others, for both files
    a = hardness * rng.lognormal(0, 0.1, n)
    b = hardness * rng.lognormal(-0.08, 0.1, n)
    return a, b


def _check_paired(fn, rng):
    for k in range(5):
        n = int(rng.integers(12, 40))
        a, b = _documents(rng, n)
        what = f"paired_interval(<KL of {n} documents, baseline>, <the same documents, method>) (case {k + 1})"
        raw = call(fn, a.copy(), b.copy())
        if not isinstance(raw, (tuple, list)) or len(raw) != 2:
            raise Wrong(f"{what} should return a pair (lo, hi)")
        lo, hi = (as_number(v, what) for v in raw)
        want = _paired(a, b)
        if np.allclose((lo, hi), want, rtol=1e-6):
            continue
        d = b - a
        m = d.mean()
        if np.allclose((lo, hi), (-want[1], -want[0]), rtol=1e-6):
            raise Wrong(f"{what}: the sign is reversed; take method − baseline, b − a")
        unpaired = 1.96 * np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
        if np.allclose((lo, hi), (m - unpaired, m + unpaired), rtol=1e-6):
            raise Wrong(
                f"{what}: that treats the two columns as independent samples; they are the same documents, so "
                "take the per-document differences first: how hard a document is cancels out"
            )
        sd = d.std(ddof=1)
        if np.allclose((lo, hi), (m - 1.96 * sd, m + 1.96 * sd), rtol=1e-6):
            raise Wrong(f"{what}: that is the spread of single documents; the mean's uncertainty is sd / √n")
        sd0 = d.std()
        if np.allclose((lo, hi), (m - 1.96 * sd0 / np.sqrt(n), m + 1.96 * sd0 / np.sqrt(n)), rtol=1e-6):
            raise Wrong(f"{what}: use the sample standard deviation (ddof=1): the mean was estimated from the data")
        raise Wrong(f"{what} is not mean(b − a) ± 1.96 · sd(b − a) / √n")
    return "paired 95 % intervals on 5 sets of documents"


q3 = Exercise(
    "nb16",
    "q3",
    "paired_interval(a, b)",
    _check_paired,
    hints=[
        "a[i] and b[i] are the same document scored on two files. Work with d = b − a, one number per document.",
        "mean(d) ± 1.96 · d.std(ddof=1) / sqrt(len(d)).",
    ],
    solution="""
    d = np.asarray(b, dtype=np.float64) - a
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    return d.mean() - half, d.mean() + half
    """,
)
