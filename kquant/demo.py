"""``python -m kquant demo``: the whole story in one command, offline, in about a minute.

1. Quantize the bundled model (kquant/data/kquant-tiny-f16.gguf) to each llama.cpp mix with
   kquant's numpy code, and again with llama.cpp's own ``llama_model_quantize``.
2. Check the two files are the same bytes (sha256).
3. Run one prompt through each file: a story, a sum and a fact question.
4. Print the table: size, bits per weight, perplexity, KL divergence and top-1 agreement
   against F16, task accuracy, tokens per second (kquant.model.evaluate.compare), each score
   with its 95 % interval (bootstrap over the held-out documents or tasks).

``--model`` runs it on another F16/F32 llama GGUF (for example one from ``kquant.model.hub.fetch``);
``--keep DIR`` keeps the quantized files, which otherwise live in a temporary folder.

Notebook 08 runs the same comparison, cell by cell.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from kquant.errors import KQuantError
from kquant.gguf.summary import sha256
from kquant.llamacpp import load as load_llama_cpp
from kquant.model import corpus, evaluate, hub, runner
from kquant.reference import model_quantize

DEMO_MIXES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
STORY_PROMPT = "Once upon a time"


def main(argv=None) -> int:
    # --help shows this module's docstring as plain text: no reStructuredText markup, its own line breaks.
    ap = argparse.ArgumentParser(
        prog="kquant demo",
        description=__doc__.replace("``", "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", help="an F16/F32 llama GGUF (default: the bundled model)")
    ap.add_argument(
        "--mixes", nargs="+", default=list(DEMO_MIXES), metavar="MIX", help=f"default: {' '.join(DEMO_MIXES)}"
    )
    ap.add_argument("--keep", metavar="DIR", help="write the quantized files into DIR and keep them")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a busy 2-core machine)")
    args = ap.parse_args(argv)
    try:
        load_llama_cpp()  # every step needs llama.cpp: without it, say so before any work
        source = Path(args.model) if args.model else hub.bundled()
        if not source.is_file():
            raise KQuantError(f"{source}: no such file")
        if args.keep:
            out = Path(args.keep)
            out.mkdir(parents=True, exist_ok=True)
            _demo(source, out, args.mixes, args.threads)
        else:
            with tempfile.TemporaryDirectory(prefix="kquant-demo-") as tmp:
                _demo(source, Path(tmp), args.mixes, args.threads)
    except KQuantError as e:
        print(f"kquant demo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kquant demo: interrupted", file=sys.stderr)
        return 130
    return 0


def _demo(source: Path, out: Path, mixes, threads: int) -> None:
    from kquant.quantize_file import quantize_gguf  # imports the mixes; only needed here

    start = time.perf_counter()
    print(f"model: {source} ({source.stat().st_size / 1e6:.1f} MB)\n")
    print("1. quantize with kquant (numpy) and with llama.cpp; compare the bytes")
    files = [source]
    for mix in mixes:
        ours = out / f"{source.stem}-{mix}.gguf"
        theirs = out / f".{source.stem}-{mix}-llama.cpp.gguf"
        t0 = time.perf_counter()
        quantize_gguf(source, ours, mix, overwrite=True, progress=False)
        t1 = time.perf_counter()
        model_quantize(source, theirs, mix)
        same = sha256(ours) == sha256(theirs)
        theirs.unlink()
        print(
            f"   {mix:7s} {ours.stat().st_size / 1e6:6.2f} MB   kquant {t1 - t0:4.1f} s   "
            f"same bytes as llama.cpp: {'yes' if same else 'NO'}"
        )
        if not same:
            raise KQuantError(f"kquant's {mix} file differs from llama.cpp's: please report this as a bug")
        files.append(ours)

    print("\n2. one prompt through each file (story sampled at T=0.8, seed 1; answers greedy)")
    sum_task = next(t for t in evaluate.held_out_tasks() if t.kind == "sums" and len(t.prompt) == len("47 + 89 ="))
    fact_task = next(t for t in evaluate.held_out_tasks() if t.kind == "facts")
    for path in files:
        m = runner.load(path, n_ctx=256, n_threads=threads)
        story = m.generate(STORY_PROMPT, max_tokens=48, seed=1).replace("\n", " ")
        answers = [
            (t, m.generate(t.prompt, max_tokens=8, temperature=0.0).split("\n")[0]) for t in (sum_task, fact_task)
        ]
        print(f"   {_label(path)}: {STORY_PROMPT}{story}")
        for t, got in answers:
            mark = "right" if got + "\n" == t.answer else f"wrong, expected{t.answer.rstrip()}"
            print(f"   {'':8s}  {t.prompt}{got}   ({mark})")

    print(f"\n3. held-out scores against {source.name} (the KV cache is F32, so only the weights differ)")
    table = evaluate.compare(files, n_threads=threads)
    for r in table.rows:
        r.path = Path(_label(r.path))
    print(table)
    n_sums = sum(t.kind == "sums" for t in evaluate.held_out_tasks())
    print(
        f"\nsums acc: {n_sums} held-out sums, none seen in training; facts acc: the {corpus.N_FACTS} made-up "
        f"capitals it memorised;\nchanged: share of those {n_sums + corpus.N_FACTS} answers that are right in one "
        f"file and wrong in the other (accuracy can hold while answers change);\n± is half the 95 % interval: two "
        f"files differ by more than noise only where evaluate.difference(a, b, metric) excludes 0"
    )
    print(f"done in {time.perf_counter() - start:.0f} s")


def _label(path: Path) -> str:
    return Path(path).stem.rsplit("-", 1)[-1].upper()


if __name__ == "__main__":
    sys.exit(main())
