"""Importance matrices: collected as llama-imatrix collects them, stored in its file format,
used as llama-quantize uses them.

* collect: for every blk.* weight matrix, the sum over tokens of each input column squared
  and the number of tokens (tools/imatrix/imatrix.cpp of llama.cpp 0c1e57098);
* the file: the bytes ggml's own GGUF writer produces for the same statistics;
* quantize_gguf(..., imatrix=...): every tensor is ggml's encode with that importance, and the
  whole file is the one llama_model_quantize writes when given the same imatrix the way the
  llama-quantize tool gives it (params.imatrix plus its kv overrides); sha256 equal.
"""

from __future__ import annotations

import ctypes
import struct

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from tiny_llama import write_tiny_llama

from kquant import imatrix, reference
from kquant.__main__ import main as cli
from kquant.errors import KQuantError
from kquant.gguf.reader import open_gguf, weights
from kquant.gguf.summary import sha256
from kquant.imatrix import Entry, Imatrix
from kquant.model import calibrate, hub
from kquant.model.forward import Llama, rms_norm
from kquant.quantize_file import plan_gguf, quantize_gguf

MIXES = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q4_0", "IQ4_NL"]


@pytest.fixture(scope="module")
def bundled():
    return Llama.load(hub.bundled())


@pytest.fixture(scope="module")
def bundled_imatrix(bundled, tmp_path_factory):
    """Four 128-token chunks of calibration text through the bundled model, saved as a file."""
    im = calibrate.collect(bundled, calibrate.calibration_text(16), n_ctx=128, n_chunks=4, dataset="calibration.txt")
    return imatrix.save(im, tmp_path_factory.mktemp("imatrix") / "bundled.imatrix.gguf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Small random llamas: tied and untied, GQA, 8 layers (so n_layer/8 = 1 for the Q4_0 rule)."""
    folder = tmp_path_factory.mktemp("tiny")
    return {
        "tied, 8 layers": write_tiny_llama(folder / "a.gguf", n_layer=8, n_head_kv=2, n_ff=256),
        "untied, F16": write_tiny_llama(folder / "b.gguf", n_layer=2, n_head_kv=1, tied=False, dtype="F16"),
    }


def _random_sequences(n_vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_vocab, size=n) for n in lengths]


# ---------------------------------------------------------------------------- collecting


def test_collect_records_the_input_of_every_block_matrix_and_nothing_else(bundled):
    im = calibrate.collect(bundled, _random_sequences(bundled.cfg.n_vocab, [40, 17]))
    roles = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(im.entries) == {f"blk.{i}.{r}.weight" for i in range(bundled.cfg.n_layer) for r in roles}
    # A tied model's output matmul uses token_embd.weight: neither blk.* nor output.weight, never recorded.
    assert "token_embd.weight" not in calibrate.collect(bundled, _random_sequences(958, [20]), process_output=True)
    for name, e in im.entries.items():
        n_cols = bundled.weights[name].shape[1]
        assert e.in_sum2.shape == (1, n_cols) and e.in_sum2.dtype == np.float32
        assert e.counts.tolist() == [57]  # one count per matrix: the tokens (rows) summed


def test_output_weight_is_recorded_only_when_asked_like_process_output(tiny):
    model = Llama.load(tiny["untied, F16"])
    seqs = _random_sequences(model.cfg.n_vocab, [30])
    assert "output.weight" not in calibrate.collect(model, seqs)
    assert calibrate.collect(model, seqs, process_output=True).entries["output.weight"].counts.tolist() == [30]


def test_collected_sums_equal_a_direct_recomputation(bundled):
    seqs = _random_sequences(bundled.cfg.n_vocab, [64, 33], seed=1)
    im = calibrate.collect(bundled, seqs)
    # Every matrix: the sum of squares of the inputs the forward pass multiplies, in float64.
    inputs: dict[str, list] = {}
    for s in seqs:
        bundled.forward(s, lambda name, x: inputs.setdefault(name, []).append(x.astype(np.float64)))
    for name, e in im.entries.items():
        x = np.concatenate(inputs[name])
        np.testing.assert_allclose(e.in_sum2[0], (x * x).sum(0), rtol=1e-6, err_msg=name)
        assert e.counts[0] == len(x) == 97
    # attn_q/k/v of each layer, straight from the residual stream (no hook involved).
    w, eps = bundled.weights, bundled.cfg.norm_eps
    passes = [bundled.forward(s) for s in seqs]
    for i in range(bundled.cfg.n_layer):
        total = 0
        for s, f in zip(seqs, passes):
            x = w["token_embd.weight"][s] if i == 0 else f.layers[i - 1]
            h = rms_norm(x, w[f"blk.{i}.attn_norm.weight"], eps).astype(np.float64)
            total = total + (h * h).sum(0)
        for r in ("attn_q", "attn_k", "attn_v"):
            np.testing.assert_allclose(im.entries[f"blk.{i}.{r}.weight"].in_sum2[0], total, rtol=1e-5)


