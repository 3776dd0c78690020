"""A byte-level BPE tokenizer in GPT-2's style, learned from a corpus: what llama.cpp's
``gpt2`` tokenizer (with pre-tokenizer ``gpt-2``) reads back from a GGUF.

The vocabulary is ``<s>``, ``</s>``, the 256 bytes (each written as one printable
character, GPT-2's ``bytes_to_unicode``: space is ``Ġ``, newline ``Ċ``), then one token per
learned merge. llama.cpp applies the merges itself, in rank order, inside each piece the
GPT-2 regex cuts the text into; so only the merge list has to be right, and encoding here
is never needed: the training script tokenizes with llama.cpp itself.

Merges that touch a digit are never learned. Digits stay one token each, so ``347`` is
``3``, ``4``, ``7`` and a sum is a sequence of digit steps the model can learn, not a
lookup over thousands of number tokens.

Notebook 07 shows its vocabulary inside the GGUF file.
"""

from __future__ import annotations

import re
from collections import Counter

from kquant.errors import KQuantError

SPECIALS = ["<s>", "</s>"]
# GPT-2's pre-tokenizer, ASCII version (the corpus is ASCII); llama.cpp's "gpt-2" uses the
# Unicode classes \p{L} and \p{N}, which agree with these on ASCII text.
PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (the vocabulary's alphabet)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)  # unprintable bytes move past 255
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def learn(text: str, n_merges: int, min_count: int = 2) -> tuple[list[str], list[str]]:
    """Learn up to ``n_merges`` merges from ``text``; return (tokens, merges).

    Stops early when no pair occurs ``min_count`` times. Ties between equally frequent
    pairs go to the pair first seen, so the result depends only on the text.
    """
    if n_merges < 0:
        raise KQuantError(f"n_merges = {n_merges}: the number of merges cannot be negative")
    byte_char = bytes_to_unicode()
    # A templated corpus has few distinct pieces: count each once, weight by frequency.
    words = Counter(PRETOKENIZE.findall(text.replace("<s>", "").replace("</s>", "")))
    seqs = {w: [byte_char[b] for b in w.encode()] for w in words}
    tokens = SPECIALS + [byte_char[b] for b in range(256)]
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, seq in seqs.items():
            for a, b in zip(seq, seq[1:]):
                if not (_has_digit(a) or _has_digit(b)):
                    pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda kv: kv[1])  # max keeps the first of equals
        if count < min_count:
            break
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        for w, seq in seqs.items():
            seqs[w] = _merge(seq, a, b)
    return tokens, merges


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def _merge(seq: list[str], a: str, b: str) -> list[str]:
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out
