"""The cache of quantized files and scores (kquant.model.cache): the same results, never stale ones.

A cached result must equal a fresh one, be served again without recomputing, and never be
served for changed input: the key is the content, so an edited source file gets a fresh result.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kquant.gguf import summary
from kquant.model import cache, evaluate, hub
from kquant.quantize_file import quantize_gguf

pytest.importorskip("llama_cpp")

SMALL = {"n_docs": 2, "n_sums": 10, "speed_tokens": 4}  # a short evaluation: only equality is under test


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KQUANT_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _edited_copy(tmp_path, name="edited.gguf"):
    """The bundled model with one weight's lowest mantissa bit flipped: still valid, other bytes."""
    path = tmp_path / name
    shutil.copyfile(hub.bundled(), path)
    data = bytearray(path.read_bytes())
    data[len(data) - 64] ^= 1  # in the last tensor's data, the low byte of an F16/F32 value
    path.write_bytes(bytes(data))
    return path


def _no_recompute(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("recomputed although the cache holds the result")

    monkeypatch.setattr(cache, "quantize_gguf", refuse)
    monkeypatch.setattr(evaluate, "evaluate", refuse)


def test_a_cached_file_is_quantize_ggufs_file_made_once(tmp_path, cache_folder, monkeypatch):
    src = tmp_path / "model.gguf"
    shutil.copyfile(hub.bundled(), src)
    path = cache.quantized(src, "Q8_0", "tiny-Q8_0.gguf")
    assert path.name == "tiny-Q8_0.gguf" and cache_folder in path.parents
    fresh = quantize_gguf(src, tmp_path / "fresh.gguf", "Q8_0", progress=False).path
    assert summary.sha256(path) == summary.sha256(fresh)
    with monkeypatch.context() as m:
        _no_recompute(m)
        assert cache.quantized(src, "Q8_0", "tiny-Q8_0.gguf") == path
    # Another mix or another source: another entry, never the old file.
    assert cache.quantized(src, "Q4_0", "tiny-Q8_0.gguf") != path


def test_a_changed_source_file_gets_a_fresh_file_not_the_cached_one(tmp_path, cache_folder):
    src = tmp_path / "model.gguf"
    shutil.copyfile(hub.bundled(), src)
    old = cache.quantized(src, "Q8_0")
    old_sha = summary.sha256(old)
    src.write_bytes(_edited_copy(tmp_path).read_bytes())  # same name, same folder, other content
    new = cache.quantized(src, "Q8_0")
    assert new != old and summary.sha256(old) == old_sha
    fresh = quantize_gguf(src, tmp_path / "fresh.gguf", "Q8_0", progress=False).path
    assert summary.sha256(new) == summary.sha256(fresh) != old_sha


def test_cached_scores_equal_freshly_computed_ones_and_follow_the_files_content(tmp_path, cache_folder, monkeypatch):
    ref = tmp_path / "ref.gguf"
    shutil.copyfile(hub.bundled(), ref)
    q8 = cache.quantized(ref, "Q8_0")
    direct = evaluate.compare([ref, q8], **SMALL)
    first = cache.compare([ref, q8], **SMALL)
    with monkeypatch.context() as m:
        _no_recompute(m)
        again = cache.compare([ref, q8], **SMALL)
    for d, f, a in zip(direct.rows, first.rows, again.rows):
        for s in (f, a):
            assert (s.path, s.perplexity, s.kl, s.top1, s.accuracy, s.changed) == (
                d.path,
                d.perplexity,
                d.kl,
                d.top1,
                d.accuracy,
                d.changed,
            )
            assert s.tokens == d.tokens and all(np.array_equal(x, y) for x, y in zip(s.logits, d.logits))
            assert all(np.array_equal(s.per_doc[k], d.per_doc[k]) for k in d.per_doc)
            assert all(np.array_equal(s.results[k], d.results[k]) for k in d.results)
            assert np.array_equal(s.flips, d.flips)
        assert a.tokens_per_s == f.tokens_per_s  # the measurement is the one kept, not a new one
    # The reference changes (same name): every score is computed afresh, against the new reference.
    ref.write_bytes(_edited_copy(tmp_path).read_bytes())
    scored, evaluate_ = [], evaluate.evaluate
    with monkeypatch.context() as m:
        m.setattr(evaluate, "evaluate", lambda path, *a, **k: scored.append(path) or evaluate_(path, *a, **k))
        changed = cache.compare([ref, q8], **SMALL)
    assert scored == [ref, q8], "an edited reference must give fresh scores for every file"
    fresh = evaluate.compare([ref, q8], **SMALL)
    assert [r.perplexity for r in changed.rows] == [r.perplexity for r in fresh.rows]
    assert [r.kl for r in changed.rows] == [r.kl for r in fresh.rows]


def test_made_and_arrays_compute_once_and_follow_their_parts(cache_folder):
    calls = []

    def compute():
        calls.append(1)
        return {"h": np.arange(6.0).reshape(2, 3)}

    first = cache.arrays("hessian", compute, src="a", layer=0)
    again = cache.arrays("hessian", compute, src="a", layer=0)
    other = cache.arrays("hessian", compute, src="b", layer=0)
    assert len(calls) == 2 and np.array_equal(first["h"], again["h"]) and np.array_equal(other["h"], first["h"])

    def make(path):
        calls.append(2)
        path.write_bytes(b"x")

    p = cache.made("gptq", make, "m.gguf", src="a")
    assert cache.made("gptq", make, "m.gguf", src="a") == p and calls.count(2) == 1
    assert cache.made("gptq", make, "m.gguf", src="c") != p and calls.count(2) == 2


def test_the_cache_evicts_the_least_recently_used_entries_but_never_recent_ones(cache_folder, monkeypatch):
    import os
    import time

    def old(days):
        return time.time() - days * 86400

    sizes = {}
    for i, days in enumerate([3, 2, 1]):  # three old 1 MB entries, the oldest first
        path = cache.made("x", lambda p: p.write_bytes(b"\0" * 2**20), "f.bin", n=i)
        for p in (path, path.parent):
            os.utime(p, (old(days), old(days)))
        sizes[days] = path
    fresh = cache.arrays("y", lambda: {"a": np.zeros(2**18)}, n=0)  # 2 MB, used just now
    assert fresh["a"].size == 2**18
    freed = cache.evict(limit_mb=3.5)  # 5 MB held: the two oldest must go, nothing recent
    assert freed >= 2 * 2**20
    assert not sizes[3].exists() and not sizes[2].exists() and sizes[1].exists()
    cache.evict(limit_mb=0)  # everything may go, but not what was used in the last hour
    assert not sizes[1].exists()
    assert list((cache_folder / "results" / "y").glob("*.npz"))
