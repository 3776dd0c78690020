"""llama.cpp's imatrix files: the GGUF format llama-imatrix writes, and the legacy .dat format.

    >>> from kquant import imatrix
    >>> imatrix.save(im, "tiny.imatrix.gguf")      # as llama-imatrix's save_imatrix
    >>> im = imatrix.load("tiny.imatrix.gguf")       # or a file llama-imatrix wrote

The GGUF imatrix format exactly as llama.cpp 0c1e57098 writes it (tools/imatrix/imatrix.cpp
``save_imatrix``, a GGUF v3 file, 32-byte alignment) and reads it (common/imatrix-loader.cpp
``common_imatrix_load``, then tools/quantize/quantize.cpp ``load_imatrix``). The file carries
no version number of its own; it is:

* metadata, in this order: ``general.type`` = "imatrix" (string), ``imatrix.datasets``
  (array of strings), ``imatrix.chunk_count`` (uint32), ``imatrix.chunk_size`` (uint32);
* two F32 tensors per entry, entries sorted by name: ``<name>.in_sum2`` with ggml shape
  ne = (n_cols, n_mat) and ``<name>.counts`` with ne = (1, n_mat) (a GGUF drops the
  trailing 1s, so a dense matrix's are 1-D: (n_cols,) and (1,)); counts are token counts
  stored as floats (rounded with lround on reading).

Notebook 10 saves one; ``kquant.quantize_gguf(imatrix=...)`` reads them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from kquant.errors import KQuantError
from kquant.formats import check_importance
from kquant.gguf.reader import GGUFFile, open_gguf
from kquant.gguf.writer import atomic_output
from kquant.imatrix.stats import Entry, Imatrix

T = GGMLQuantizationType

GENERAL_TYPE = "general.type"
DATASETS = "imatrix.datasets"
CHUNK_COUNT = "imatrix.chunk_count"
CHUNK_SIZE = "imatrix.chunk_size"
SUMS_SUFFIX = ".in_sum2"
COUNTS_SUFFIX = ".counts"


def save(im: Imatrix, path) -> Path:
    """Write llama.cpp's GGUF imatrix file (as llama-imatrix's save_imatrix), atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise KQuantError(f"cannot write {path}: the folder {path.parent} does not exist")
    if not im.entries:
        raise KQuantError("this imatrix has no entries: collect some activations first")
    if not im.datasets:
        raise KQuantError(
            "give the imatrix a dataset name (im.datasets = ['my-text.txt']): gguf-py cannot write an empty "
            "imatrix.datasets array"
        )
    if im.legacy:
        raise KQuantError(
            "this imatrix came from a legacy .dat file, whose sums are already divided by their counts: "
            "convert it with llama-imatrix --in-file old.dat -o new.gguf, or quantize with it directly"
        )
    for name, e in im.entries.items():
        if np.ndim(e.in_sum2) != 2 or np.shape(e.in_sum2)[0] != np.size(e.counts) or np.ndim(e.counts) != 1:
            raise KQuantError(
                f"entry {name}: in_sum2 must be (n_mat, n_cols) with one count per row, "
                f"got {np.shape(e.in_sum2)} and {np.shape(e.counts)} counts"
            )
    try:
        with atomic_output(path, overwrite=True) as tmp:  # like numpy.save, saving again replaces the file
            w = GGUFWriter(tmp, arch="imatrix")
            del w.kv_data[0]["general.architecture"]  # an imatrix file has none; GGUFWriter adds it on its own
            w.add_key_value(GENERAL_TYPE, "imatrix", GGUFValueType.STRING)
            w.add_key_value(DATASETS, list(im.datasets), GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
            w.add_key_value(CHUNK_COUNT, int(im.chunk_count), GGUFValueType.UINT32)
            w.add_key_value(CHUNK_SIZE, int(im.chunk_size), GGUFValueType.UINT32)
            for name in im.names():  # std::sort: byte order, which Python's str order equals for UTF-8
                e = im.entries[name]
                n_mat = len(e.counts)
                sums = np.ascontiguousarray(e.in_sum2, dtype=np.float32)
                counts = e.counts.astype(np.float32).reshape(n_mat, 1)
                # ggml_n_dims drops trailing 1s from ne, so a dense matrix's tensors are 1-D.
                w.add_tensor(name + SUMS_SUFFIX, sums.reshape(-1) if n_mat == 1 else sums)
                w.add_tensor(name + COUNTS_SUFFIX, counts.reshape(-1) if n_mat == 1 else counts)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
    except OSError as e:
        raise KQuantError(f"could not write {path}: {e.strerror or e}; nothing was written") from e
    im.file = str(path)
    return path


def load(path) -> Imatrix:
    """Read an imatrix file: llama.cpp's GGUF format, or the legacy .dat format."""
    path = Path(path)
    if not path.is_file():  # before any read: a FIFO would block it, a device never end it
        what = "no such file" if not path.exists() else "a folder" if path.is_dir() else "not a regular file"
        raise KQuantError(f"{path}: {what}; pass the imatrix file llama-imatrix or kquant wrote")
    with open(path, "rb") as f:
        magic = f.read(4)
    im = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    im.file = str(path)
    return im


def _load_gguf(path: Path) -> Imatrix:
    """common_imatrix_load, with llama-quantize's checks (metadata present, pairs complete, F32)."""
    with open_gguf(path) as r:
        return _read_imatrix(path, r)


def _read_imatrix(path: Path, r: GGUFFile) -> Imatrix:
    kind = _string(r, GENERAL_TYPE)
    if kind not in (None, "imatrix"):
        raise KQuantError(
            f"{path} is a GGUF {kind!r}, not an imatrix (general.type is not 'imatrix'): pass the file "
            "llama-imatrix or kquant.imatrix wrote"
        )
    if not r.tensors:
        raise KQuantError(f"{path} holds no tensors: llama.cpp refuses an imatrix without data")
    if not any(t.name.endswith((SUMS_SUFFIX, COUNTS_SUFFIX)) for t in r.tensors):
        raise KQuantError(f"{path} has no <name>.in_sum2 / <name>.counts tensors: it is not an imatrix file")
    missing = [k for k in (DATASETS, CHUNK_COUNT, CHUNK_SIZE) if k not in r.fields]
    if missing:
        raise KQuantError(
            f"{path} lacks the imatrix metadata {', '.join(missing)}: llama-quantize refuses it (is it an imatrix "
            "file?)"
        )
    f = r.fields[DATASETS]
    if f.type != GGUFValueType.ARRAY or (len(f.value) and f.item_type != GGUFValueType.STRING):
        raise KQuantError(f"{path}: {DATASETS} must be an array of strings")
    datasets = f.value.decode() if len(f.value) else []

    pairs: dict[str, dict[str, object]] = {}
    for t in r.tensors:
        for suffix in (SUMS_SUFFIX, COUNTS_SUFFIX):
            if t.name.endswith(suffix) and len(t.name) > len(suffix):
                pairs.setdefault(t.name[: -len(suffix)], {})[suffix] = t
    entries = {}
    for name, pair in sorted(pairs.items()):
        if len(pair) != 2:
            raise KQuantError(
                f"{path}: {name} has {'no .counts' if SUMS_SUFFIX in pair else 'no .in_sum2'} tensor; the file is "
                "damaged, write it again"
            )
        sums_t, counts_t = pair[SUMS_SUFFIX], pair[COUNTS_SUFFIX]
        if sums_t.type != T.F32 or counts_t.type != T.F32:
            raise KQuantError(f"{path}: the sums and counts of {name} must be F32 (llama.cpp refuses other types)")
        sums = np.asarray(sums_t.data, dtype=np.float32).reshape(-1)
        counts = np.asarray(counts_t.data, dtype=np.float32).reshape(-1)
        if counts.size == 0 or sums.size % counts.size:
            raise KQuantError(
                f"{path}: {name} has {sums.size} sums for {counts.size} counts, not a whole row per count; the "
                "file is damaged"
            )
        if not (np.isfinite(counts).all() and (counts >= 0).all()):
            raise KQuantError(f"{path}: the counts of {name} must be finite and >= 0; the file is damaged")
        entries[name] = Entry(sums.reshape(counts.size, -1).copy(), _lround(counts))
    return Imatrix(entries, datasets, _uint(r, CHUNK_COUNT, path), _uint(r, CHUNK_SIZE, path))


def _lround(x: np.ndarray) -> np.ndarray:
    """C's lround: halves away from zero (numpy's rint rounds them to even)."""
    return (np.sign(x) * np.floor(np.abs(x).astype(np.float64) + 0.5)).astype(np.int64)


def _string(r: GGUFFile, key: str):
    f = r.fields.get(key)
    if f is None or f.type != GGUFValueType.STRING:
        return None
    return f.value.decode("utf-8", errors="replace")


def _uint(r: GGUFFile, key: str, path: Path) -> int:
    f = r.fields[key]
    if f.type != GGUFValueType.UINT32:
        raise KQuantError(f"{path}: {key} must be a uint32 (it is {f.type.name})")
    return int(f.value)


def _load_legacy(path: Path) -> Imatrix:
    """The legacy format (common_imatrix_load_legacy), little-endian int32 fields throughout:

    n_entries, then per entry: name length, name, ncall, nval, nval float32
    ((sum / count) * ncall); then optionally chunk count, dataset length, dataset name.
    """
    data = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise KQuantError(
                f"{path} is not a GGUF imatrix and ends in the middle of {what} as a legacy .dat imatrix: is it an "
                "imatrix file at all?"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("the entry count")
    if n_entries < 1:
        raise KQuantError(f"{path} is neither a GGUF nor a legacy imatrix with data (entry count {n_entries})")
    entries = {}
    for i in range(n_entries):
        n = i32(f"entry {i}'s name length")
        if n < 0:
            raise KQuantError(f"{path}: entry {i} has a negative name length; the file is damaged")
        name = take(n, f"entry {i}'s name").decode("utf-8", errors="replace")
        ncall, nval = i32(f"entry {name}"), i32(f"entry {name}")
        if nval < 1:
            raise KQuantError(f"{path}: entry {name} has {nval} values; the file is damaged")
        sums = np.frombuffer(take(4 * nval, f"the values of {name}"), dtype="<f4").astype(np.float32)
        entries[name] = Entry(sums.reshape(1, -1), np.array([ncall], dtype=np.int64))
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):  # the trailing chunk count and dataset name are optional
        chunk_count = i32("the chunk count")
        if pos + 4 <= len(data):
            n = i32("the dataset name length")
            if n > 0 and pos + n <= len(data):
                datasets = [take(n, "the dataset name").split(b"\0")[0].decode("utf-8", errors="replace")]
    return Imatrix(entries, datasets, chunk_count, 0, legacy=True)


def as_importance(imatrix) -> tuple[dict[str, np.ndarray], Imatrix | None]:
    """The name -> importance table llama-quantize would pass, from an Imatrix, a file or a plain dict."""
    if imatrix is None:
        return {}, None
    if isinstance(imatrix, (str, Path)):
        imatrix = load(imatrix)
    if isinstance(imatrix, Imatrix):
        if not imatrix.entries:
            raise KQuantError("the imatrix has no entries: llama-quantize refuses an imatrix without data")
        vectors = imatrix.vectors()
        source = imatrix
    elif isinstance(imatrix, dict):
        vectors = {str(k): np.asarray(v) for k, v in imatrix.items()}
        source = None
    else:
        raise KQuantError(
            f"imatrix must be an Imatrix, a file path or a dict name -> importance vector, not {type(imatrix).__name__}"
        )
    if not vectors:
        raise KQuantError("the imatrix has no entries: llama-quantize refuses an imatrix without data")
    for name, v in vectors.items():
        v = np.asarray(v)
        if v.ndim != 1 or v.size == 0:
            raise KQuantError(
                f"imatrix entry {name} has shape {v.shape}: give one flat vector of importances per tensor"
            )
        try:
            vectors[name] = check_importance(v, v.size)
        except KQuantError as e:
            raise KQuantError(f"imatrix entry {name}: {e}") from None
    return vectors, source


# The keys the llama-quantize tool (tools/quantize/quantize.cpp, through kv overrides) adds
# after general.file_type when given --imatrix; the library function adds none.
QUANTIZE_FILE = "quantize.imatrix.file"
QUANTIZE_DATASET = "quantize.imatrix.dataset"
QUANTIZE_N_ENTRIES = "quantize.imatrix.entries_count"
QUANTIZE_N_CHUNKS = "quantize.imatrix.chunks_count"


def quantize_keys(source, loaded: Imatrix | None, n_entries: int) -> list[tuple[str, bytes | int]]:
    """The quantize.imatrix.* keys llama-quantize writes, in its order; none for a plain dict.

    ``source`` is what was passed as the imatrix (a path or an Imatrix), ``loaded`` the
    Imatrix read from it. Strings are bytes cut to 127 (the tool copies them into a 128-byte
    field); counts are ints (uint32 in the file).
    """
    if loaded is None:
        return []
    keys: list[tuple[str, bytes | int]] = []
    name = str(source) if isinstance(source, (str, Path)) else loaded.file
    if name is not None:  # an Imatrix never saved has no file
        keys.append((QUANTIZE_FILE, name.encode()[:127]))
    if loaded.datasets:
        keys.append((QUANTIZE_DATASET, loaded.datasets[0].encode()[:127]))
    keys.append((QUANTIZE_N_ENTRIES, int(n_entries)))
    if loaded.chunk_count > 0:
        keys.append((QUANTIZE_N_CHUNKS, int(loaded.chunk_count)))
    return keys