def test_batches_of_fewer_than_16_tokens_are_ignored_as_llama_imatrix_does(bundled):
    im = calibrate.collect(bundled, _random_sequences(bundled.cfg.n_vocab, [15, 16, 5]))
    assert im.entries["blk.0.attn_q.weight"].counts.tolist() == [16]
    with pytest.raises(KQuantError, match="fewer than 16"):
        calibrate.collect(bundled, _random_sequences(bundled.cfg.n_vocab, [15, 3]))
    with pytest.raises(KQuantError, match="pass a list of sequences"):
        calibrate.collect(bundled, [0, 5, 7] * 10)
    with pytest.raises(KQuantError, match="n_ctx >= 16"):
        calibrate.collect(bundled, "Once upon a time", n_ctx=8)


def test_text_is_cut_into_chunks_that_start_with_bos_like_llama_imatrix(bundled):
    text = calibrate.calibration_text(8)
    tokens = calibrate.tokenize(bundled, text)
    assert tokens[0] == 0 and tokens[1] != 0  # BOS once (the text itself does not start with <s>)
    chunks = calibrate.chunks(bundled, text, 64)
    assert len(chunks) == len(tokens) // 64
    for i, c in enumerate(chunks):
        assert c[0] == 0 and list(c[1:]) == tokens[i * 64 + 1 : (i + 1) * 64]
    im = calibrate.collect(bundled, text, n_ctx=64, n_chunks=3, dataset="eight documents")
    assert im.entries["blk.3.ffn_down.weight"].counts.tolist() == [3 * 64]
    assert (im.chunk_count, im.chunk_size, im.datasets) == (3, 64, ["eight documents"])
    with pytest.raises(KQuantError, match="at least 2 \\* n_ctx"):
        calibrate.collect(bundled, "Once upon a time", n_ctx=64)


def test_calibration_text_is_not_the_evaluation_or_training_text():
    from kquant.model import corpus

    assert calibrate.CALIBRATION_SEED not in (1, corpus.HELD_OUT_SEED, 0)
    assert corpus.documents(calibrate.CALIBRATION_SEED, 5, held_out=True)[0] not in calibrate.calibration_text(
        40, seed=7
    )
    with pytest.raises(KQuantError, match="evaluation"):
        calibrate.calibration_text(seed=corpus.HELD_OUT_SEED)


def test_importance_is_sums_over_count_and_one_where_nothing_was_seen():
    e = Entry(np.array([[2.0, 4.0, 0.0], [9.0, 9.0, 9.0], [3.0, 6.0, 1.5]], np.float32), np.array([2, 0, 3]))
    np.testing.assert_array_equal(e.importance(), np.array([1, 2, 0, 1, 1, 1, 1, 2, 0.5], np.float32))
    im = Imatrix({"a.weight": e})
    assert im.vectors()["a.weight"].dtype == np.float32
    with pytest.raises(KQuantError, match="no entry"):
        im.importance("b.weight")


class _GgmlTensor(ctypes.Structure):
    """struct ggml_tensor of ggml/include/ggml.h (0c1e57098), field for field."""


_GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4),
    ("nb", ctypes.c_size_t * 4),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * 16),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(_GgmlTensor) * 10),
    ("view_src", ctypes.POINTER(_GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * 64),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def _llama_cpp_collects(path, sequences, process_output=False):
    """llama-imatrix's collect_imatrix (dense MUL_MAT branch) as a cb_eval callback of llama.cpp itself.

    Each sequence is decoded from an empty cache with every position's logits requested
    (imatrix.cpp does, so the last layer keeps every row); F32 KV cache, one thread.
    """
    import logging

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    import llama_cpp

    base = reference.library().dll
    base.ggml_op_name.argtypes, base.ggml_op_name.restype = [ctypes.c_int], ctypes.c_char_p
    sums, counts = {}, {}

    def callback(t, ask, _):
        t = ctypes.cast(t, ctypes.POINTER(_GgmlTensor)).contents
        if base.ggml_op_name(t.op) != b"MUL_MAT":
            return not ask
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = src0.name.decode()
        if ask:  # the same filter as imatrix.cpp
            return (
                src1.ne[1] >= 16
                and src1.type == 0
                and (name.startswith("blk.") or (process_output and name == "output.weight"))
            )
        n_cols, n_rows = src1.ne[0], src1.ne[1] * src1.ne[2] * src1.ne[3]
        assert src1.nb[1] == 4 * n_cols  # contiguous rows
        x = np.ctypeslib.as_array(ctypes.cast(src1.data, ctypes.POINTER(ctypes.c_float)), shape=(n_rows, n_cols))
        sums[name] = sums.get(name, 0) + (x.astype(np.float64) ** 2).sum(0)
        counts[name] = counts.get(name, 0) + n_rows
        return True

    cb = llama_cpp.ggml_backend_sched_eval_callback(callback)
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    cp = llama_cpp.llama_context_default_params()
    n = max(len(s) for s in sequences)
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n
    cp.n_threads = cp.n_threads_batch = 1
    cp.type_k = cp.type_v = 0  # F32 cache
    cp.cb_eval = cb
    ctx = llama_cpp.llama_init_from_model(model, cp)
    batch = llama_cpp.llama_batch_init(n, 0, 1)
    try:
        for seq in sequences:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            batch.n_tokens = len(seq)
            for i, tok in enumerate(seq):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = int(tok), i, 1, True
                batch.seq_id[i][0] = 0
            assert llama_cpp.llama_decode(ctx, batch) == 0
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return sums, counts


@pytest.mark.parametrize("which", ["bundled (F16, tied)", "tiny (F16, untied, output recorded)"])
def test_collect_records_what_llama_cpp_computes_inside_its_own_graph(which, bundled, tiny):
    path, process_output = (hub.bundled(), False) if which.startswith("bundled") else (tiny["untied, F16"], True)
    llama = bundled if which.startswith("bundled") else Llama.load(path)
    seqs = _random_sequences(llama.cfg.n_vocab, [100, 60, 12], seed=2)  # 12 tokens: below 16, ignored by both
    sums, counts = _llama_cpp_collects(path, seqs, process_output)
    im = calibrate.collect(llama, seqs, process_output=process_output)
    assert sorted(sums) == im.names()
    for name, e in im.entries.items():
        assert e.counts.tolist() == [counts[name]] == [160]
        # llama.cpp's F16 matmuls round their inputs to F16, numpy does not: measured max 5e-4 of the largest column.
        assert np.abs(e.in_sum2[0] - sums[name]).max() <= 2e-3 * sums[name].max(), name


# ---------------------------------------------------------------------------- the file format


def _ggml_writes_imatrix(path, im: Imatrix) -> None:
    """What imatrix.cpp's save_imatrix does, call for call, with ggml's own GGUF writer (libggml-base)."""
    lib = reference.library().dll
    P, i64 = ctypes.c_void_p, ctypes.c_int64

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", P), ("no_alloc", ctypes.c_bool)]

    lib.ggml_init.argtypes, lib.ggml_init.restype = [InitParams], P
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    lib.ggml_new_tensor_2d.argtypes, lib.ggml_new_tensor_2d.restype = [P, ctypes.c_int, i64, i64], P
    lib.ggml_set_name.argtypes, lib.ggml_set_name.restype = [P, ctypes.c_char_p], P
    lib.ggml_get_data.argtypes, lib.ggml_get_data.restype = [P], P
    lib.gguf_init_empty.restype = P
    lib.gguf_set_val_str.argtypes = [P, ctypes.c_char_p, ctypes.c_char_p]
    lib.gguf_set_arr_str.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t]
    lib.gguf_set_val_u32.argtypes = [P, ctypes.c_char_p, ctypes.c_uint32]
    lib.gguf_add_tensor.argtypes = [P, P]
    lib.gguf_write_to_file.argtypes, lib.gguf_write_to_file.restype = [P, ctypes.c_char_p, ctypes.c_bool], ctypes.c_bool
    lib.gguf_free.argtypes = lib.ggml_free.argtypes = [P]

    size = sum(2 * lib.ggml_tensor_overhead() + 4 * (e.in_sum2.size + e.counts.size) + 64 for e in im.entries.values())
    ctx = lib.ggml_init(InitParams(size, None, False))
    gctx = lib.gguf_init_empty()
    lib.gguf_set_val_str(gctx, b"general.type", b"imatrix")
    names = (ctypes.c_char_p * len(im.datasets))(*[d.encode() for d in im.datasets])
    lib.gguf_set_arr_str(gctx, b"imatrix.datasets", names, len(im.datasets))
    lib.gguf_set_val_u32(gctx, b"imatrix.chunk_count", im.chunk_count)
    lib.gguf_set_val_u32(gctx, b"imatrix.chunk_size", im.chunk_size)
    for name in sorted(im.entries):
        e = im.entries[name]
        n_mat, n_cols = e.in_sum2.shape
        for suffix, values, ne0 in ((".in_sum2", e.in_sum2, n_cols), (".counts", e.counts, 1)):
            t = lib.ggml_new_tensor_2d(ctx, 0, ne0, n_mat)  # GGML_TYPE_F32
            lib.ggml_set_name(t, (name + suffix).encode())
            data = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
            ctypes.memmove(lib.ggml_get_data(t), data.ctypes.data, data.nbytes)
            lib.gguf_add_tensor(gctx, t)
    assert lib.gguf_write_to_file(gctx, str(path).encode(), False)
    lib.gguf_free(gctx)
    lib.ggml_free(ctx)


