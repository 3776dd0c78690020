"""Quantized files and their scores, kept in kquant's cache folder and keyed by content.

Notebooks 08-10 (and ``kquant demo``) quantize the bundled model into the same mixes and score
the same files on the same held-out text; each would otherwise redo that work. Here a result is
computed once, when missing, and found again by its key:

* ``quantized(src, mix, name, **options)``: the file ``quantize_gguf(src, …, mix, **options)`` writes;
* ``compare(paths, **kwargs)``: ``evaluate.compare``'s table, each file's scores kept separately;
* ``made(kind, make, name, **parts)`` and ``arrays(kind, compute, **parts)``: any other file or
  named arrays (the methods of notebooks 11-16: Hessians, sensitivities, GPTQ's files), keyed by
  ``parts``, which must name everything the result depends on (``sha256(file)`` for a file).

A key is the sha256 of everything the result depends on: the bytes of the input files (the
source model, an imatrix file, the scored file and its reference), the mix and options, and the
versions of kquant and of llama.cpp (llama-cpp-python), so an edited model, another imatrix or
an upgrade never gets an old result. Entries are written with the one atomic writer, so an
interrupted run leaves no half-written entry. Delete the folder (``cache_dir()``) to start over.

The cache keeps itself under ``KQUANT_CACHE_MB`` megabytes (default 1024): after a new entry is
written, the least recently used entries are deleted until it fits, except those used in the
last hour, which a running notebook may still be reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from kquant.colab import cache_dir
from kquant.gguf.summary import sha256  # files are keyed by what they hold, not by name or date
from kquant.gguf.writer import atomic_output
from kquant.model import evaluate
from kquant.quantize_file import quantize_gguf

_FORMAT = 1  # bump when what is stored changes shape
LIMIT_MB = 1024  # KQUANT_CACHE_MB overrides
_RECENT_S = 3600  # entries used this recently are never evicted


def folder() -> Path:
    """Where the entries live: ``<kquant's cache folder>/results``."""
    return cache_dir() / "results"


def versions() -> dict:
    """The code a result depends on: kquant's version and llama-cpp-python's (which vendors llama.cpp)."""
    import kquant

    try:
        llama = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        llama = None
    return {"kquant": kquant.__version__, "llama-cpp-python": llama, "format": _FORMAT}


