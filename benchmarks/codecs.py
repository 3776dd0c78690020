"""How fast are kquant's numpy codecs, measured against ggml's C and gguf-py's numpy?

    python benchmarks/codecs.py [--weights N] [--repeat R] [--types Q4_K,Q6_K]

For each type, on one and the same float32 matrix, this times

* encode: kquant.quantize   vs ggml (kquant.reference.quantize, i.e. ggml_quantize_chunk)
          and gguf-py's gguf.quants.quantize where it has one (the five legacy types);
* decode: kquant.dequantize vs ggml (the type's to_float) and gguf.quants.dequantize.

and prints speeds as RATIOS to ggml: "kquant x ggml = 0.25" means kquant gets through
a quarter as many weights per second as the C code. The decode column "vs gguf-py"
compares kquant with gguf-py directly (above 1 = kquant is faster).

Both sides run on ONE thread: ggml_quantize_chunk called through ctypes does not start
threads, and numpy's elementwise ufuncs (all the codecs use) are single-threaded; no BLAS
is involved. Times are the best of R wall-clock runs (time.perf_counter), with extra
runs skipped once a function has used a few seconds, so slow codecs don't stall the run.

A benchmark of a wrong encoder is meaningless, so before timing, every type is checked
byte for byte against ggml on this input (encode: kquant bytes == ggml bytes; decode:
kquant's floats == ggml's floats, bit for bit). The "check" column says "exact" or
"MISMATCH" (or "ERROR" if kquant raised); the script exits with status 1 if any type
is not exact.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import kquant
from kquant import reference

ROW = 4096  # weights per row: a typical hidden size, and a multiple of every block size
TIME_BUDGET_S = 3.0  # stop repeating a function once it has used this much time


def timed(fn):
    """(fn(), wall seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_time(fn, repeat: int, first: float | None = None) -> float:
    """Best-of-`repeat` wall time of fn() in seconds; `first` is a run already timed."""
    runs = [] if first is None else [first]
    while len(runs) < max(1, repeat) and sum(runs) < TIME_BUDGET_S:
        runs.append(timed(fn)[1])
    return min(runs)


def try_gguf(fn, *args):
    """gguf-py raises NotImplementedError where it has no numpy codec (K-quant encoders)."""
    try:
        fn(*args)
    except NotImplementedError:
        return None
    return lambda: fn(*args)


def make_weights(n: int, seed: int) -> np.ndarray:
    """Roughly weight-like data: N(0, 0.02) with a few large outliers, shape (n // ROW, ROW)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.02, size=(max(1, n // ROW), ROW)).astype(np.float32)
    x.flat[rng.integers(0, x.size, x.size // 1000)] *= 20
    return x


def bench_type(x: np.ndarray, qtype: GGMLQuantizationType, repeat: int) -> dict:
    # Correctness first. These calls also warm every code path, and the kquant ones
    # count as the first timed run (kquant can be slow; no need to pay twice).
    q_ref = reference.quantize(x, qtype)
    q_kq, t_enc = timed(lambda: kquant.quantize(x, qtype))
    enc_ok = q_kq.shape == q_ref.shape and np.array_equal(q_kq, q_ref)
    y_ref = reference.dequantize(q_ref, qtype)
    y_kq, t_dec = timed(lambda: kquant.dequantize(q_ref, qtype))
    dec_ok = y_kq.shape == y_ref.shape and np.array_equal(y_kq.view(np.uint32), y_ref.view(np.uint32))

    gguf_enc = try_gguf(gguf_quants.quantize, x, qtype)
    gguf_dec = try_gguf(gguf_quants.dequantize, q_ref, qtype)
    times = {
        "enc_ggml": best_time(lambda: reference.quantize(x, qtype), repeat),
        "enc_kquant": best_time(lambda: kquant.quantize(x, qtype), repeat, first=t_enc),
        "enc_gguf": best_time(gguf_enc, repeat) if gguf_enc else None,
        "dec_ggml": best_time(lambda: reference.dequantize(q_ref, qtype), repeat),
        "dec_kquant": best_time(lambda: kquant.dequantize(q_ref, qtype), repeat, first=t_dec),
        "dec_gguf": best_time(gguf_dec, repeat) if gguf_dec else None,
    }
    check = "exact" if enc_ok and dec_ok else "MISMATCH" + ("" if enc_ok else " enc") + ("" if dec_ok else " dec")
    return {"check": check, "ok": enc_ok and dec_ok, **times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--weights",
        type=int,
        default=1 << 20,
        help="weights in the test matrix, rounded down to whole rows of 4096 (default 1M)",
    )
    ap.add_argument("--repeat", type=int, default=5, help="best of R runs (default 5)")
    ap.add_argument(
        "--types", default=",".join(t.name for t in reference.SUPPORTED), help="comma-separated, e.g. Q4_K,Q6_K"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    names = {t.name: t for t in reference.SUPPORTED}
    wanted = [s.strip().upper() for s in args.types.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in names]
    if unknown:
        ap.error(f"unknown type(s) {', '.join(unknown)}: choose from {', '.join(names)}")

    x = make_weights(args.weights, args.seed)
    n = x.size
    print(f"{n:,} weights, shape {x.shape}, best of {args.repeat}, one thread each side")
    print("speed ratio = kquant weights/s / other weights/s  (1.0 = as fast; 0.1 = ten times slower)\n")

    def mw(t):  # million weights per second
        return f"{n / t / 1e6:8.1f}"

    def ratio(slow, fast):  # throughput of `slow`'s owner relative to `fast`'s: fast_time / slow_time
        return f"{fast / slow:8.3f}" if slow and fast else f"{'-':>8}"

    header = (
        f"{'type':6} {'check':16}|{'ggml':>8} {'kquant':>8} {'gguf-py':>8} {'kq/ggml':>8}|"
        f"{'ggml':>8} {'kquant':>8} {'gguf-py':>8} {'kq/ggml':>8} {'kq/gguf':>8}"
    )
    print(f"{'':23}|{'encode (Mweights/s, ratio)':^35}|{'decode (Mweights/s, ratios)':^44}")
    print(header)
    print("-" * len(header))
    all_ok = True
    for name in wanted:
        try:
            r = bench_type(x, names[name], args.repeat)
        except Exception as exc:  # one broken codec should not hide the other rows
            all_ok = False
            print(f"{name:6} {'ERROR':16}| {type(exc).__name__}: {exc}"[:160], flush=True)
            continue
        all_ok &= r["ok"]
        gguf_enc = mw(r["enc_gguf"]) if r["enc_gguf"] else f"{'-':>8}"
        gguf_dec = mw(r["dec_gguf"]) if r["dec_gguf"] else f"{'-':>8}"
        print(
            f"{name:6} {r['check']:16}|{mw(r['enc_ggml'])} {mw(r['enc_kquant'])} {gguf_enc} "
            f"{ratio(r['enc_kquant'], r['enc_ggml'])}|{mw(r['dec_ggml'])} {mw(r['dec_kquant'])} {gguf_dec} "
            f"{ratio(r['dec_kquant'], r['dec_ggml'])} {ratio(r['dec_kquant'], r['dec_gguf'])}",
            flush=True,
        )
    if not all_ok:
        print("\nMISMATCH/ERROR: some kquant codec differs from ggml or fails; its timings mean nothing until fixed.")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