def _example_imatrix() -> Imatrix:
    """Dense entries and one 3-D expert entry (4 experts, one never routed to), names out of order."""
    rng = np.random.default_rng(3)
    entries = {
        "blk.1.ffn_down.weight": Entry((rng.random((1, 64)) * 50).astype(np.float32), np.array([1024])),
        "blk.0.attn_q.weight": Entry((rng.random((1, 32)) * 9).astype(np.float32), np.array([1024])),
        "blk.0.ffn_up_exps.weight": Entry((rng.random((4, 32)) * 3).astype(np.float32), np.array([700, 0, 324, 2000])),
    }
    entries["blk.0.ffn_up_exps.weight"].in_sum2[1] = 0
    return Imatrix(entries, ["wiki.train.raw", "calibration.txt"], chunk_count=2, chunk_size=512)


def test_save_writes_the_bytes_ggml_writes_for_llama_imatrix(tmp_path):
    im = _example_imatrix()
    ours = imatrix.save(im, tmp_path / "kquant.imatrix.gguf")
    _ggml_writes_imatrix(tmp_path / "ggml.imatrix.gguf", im)
    assert ours.read_bytes() == (tmp_path / "ggml.imatrix.gguf").read_bytes()


def test_the_file_holds_what_llama_cpp_reads_field_by_field(tmp_path):
    path = imatrix.save(_example_imatrix(), tmp_path / "i.gguf")
    r = GGUFReader(path)
    fields = {k: (f.types, f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == ["general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"]
    assert fields["general.type"][1] == "imatrix"
    assert fields["imatrix.datasets"][1] == ["wiki.train.raw", "calibration.txt"]
    assert [t.name for t in fields["imatrix.chunk_count"][0]] == ["UINT32"] and fields["imatrix.chunk_count"][1] == 2
    assert [t.name for t in fields["imatrix.chunk_size"][0]] == ["UINT32"] and fields["imatrix.chunk_size"][1] == 512
    tensors = {t.name: t for t in r.tensors}
    assert list(tensors) == [
        f"{n}.{s}"
        for n in ("blk.0.attn_q.weight", "blk.0.ffn_up_exps.weight", "blk.1.ffn_down.weight")
        for s in ("in_sum2", "counts")
    ]
    shapes = {n: (t.tensor_type.name, [int(d) for d in t.shape]) for n, t in tensors.items()}  # GGUF order: ne[0] first
    assert shapes["blk.0.attn_q.weight.in_sum2"] == ("F32", [32])  # (n_cols, 1): trailing 1 dropped
    assert shapes["blk.0.attn_q.weight.counts"] == ("F32", [1])
    assert shapes["blk.0.ffn_up_exps.weight.in_sum2"] == ("F32", [32, 4])  # (n_cols, n_experts)
    assert shapes["blk.0.ffn_up_exps.weight.counts"] == ("F32", [1, 4])
    assert tensors["blk.0.ffn_up_exps.weight.counts"].data.reshape(-1).tolist() == [700, 0, 324, 2000]


def test_save_and_load_round_trip_exactly(tmp_path):
    im = _example_imatrix()
    back = imatrix.load(imatrix.save(im, tmp_path / "i.gguf"))
    assert (back.datasets, back.chunk_count, back.chunk_size, back.file) == (
        im.datasets,
        2,
        512,
        str(tmp_path / "i.gguf"),
    )
    assert back.names() == im.names()
    for name, e in im.entries.items():
        assert back.entries[name].in_sum2.tobytes() == e.in_sum2.tobytes()
        assert back.entries[name].counts.tolist() == e.counts.tolist()
        assert back.importance(name).tobytes() == im.importance(name).tobytes()


def test_load_reads_a_file_written_by_ggml(tmp_path):
    im = _example_imatrix()
    _ggml_writes_imatrix(tmp_path / "ggml.gguf", im)
    back = imatrix.load(tmp_path / "ggml.gguf")
    assert back.vectors().keys() == im.vectors().keys()
    assert all(back.importance(n).tobytes() == im.importance(n).tobytes() for n in im.entries)


def _legacy_bytes(entries: dict, chunk_count=None, dataset=None) -> bytes:
    """save_imatrix_legacy's layout: n, then (len, name, ncall, nval, values) per entry, then chunks and dataset."""
    out = struct.pack("<i", len(entries))
    for name, (ncall, values) in entries.items():
        out += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, len(values))
        out += np.asarray(values, "<f4").tobytes()
    if chunk_count is not None:
        out += struct.pack("<i", chunk_count) + struct.pack("<i", len(dataset)) + dataset.encode()
    return out


def test_the_legacy_dat_format_loads_with_llama_quantizes_normalisation(tmp_path):
    path = tmp_path / "old.dat"
    path.write_bytes(
        _legacy_bytes(
            {"blk.0.attn_q.weight": (10, [5.0, 20.0, 0.5]), "blk.0.ffn_up.weight": (0, [3.0, 4.0])},
            chunk_count=10,
            dataset="wiki.txt",
        )
    )
    im = imatrix.load(path)
    assert im.legacy and (im.chunk_count, im.datasets) == (10, ["wiki.txt"])
    np.testing.assert_array_equal(im.importance("blk.0.attn_q.weight"), np.float32([0.5, 2.0, 0.05]))  # values / ncall
    np.testing.assert_array_equal(im.importance("blk.0.ffn_up.weight"), np.float32([3.0, 4.0]))  # ncall 0: as stored
    (tmp_path / "bare.dat").write_bytes(_legacy_bytes({"x.weight": (1, [1.0])}))  # the trailer is optional
    assert imatrix.load(tmp_path / "bare.dat").chunk_count == 0


def _write_gguf(path, keys: dict, tensors: dict) -> None:
    w = GGUFWriter(path, arch="imatrix")
    del w.kv_data[0]["general.architecture"]
    for k, v in keys.items():
        w.add_key_value(k, *v) if isinstance(v, tuple) else w.add_string(k, v)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bad_imatrix_files_get_one_clear_error(tmp_path):
    from gguf import GGUFValueType as V

    meta = {
        "general.type": "imatrix",
        "imatrix.datasets": (["d"], V.ARRAY, V.STRING),
        "imatrix.chunk_count": (1, V.UINT32),
        "imatrix.chunk_size": (512, V.UINT32),
    }
    ok = {"a.weight.in_sum2": np.ones(32, np.float32), "a.weight.counts": np.ones(1, np.float32)}
    cases = {
        "missing.gguf": (None, "no such file"),
        "model.gguf": (hub.bundled(), "not an imatrix"),
        "no_counts.gguf": ((meta, {"a.weight.in_sum2": ok["a.weight.in_sum2"]}), "no .counts"),
        "f16.gguf": (
            (meta, {"a.weight.in_sum2": np.ones(32, np.float16), "a.weight.counts": ok["a.weight.counts"]}),
            "must be F32",
        ),
        "ragged.gguf": (
            (meta, {"a.weight.in_sum2": np.ones(33, np.float32), "a.weight.counts": np.ones(2, np.float32)}),
            "whole row",
        ),
        "no_meta.gguf": (({"general.type": "imatrix"}, ok), "lacks the imatrix metadata"),
        "garbage.dat": (b"\x02\x00\x00\x00\x05\x00\x00\x00ab", "ends in the middle"),
        "empty.dat": (b"\x00\x00\x00\x00", "with data"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, tuple):
            _write_gguf(path, *content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path = content
        with pytest.raises(KQuantError, match=message):
            imatrix.load(path)
    good = tmp_path / "good.gguf"
    _write_gguf(good, meta, ok)
    good.write_bytes(good.read_bytes()[:-40])  # cut inside the tensor data
    with pytest.raises(KQuantError, match="truncated"):
        imatrix.load(good)


def test_save_is_atomic_and_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(KQuantError, match="does not exist"):
        imatrix.save(_example_imatrix(), tmp_path / "nowhere" / "i.gguf")
    with pytest.raises(KQuantError, match="no entries"):
        imatrix.save(Imatrix({}, ["d"]), tmp_path / "i.gguf")
    with pytest.raises(KQuantError, match="one count per row"):
        imatrix.save(
            Imatrix({"a.weight": Entry(np.ones((2, 32), np.float32), np.array([5]))}, ["d"]), tmp_path / "i.gguf"
        )
    with pytest.raises(KQuantError, match="legacy .dat"):
        imatrix.save(
            Imatrix({"a.weight": Entry(np.ones((1, 32), np.float32), np.array([5]))}, ["d"], legacy=True),
            tmp_path / "i.gguf",
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- quantizing with it


def _assert_every_tensor_is_ggmls_encode(src, out, vectors: dict):
    """Each converted tensor of ``out`` equals ggml_quantize_chunk of the source with its imatrix entry."""
    source = {t.name: t for t in open_gguf(src).tensors}
    checked = 0
    for t in GGUFReader(out).tensors:
        s = source[t.name]
        if t.tensor_type == s.type or t.tensor_type.name in ("F16", "F32"):
            continue
        x = weights(s)
        qw = vectors.get(t.name)
        expected = (
            reference.quantize(x, t.tensor_type.name, imatrix=qw)
            if qw is not None and qw.size == x.shape[-1]
            else reference.quantize(x, t.tensor_type.name)
        )
        assert np.asarray(t.data).reshape(-1).tobytes() == expected.reshape(-1).tobytes(), (t.name, t.tensor_type.name)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("mix", MIXES)
def test_the_bundled_model_quantized_with_an_imatrix_is_llama_quantizes_file(mix, bundled_imatrix, tmp_path):
    src = hub.bundled()
    ours = quantize_gguf(src, tmp_path / "kquant.gguf", mix, imatrix=bundled_imatrix, progress=False).path
    _assert_every_tensor_is_ggmls_encode(src, ours, imatrix.load(bundled_imatrix).vectors())
    theirs = reference.model_quantize(src, tmp_path / "llama.gguf", mix, imatrix=bundled_imatrix)
    assert sha256(ours) == sha256(theirs)
    # ... and the imatrix mattered: ffn_up of layer 1 is not its plain encode.
    t = next(t for t in GGUFReader(ours).tensors if t.name == "blk.1.ffn_up.weight")
    x = Llama.load(src).weights[t.name]
    assert np.asarray(t.data).tobytes() != reference.quantize(x, t.tensor_type.name).tobytes()


@pytest.mark.parametrize(
    "model, mix",
    [
        ("tied, 8 layers", "Q4_0"),
        ("tied, 8 layers", "Q2_K"),
        ("tied, 8 layers", "IQ4_NL"),  # 8 layers: ffn_down of layer 0 is Q5_K only without the imatrix
        ("untied, F16", "Q3_K_M"),
        ("untied, F16", "Q4_K_M"),
    ],
)
def test_tiny_models_quantized_with_a_collected_imatrix_equal_llama_quantize(model, mix, tiny, tmp_path):
    src = tiny[model]
    llama = Llama.load(src)
    im = calibrate.collect(
        llama, _random_sequences(llama.cfg.n_vocab, [48, 48]), n_ctx=48, process_output=True, dataset="random ids"
    )
    path = imatrix.save(im, tmp_path / "tiny.imatrix.gguf")
    ours = quantize_gguf(src, tmp_path / "kquant.gguf", mix, imatrix=path, progress=False).path
    _assert_every_tensor_is_ggmls_encode(src, ours, im.vectors())
    assert sha256(ours) == sha256(reference.model_quantize(src, tmp_path / "llama.gguf", mix, imatrix=path))


def test_q4_0_and_q5_0_give_the_first_eighth_of_ffn_down_q4_1_and_q5_1_only_with_an_imatrix(tiny, bundled_imatrix):
    for path, eighth in ((tiny["tied, 8 layers"], 1), (hub.bundled(), 1)):
        for mix, bumped in (("Q4_0", "Q4_1"), ("Q5_0", "Q5_1")):
            plain = {c.name: c for c in plan_gguf(path, mix)}
            with_im = {c.name: c for c in plan_gguf(path, mix, imatrix=True)}
            changed = {n for n in plain if plain[n].type != with_im[n].type}
            assert changed == {f"blk.{i}.ffn_down.weight" for i in range(eighth)}
            assert all(with_im[n].type.name == bumped and "importance matrix" in with_im[n].reason for n in changed)
    # Other mixes do not change with an imatrix.
    assert [c.type for c in plan_gguf(hub.bundled(), "Q4_K_M")] == [
        c.type for c in plan_gguf(hub.bundled(), "Q4_K_M", imatrix=bundled_imatrix)
    ]


def test_missing_entries_are_quantized_without_and_expert_tensors_get_one_slice_each(tmp_path):
    """llama.cpp: no entry -> plain encode; a 3-D tensor -> entry[e * n_cols : (e + 1) * n_cols] for expert e."""
    src = write_tiny_llama(tmp_path / "moe.gguf", n_layer=2, n_expert=8, n_ff=256, n_head_kv=1, rows=16)
    rng = np.random.default_rng(5)
    entries = {}
    for t in GGUFReader(src).tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        if len(shape) >= 2 and t.name.startswith("blk.") and "attn_k" not in t.name:  # attn_k: left out on purpose
            n_mat = shape[0] if len(shape) == 3 else 1
            entries[t.name] = Entry(
                (rng.random((n_mat, shape[-1])) ** 4 * 100).astype(np.float32), rng.integers(0, 3, n_mat) * 64
            )
    path = imatrix.save(Imatrix(entries, ["random"], 1, 64), tmp_path / "moe.imatrix.gguf")
    for mix in ("Q4_K_M", "Q2_K"):
        ours = quantize_gguf(src, tmp_path / f"{mix}.kquant.gguf", mix, imatrix=path, progress=False).path
        assert sha256(ours) == sha256(reference.model_quantize(src, tmp_path / f"{mix}.llama.gguf", mix, imatrix=path))


@pytest.mark.parametrize("gqa", [4, 2])
def test_q2_k_s_is_written_only_with_an_imatrix_and_then_equals_llama_quantize(gqa, tmp_path):
    src = write_tiny_llama(tmp_path / "m.gguf", n_layer=8, n_head=4, n_head_kv=4 // gqa, n_ff=256, rows=32)
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in GGUFReader(src).tensors}
    rng = np.random.default_rng(gqa)
    vectors = {
        n: (rng.random(s[-1]) ** 3 + 0.01).astype(np.float32)
        for n, s in shapes.items()
        if n.startswith("blk.") and len(s) == 2
    }
    plan = {c.name: c.type.name for c in plan_gguf(src, "Q2_K_S", imatrix=True)}
    assert plan["blk.0.ffn_down.weight"] == "Q4_K" and plan["blk.1.ffn_down.weight"] == "Q2_K"  # first eighth: Q4_K
    assert plan["blk.5.attn_v.weight"] == ("Q4_K" if gqa >= 4 else "Q2_K")
    assert plan["token_embd.weight"] == "Q6_K"
    ours = quantize_gguf(src, tmp_path / "k.gguf", "Q2_K_S", imatrix=vectors, progress=False).path
    assert sha256(ours) == sha256(reference.model_quantize(src, tmp_path / "l.gguf", "Q2_K_S", imatrix=vectors))
    with pytest.raises(KQuantError, match="Q2_K_S requires an importance matrix"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q2_K_S", progress=False)
    with pytest.raises(ValueError):
        reference.model_quantize(src, tmp_path / "l2.gguf", "Q2_K_S")
    del vectors["blk.3.ffn_up.weight"]
    with pytest.raises(KQuantError, match="no entry for blk.3.ffn_up.weight"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q2_K_S", imatrix=vectors, progress=False)
    with pytest.raises(ValueError):
        reference.model_quantize(src, tmp_path / "l3.gguf", "Q2_K_S", imatrix=vectors)


def test_a_plain_dict_is_what_llama_model_quantize_takes_and_adds_no_keys(tiny, tmp_path):
    src = tiny["tied, 8 layers"]
    vectors = {f"blk.{i}.ffn_down.weight": np.linspace(0.1, 3, 256, dtype=np.float32) for i in range(8)}
    ours = quantize_gguf(src, tmp_path / "k.gguf", "Q4_0", imatrix=vectors, progress=False).path
    assert sha256(ours) == sha256(reference.model_quantize(src, tmp_path / "l.gguf", "Q4_0", imatrix=vectors))
    assert not [k for k in GGUFReader(ours).fields if k.startswith("quantize.")]


def test_llama_quantizes_imatrix_keys_come_after_file_type(bundled_imatrix, tmp_path):
    out = quantize_gguf(hub.bundled(), tmp_path / "q.gguf", "Q4_K_M", imatrix=bundled_imatrix, progress=False).path
    summary = quantize_gguf(hub.bundled(), tmp_path / "q2.gguf", "Q4_K_M", imatrix=bundled_imatrix, progress=False)
    weighted = {r.name for r in summary.rows if r.reason.endswith("weighted by its imatrix entry")}
    assert weighted == set(imatrix.load(bundled_imatrix).entries)  # every blk.* matrix; not token_embd, not the norms
    fields = GGUFReader(out).fields
    assert list(fields)[-6:] == [
        "general.quantization_version",
        "general.file_type",
        "quantize.imatrix.file",
        "quantize.imatrix.dataset",
        "quantize.imatrix.entries_count",
        "quantize.imatrix.chunks_count",
    ]
    assert fields["quantize.imatrix.file"].contents() == str(bundled_imatrix)
    assert fields["quantize.imatrix.dataset"].contents() == "calibration.txt"
    assert fields["quantize.imatrix.entries_count"].contents() == 56
    assert fields["quantize.imatrix.chunks_count"].contents() == 4
    assert fields["quantize.imatrix.entries_count"].types[0].name == "UINT32"


def test_wrong_sized_entries_fail_except_token_embd_as_in_llama_cpp(tiny, tmp_path):
    src = tiny["tied, 8 layers"]
    bad = {"blk.0.attn_q.weight": np.ones(128, np.float32)}
    with pytest.raises(KQuantError, match="blk.0.attn_q.weight has 128 values but the tensor needs 256"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", imatrix=bad, progress=False)
    with pytest.raises(ValueError):
        reference.model_quantize(src, tmp_path / "l.gguf", "Q4_K_M", imatrix=bad)
    assert not (tmp_path / "q.gguf").exists()
    lenient = {"token_embd.weight": np.ones(7, np.float32), "blk.0.ffn_up.weight": np.ones(256, np.float32) * 2}
    ours = quantize_gguf(src, tmp_path / "k.gguf", "Q4_K_M", imatrix=lenient, progress=False).path
    assert sha256(ours) == sha256(reference.model_quantize(src, tmp_path / "l2.gguf", "Q4_K_M", imatrix=lenient))
    for bad_vector, message in (
        (np.full(256, np.nan, np.float32), "finite"),
        (np.ones((2, 128), np.float32), "flat vector"),
    ):
        with pytest.raises(KQuantError, match=message):
            quantize_gguf(
                src, tmp_path / "q.gguf", "Q4_K_M", imatrix={"blk.0.attn_q.weight": bad_vector}, progress=False
            )
    with pytest.raises(KQuantError, match="no entries"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", imatrix={}, progress=False)
    with pytest.raises(KQuantError, match="must be an Imatrix"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", imatrix=42, progress=False)


def test_the_command_line_takes_imatrix_like_llama_quantize(bundled_imatrix, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert cli(["quantize", str(hub.bundled()), str(out), "Q4_0", "--imatrix", str(bundled_imatrix), "--quiet"]) == 0
    assert sha256(out) == sha256(
        reference.model_quantize(hub.bundled(), tmp_path / "llama.gguf", "Q4_0", imatrix=bundled_imatrix)
    )
    assert cli(["plan", str(hub.bundled()), "Q4_0", "--imatrix", str(bundled_imatrix)]) == 0
    assert "with an importance matrix, Q4_0 gives ffn_down" in capsys.readouterr().out
    assert (
        cli(
            ["quantize", str(hub.bundled()), str(tmp_path / "x.gguf"), "Q4_0", "--imatrix", str(tmp_path / "none.gguf")]
        )
        == 1
    )
    assert "no such file" in capsys.readouterr().err
