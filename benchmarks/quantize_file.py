"""Time kquant.quantize_gguf against llama.cpp's llama_model_quantize on the same model and mix.

    python benchmarks/quantize_file.py                      # a random 8-layer llama, Q4_K_M
    python benchmarks/quantize_file.py model-f16.gguf --mix Q4_K_M Q8_0 --repeat 3

Both run on one thread (kquant is single-threaded numpy; llama.cpp is given nthread=1,
or --threads N to see what its threads buy). Prints each time (best of --repeat), the
ratio kquant / llama.cpp, and whether the two files have the same sha256.
"""

from __future__ import annotations

import argparse
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


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an F32/F16/BF16 llama GGUF (default: a random 8-layer model)")
    parser.add_argument("--mix", nargs="+", default=["Q4_K_M"], help=f"mixes to time, or 'all' ({', '.join(MIXES)})")
    parser.add_argument("--threads", type=int, default=1, help="threads for llama.cpp (kquant uses one)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is kept")
    args = parser.parse_args(argv)
    mixes = list(MIXES) if args.mix == ["all"] else args.mix

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            src = Path(args.model)
        else:
            src = write_tiny_llama(
                tmp / "bench-f32.gguf", n_layer=8, n_embd=512, n_head=8, n_head_kv=2, n_ff=1536, n_vocab=2000
            )
        from gguf import GGUFReader

        n_weights = sum(int(t.n_elements) for t in GGUFReader(src).tensors)
        print(f"model: {src.name}, {n_weights / 1e6:.1f}M weights; llama.cpp threads: {args.threads}; kquant: 1 thread")
        print(f"{'mix':<8} {'kquant s':>9} {'llama s':>9} {'ratio':>7}  same sha256")
        for mix in mixes:
            ours, theirs = tmp / f"{mix}.kquant.gguf", tmp / f"{mix}.llama.gguf"
            t_k = best_time(
                lambda ours=ours, mix=mix: quantize_gguf(src, ours, mix, overwrite=True, progress=False), args.repeat
            )
            t_l = best_time(
                lambda theirs=theirs, mix=mix: llama_quantize(src, theirs, mix, nthread=args.threads), args.repeat
            )
            same = sha256(ours) == sha256(theirs)
            print(f"{mix:<8} {t_k:>9.3f} {t_l:>9.3f} {t_k / t_l:>6.1f}x  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
