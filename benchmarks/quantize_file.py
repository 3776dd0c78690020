"""Time kquant.quantize_gguf against llama.cpp's llama_model_quantize on the same model and mix.

    python benchmarks/quantize_file.py                      # a random 8-layer llama, Q4_K_M
    python benchmarks/quantize_file.py --big                # a random ~300M-weight F16 llama
    python benchmarks/quantize_file.py model-f16.gguf --mix Q4_K_M Q8_0 --repeat 3 --threads 1

Both get the same number of threads (--threads, default every CPU, as llama-quantize):
llama.cpp's threads, kquant's worker processes. Prints wall time (best of --repeat, the two
sides taking turns run after run), the ratio kquant / llama.cpp (issue 19's target: at most 1.0,
a mix over it marked "SLOW"), and whether the two files have the same sha256. A file that differs
from llama.cpp's makes its time meaningless: the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # kquant, and the test helpers (tiny model, llama.cpp call)

from tiny_llama import write_tiny_llama  # noqa: E402

from kquant.gguf.summary import sha256  # noqa: E402
from kquant.mixes import MIXES  # noqa: E402
from kquant.quantize_file import quantize_gguf  # noqa: E402
from kquant.reference import model_quantize as llama_quantize  # noqa: E402

TARGET = 1.0  # kquant's wall time over llama-quantize's, at the same thread count


def best_times(fns, repeat: int) -> list[float]:
    """Each function's best wall time of ``repeat`` runs, the functions taking turns run after run
    (a, b, a, b, ...), so that a slow spell of a shared machine hits both sides."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an F32/F16/BF16 llama GGUF (default: a random 8-layer model)")
    parser.add_argument("--mix", nargs="+", default=["Q4_K_M"], help=f"mixes to time, or 'all' ({', '.join(MIXES)})")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both (default: every CPU)")
    parser.add_argument("--big", action="store_true", help="a ~300M-weight F16 model instead of the small one")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is kept")
    args = parser.parse_args(argv)
    mixes = list(MIXES) if args.mix == ["all"] else args.mix

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            src = Path(args.model)
        elif args.big:  # about 300M weights, as issue 19 asks: 24 layers of 1024 wide, F16 like a download
            src = write_tiny_llama(
                tmp / "big-f16.gguf",
                n_layer=24,
                n_embd=1024,
                n_head=16,
                n_head_kv=4,
                n_ff=2816,
                n_vocab=32000,
                dtype="F16",
            )
        else:
            src = write_tiny_llama(
                tmp / "bench-f32.gguf", n_layer=8, n_embd=512, n_head=8, n_head_kv=2, n_ff=1536, n_vocab=2000
            )
        from gguf import GGUFReader

        n_weights = sum(int(t.n_elements) for t in GGUFReader(src).tensors)
        print(f"model: {src.name}, {n_weights / 1e6:.1f}M weights; threads: {args.threads} each")
        print(f"{'mix':<8} {'kquant s':>9} {'llama s':>9} {'ratio':>7}  same sha256")
        slow = differ = 0
        for mix in mixes:
            ours, theirs = tmp / f"{mix}.kquant.gguf", tmp / f"{mix}.llama.gguf"
            t_k, t_l = best_times(
                [
                    lambda ours=ours, mix=mix: quantize_gguf(
                        src, ours, mix, overwrite=True, progress=False, threads=args.threads
                    ),
                    lambda theirs=theirs, mix=mix: llama_quantize(src, theirs, mix, nthread=args.threads),
                ],
                args.repeat,
            )
            same = sha256(ours) == sha256(theirs)
            over = t_k / t_l > TARGET
            slow += over
            differ += not same
            flag = "  SLOW" if over else ""
            print(f"{mix:<8} {t_k:>9.3f} {t_l:>9.3f} {t_k / t_l:>6.2f}x  {'yes' if same else 'NO'}{flag}")
    print(f"target: at most {TARGET}x llama-quantize's wall time; {slow} mix(es) over it")
    if differ:
        print(f"{differ} file(s) differ from llama.cpp's: their times mean nothing until that is fixed")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