def key(kind: str, **parts) -> str:
    """The sha256 of ``kind``, ``parts`` (JSON-able) and the versions: one entry's name."""
    text = json.dumps({"kind": kind, "parts": parts, "versions": versions()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def quantized(src, mix: str, name: str | None = None, *, imatrix=None, **options) -> Path:
    """The file ``quantize_gguf(src, dst, mix, imatrix=…, **options)`` writes, from the cache (made when missing).

    ``name``: the file's name (default ``<src stem>-<mix>.gguf``); it lies in a folder named by its key.
    """
    src = Path(src)
    k = key(
        "quantized",
        src=sha256(src),
        mix=mix,
        imatrix=sha256(imatrix) if imatrix is not None else None,
        options=options,
    )
    path = folder() / k[:32] / (name or f"{src.stem}-{mix}.gguf")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # quantize_gguf writes through atomic_output; overwrite: another process may have made it meanwhile.
        quantize_gguf(src, path, mix, imatrix=imatrix, overwrite=True, progress=False, **options)
        evict(keep=path.parent)
    return _used(path)


def made(kind: str, make, name: str, **parts) -> Path:
    """The file ``make(path)`` writes at ``path``, from the cache (made when missing).

    ``make`` must write ``path`` atomically (``quantize_gguf`` and ``atomic_output`` do) and may
    overwrite it: another process may have made the same entry meanwhile.
    """
    path = folder() / key(kind, **parts)[:32] / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        if not path.exists():
            raise RuntimeError(f"cache.made({kind!r}): make() did not write {path}")
        evict(keep=path.parent)
    return _used(path)


def arrays(kind: str, compute, **parts) -> dict[str, np.ndarray]:
    """``compute()``'s {name: array} from the cache (computed when missing); stored as .npz, no pickles."""
    entry = folder() / kind / f"{key(kind, **parts)}.npz"
    if entry.exists():
        with np.load(_used(entry), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    result = {k: np.asarray(v) for k, v in compute().items()}
    entry.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(entry, overwrite=True) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **result)
    evict(keep=entry)
    return result


def scores(path, reference: evaluate.Scores | None = None, *, reference_key: str | None = None, **kwargs):
    """``evaluate.evaluate(path, reference, **kwargs)`` from the cache (computed when missing).

    Returns (scores, its key); pass that key as ``reference_key`` with ``reference`` when scoring
    other files against it, so their keys depend on the reference's content too.
    """
    k = key("scores", file=sha256(path), reference=reference_key, kwargs=kwargs)
    entry = folder() / "scores" / f"{k}.npz"
    if entry.exists():
        return _load(_used(entry), Path(path)), k
    s = evaluate.evaluate(path, reference, **kwargs)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(entry, overwrite=True) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **_arrays(s))
    evict(keep=entry)
    return s, k


def compare(paths, **kwargs) -> evaluate.ComparisonTable:
    """``evaluate.compare(paths, **kwargs)``, each file's scores from the cache (computed when missing)."""
    paths = [Path(p) for p in paths]
    if not paths:
        return evaluate.compare(paths, **kwargs)  # its error message
    ref, ref_key = scores(paths[0], **kwargs)
    return evaluate.ComparisonTable([ref] + [scores(p, ref, reference_key=ref_key, **kwargs)[0] for p in paths[1:]])


def entries() -> list[Path]:
    """Every entry: a folder holding one cached file, or one .npz of arrays or scores."""
    root = folder()
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and len(p.name) == 32:
            out.append(p)  # made / quantized: <key>/<name>
        elif p.is_dir():
            out += list(p.glob("*.npz"))  # arrays / scores: <kind>/<key>.npz
    return out


def evict(limit_mb: float | None = None, keep: Path | None = None) -> int:
    """Delete the least recently used entries until the cache holds at most ``limit_mb``; bytes freed.

    Never deleted: ``keep`` and entries used within the last hour (a notebook may hold their path).
    """
    if limit_mb is None:
        limit_mb = float(os.environ.get("KQUANT_CACHE_MB") or LIMIT_MB)
    sized = [(e, _size(e), e.stat().st_mtime) for e in entries()]
    total, freed = sum(size for _, size, _ in sized), 0
    now = time.time()
    for e, size, used in sorted(sized, key=lambda t: t[2]):  # oldest use first
        if total - freed <= limit_mb * 2**20:
            break
        if e == keep or now - used < _RECENT_S:
            continue
        if e.is_dir():
            shutil.rmtree(e, ignore_errors=True)
        else:
            e.unlink(missing_ok=True)
        freed += size
    return freed


def _size(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir()) if entry.is_dir() else entry.stat().st_size


def _used(path: Path) -> Path:
    """Mark an entry as just used (its mtime, and its folder's for a cached file), for ``evict``."""
    for p in (path, path.parent) if path.parent.name and len(path.parent.name) == 32 else (path,):
        try:
            os.utime(p)
        except OSError:
            pass  # a read-only cache still serves its entries
    return path


# What a Scores holds, as arrays for np.savez (no pickles): the numbers as JSON, every array by name.
_NUMBERS = ["size_mb", "bpw", "perplexity", "kl", "top1", "accuracy", "changed", "tokens_per_s"]


def _arrays(s: evaluate.Scores) -> dict:
    arrays = {"numbers": np.array(json.dumps({n: getattr(s, n) for n in _NUMBERS}))}
    arrays["n_docs"] = np.array(len(s.logits))
    for i, (lg, tokens) in enumerate(zip(s.logits, s.tokens)):
        arrays[f"logits/{i}"] = lg
        arrays[f"tokens/{i}"] = np.asarray(tokens, dtype=np.int64)
    for group in ("results", "per_doc"):
        for name, value in getattr(s, group).items():
            arrays[f"{group}/{name}"] = value
    arrays["flips"] = s.flips
    return arrays


def _load(entry: Path, path: Path) -> evaluate.Scores:
    with np.load(entry, allow_pickle=False) as z:
        numbers = json.loads(str(z["numbers"]))
        n = int(z["n_docs"])
        groups = ("results", "per_doc")
        grouped = {g: {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(g + "/")} for g in groups}
        return evaluate.Scores(
            path=path,
            **numbers,
            logits=[z[f"logits/{i}"] for i in range(n)],
            tokens=[z[f"tokens/{i}"].tolist() for i in range(n)],
            results=grouped["results"],
            per_doc=grouped["per_doc"],
            flips=z["flips"],
        )
