"""The command line: ``python -m kquant quantize | inspect | plan | demo`` (also installed as ``kquant``).

    python -m kquant quantize model-f16.gguf model-Q4_K_M.gguf Q4_K_M   # as llama-quantize
    python -m kquant inspect model-Q4_K_M.gguf                          # metadata and tensor table
    python -m kquant plan model-f16.gguf Q4_K_M                         # each tensor's type and why
    python -m kquant demo                                               # the bundled model, every mix, compared

Expected problems (a missing file, a corrupt GGUF, an existing output, ...) print one
line on stderr and exit with status 1; no traceback.

Notebook 00 points to it; so does the README.
"""

from __future__ import annotations

import argparse
import os
import sys

from kquant import __version__
from kquant.errors import KQuantError
from kquant.mixes import IMATRIX_MIXES, LLAMA_CPP_VERSION, MIXES


def main(argv=None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":  # kquant.demo parses its own options (and its own --help)
        from kquant.demo import main as demo_main

        return demo_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        args.run(args)
    except KQuantError as e:
        print(f"kquant {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # unreadable input, full disk, ...: the system's own message says it
        print(f"kquant {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kquant {args.command}: interrupted; no output was written", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"kquant {args.command}: error: out of memory; no output was written", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in kquant, not bad input: still one line, and how to see more
        if os.environ.get("KQUANT_DEBUG"):
            raise
        print(
            f"kquant {args.command}: internal error ({type(e).__name__}: {e}); no output was written. "
            "Rerun with KQUANT_DEBUG=1 for the traceback and report it",
            file=sys.stderr,
        )
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kquant",
        description=f"llama.cpp's quantization in readable numpy, byte-exact with llama.cpp {LLAMA_CPP_VERSION}.",
    )
    parser.add_argument("--version", action="version", version=f"kquant {__version__} (llama.cpp {LLAMA_CPP_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    mixes = ", ".join(MIXES) + f" ({', '.join(IMATRIX_MIXES)} with --imatrix)"

    q = sub.add_parser(
        "quantize",
        help="quantize a GGUF model with a llama.cpp mix",
        description="Quantize an F32/F16/BF16 llama GGUF exactly as llama-quantize does (same bytes).",
    )
    q.add_argument("input", help="the F32, F16 or BF16 GGUF model")
    q.add_argument("output", help="the GGUF file to write (written under a temporary name, then renamed)")
    q.add_argument("mix", help=f"one of {mixes}")
    _add_mix_options(q)
    q.add_argument("--force", action="store_true", help="replace the output file if it exists")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    q.add_argument("--threads", type=int, metavar="N", help="worker processes (default: every CPU, as llama-quantize)")
    q.set_defaults(run=_quantize)

    i = sub.add_parser(
        "inspect",
        help="show a GGUF file's metadata and tensors",
        description="Show a GGUF file's metadata and a table of its tensors: name, shape, type, bytes, bits per "
        "weight.",
    )
    i.add_argument("file", help="any GGUF file, quantized or not")
    i.set_defaults(run=_inspect)

    p = sub.add_parser(
        "plan",
        help="show the type each tensor would get, and why",
        description="Show the type llama-quantize would give each tensor, with the rule that decides it. Writes "
        "nothing.",
    )
    p.add_argument("file", help="the F32, F16 or BF16 GGUF model")
    p.add_argument("mix", help=f"one of {mixes}")
    _add_mix_options(p)
    p.set_defaults(run=_plan)

    sub.add_parser(
        "demo",
        add_help=False,  # its options and --help belong to kquant.demo
        help="quantize the bundled model with kquant and llama.cpp, check the bytes agree, compare the files",
    )
    return parser


def _add_mix_options(p: argparse.ArgumentParser) -> None:
    """The llama-quantize options kquant follows, with the same names."""
    p.add_argument("--pure", action="store_true", help="give every matrix the mix's default type (no per-tensor rules)")
    p.add_argument(
        "--tensor-type",
        action="append",
        default=[],
        metavar="REGEX=TYPE",
        help="give tensors whose name matches REGEX this type, e.g. attn_v=q8_0 (repeatable; first match wins)",
    )
    p.add_argument("--output-tensor-type", metavar="TYPE", help="type for output.weight")
    p.add_argument("--token-embedding-type", metavar="TYPE", help="type for token_embd.weight")
    p.add_argument(
        "--imatrix",
        metavar="FILE",
        help="importance matrix file (llama-imatrix's GGUF or .dat format, or kquant.imatrix's)",
    )


def _mix_options(args) -> dict:
    overrides = []
    for item in args.tensor_type:
        pattern, sep, qtype = item.rpartition("=")
        if not sep or not pattern or not qtype:
            raise KQuantError(f"--tensor-type {item!r}: write it as REGEX=TYPE, e.g. attn_v=q8_0")
        overrides.append((pattern, qtype))
    return dict(
        pure=args.pure,
        overrides=overrides,
        output_type=args.output_tensor_type,
        token_embd_type=args.token_embedding_type,
        imatrix=args.imatrix,
    )


def _quantize(args) -> None:
    from kquant.quantize_file import quantize_gguf

    summary = quantize_gguf(
        args.input,
        args.output,
        args.mix,
        overwrite=args.force,
        progress=not args.quiet,
        threads=args.threads,
        **_mix_options(args),
    )
    if not args.quiet:
        print(summary.table())
        print(f"wrote {summary.path}")


def _inspect(args) -> None:
    from kquant.gguf.summary import inspect_gguf

    summary = inspect_gguf(args.file)
    width = max([len(k) for k, _ in summary.metadata] + [3])
    print(f"{args.file}: {len(summary.metadata)} metadata keys, {len(summary.rows)} tensors\n")
    for key, value in summary.metadata:
        print(f"{key:<{width}}  {value}")
    print()
    print(summary.table())


def _plan(args) -> None:
    from kquant.gguf.summary import plan_summary
    from kquant.quantize_file import plan_gguf

    choices = plan_gguf(args.file, args.mix, **_mix_options(args))
    print(plan_summary(args.file, choices).table(reasons=True))


if __name__ == "__main__":
    sys.exit(main())
