"""kquant.quantize_gguf: whole GGUF files, byte-for-byte what llama.cpp's llama-quantize writes.

The models are tiny random llamas (tests/tiny_llama.py) chosen to exercise the rules:
several layer counts, GQA, tied and untied output, F32 / F16 / BF16 input, rows that are
and are not multiples of 256 and 32, eight experts, and an 80-layer "70B".
"""

from __future__ import annotations

import pathlib
import struct

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from tiny_llama import write_tiny_llama

import kquant.quantize_file
from kquant.errors import KQuantError
from kquant.formats import dequantize
from kquant.gguf.summary import sha256
from kquant.mixes import IQUANT_MIXES, MIXES
from kquant.quantize_file import plan_gguf, quantize_gguf
from kquant.reference import model_quantize as llama_quantize

MODELS = {
    "4 layers, GQA 4, tied, F32": dict(n_layer=4, n_head_kv=1),
    "8 layers, GQA 2, untied, F16": dict(n_layer=8, n_head_kv=2, n_ff=256, tied=False, dtype="F16", rows=64),
    "rows of 480 and 200, BF16": dict(n_layer=2, n_embd=480, n_ff=200, n_vocab=77, tied=False, dtype="BF16"),
    "8 experts": dict(n_layer=2, n_expert=8, n_ff=256, n_head_kv=1, rows=16),
    "70B-like: 80 layers": dict(n_layer=80, n_head=8, n_head_kv=1, n_ff=256, rows=1),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {name: write_tiny_llama(folder / f"m{i}.gguf", **kw) for i, (name, kw) in enumerate(MODELS.items())}


@pytest.fixture(scope="module")
def small_model(models):
    return models["4 layers, GQA 4, tied, F32"]


@pytest.mark.parametrize("model", MODELS)
def test_every_mix_gives_the_same_file_as_llama_quantize(model, models, tmp_path):
    src = models[model]
    for mix in [*MIXES, *IQUANT_MIXES]:
        theirs = llama_quantize(src, tmp_path / f"{mix}.llama.gguf", mix)
        ours = tmp_path / f"{mix}.kquant.gguf"
        quantize_gguf(src, ours, mix, progress=False)
        assert sha256(ours) == sha256(theirs), mix


@pytest.mark.parametrize(
    "options",
    [
        dict(mix="Q4_K_M", pure=True),
        dict(mix="Q3_K_M", overrides=[(r"blk\.0\.attn_v", "Q8_0"), ("ffn_down", "Q5_K"), (r"blk\.1\.", "F16")]),
        dict(mix="Q4_K_S", output_type="Q5_K"),
        dict(mix="Q5_K_M", token_embd_type="F16", overrides={"attn_q": "F32"}),
    ],
    ids=["pure", "overrides", "output type (tied)", "token embedding type"],
)
def test_llama_quantize_options_give_the_same_file_too(options, small_model, tmp_path):
    options = dict(options)
    mix = options.pop("mix")
    theirs = llama_quantize(small_model, tmp_path / "llama.gguf", mix, **options)
    ours = tmp_path / "kquant.gguf"
    quantize_gguf(small_model, ours, mix, progress=False, **options)
    assert sha256(ours) == sha256(theirs)


def test_metadata_is_copied_in_order_with_quantization_version_and_file_type_moved_to_the_end(small_model, tmp_path):
    out = quantize_gguf(small_model, tmp_path / "q.gguf", "Q4_K_M", progress=False).path
    src_fields = {k: f for k, f in GGUFReader(small_model).fields.items() if not k.startswith("GGUF.")}
    out_fields = {k: f for k, f in GGUFReader(out).fields.items() if not k.startswith("GGUF.")}
    moved = ["general.quantization_version", "general.file_type"]
    assert list(out_fields) == [k for k in src_fields if k not in moved] + moved
    for key in src_fields:
        if key not in moved:
            assert (out_fields[key].types, out_fields[key].contents()) == (
                src_fields[key].types,
                src_fields[key].contents(),
            ), key
    assert (out_fields["general.quantization_version"].contents(), out_fields["general.file_type"].contents()) == (
        2,
        15,
    )


def test_tensors_are_written_in_llama_cpps_order_and_aligned_to_32_bytes(small_model, tmp_path):
    out = GGUFReader(quantize_gguf(small_model, tmp_path / "q.gguf", "Q6_K", progress=False).path)
    assert [t.name for t in out.tensors] == [c.name for c in plan_gguf(small_model, "Q6_K")]
    assert out.tensors[0].name == "output_norm.weight"
    assert all(t.data_offset % 32 == 0 for t in out.tensors)


def test_the_summary_gives_each_tensors_type_bytes_bits_per_weight_and_time(small_model, tmp_path):
    summary = quantize_gguf(small_model, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    plan = plan_gguf(small_model, "Q4_K_M")
    assert [(r.name, r.type) for r in summary.rows] == [(c.name, c.type) for c in plan]
    out = {t.name: t for t in GGUFReader(summary.path).tensors}
    for row in summary.rows:
        assert row.nbytes == out[row.name].n_bytes
        assert row.bpw == 8 * row.nbytes / out[row.name].n_elements
    assert {r.bpw for r in summary.rows if r.type.name == "Q4_K"} == {4.5}
    assert 4.5 < summary.bpw < 6.5625
    assert summary.seconds > 0 and all(r.seconds > 0 for r in summary.rows)
    assert "average bits per weight" in str(summary)


def test_the_input_is_never_modified(small_model, tmp_path):
    before = sha256(small_model)
    quantize_gguf(small_model, tmp_path / "q.gguf", "Q2_K", progress=False)
    assert sha256(small_model) == before


# --- safety ---------------------------------------------------------------------------------


def test_refuses_to_overwrite_the_input(small_model, tmp_path):
    before = sha256(small_model)
    with pytest.raises(KQuantError, match="refusing to overwrite the input"):
        quantize_gguf(small_model, small_model, "Q4_K_M", overwrite=True, progress=False)
    link = tmp_path / "link.gguf"
    link.symlink_to(small_model)
    with pytest.raises(KQuantError, match="refusing to overwrite the input"):
        quantize_gguf(small_model, link, "Q4_K_M", overwrite=True, progress=False)
    assert sha256(small_model) == before


def test_an_existing_output_is_replaced_only_when_asked(small_model, tmp_path):
    dst = tmp_path / "q.gguf"
    dst.write_bytes(b"keep me")
    with pytest.raises(KQuantError, match="already exists: pass overwrite=True"):
        quantize_gguf(small_model, dst, "Q4_K_M", progress=False)
    assert dst.read_bytes() == b"keep me"
    quantize_gguf(small_model, dst, "Q4_K_M", overwrite=True, progress=False)
    assert dst.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize(
    "failure", [KeyboardInterrupt, OSError(28, "No space left on device")], ids=["Ctrl-C", "full disk"]
)
def test_a_failure_mid_write_leaves_no_partial_file_and_the_old_output_intact(
    failure, small_model, tmp_path, monkeypatch
):
    dst = tmp_path / "q.gguf"
    dst.write_bytes(b"previous output")
    calls = []

    def quantize_then_fail(x, qtype):
        calls.append(qtype)
        if len(calls) == 3:
            raise failure
        return real_quantize(x, qtype)

    real_quantize = kquant.quantize_file.quantize
    monkeypatch.setattr(kquant.quantize_file, "quantize", quantize_then_fail)
    expected = KeyboardInterrupt if failure is KeyboardInterrupt else KQuantError
    with pytest.raises(expected):
        quantize_gguf(small_model, dst, "Q4_K_M", overwrite=True, progress=False)
    assert len(calls) == 3  # it did fail part-way through
    assert dst.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.gguf"]


@pytest.mark.parametrize(
    "dtype, bad",
    [("F32", np.float32(np.nan)), ("F16", np.float16(np.inf)), ("F16", np.float16(-np.nan)), ("BF16", b"\x80\x7f")],
    ids=["F32 NaN", "F16 Inf", "F16 NaN", "BF16 Inf"],
)
def test_nan_weights_are_refused_like_llama_cpp_does(tmp_path, dtype, bad):
    src = write_tiny_llama(tmp_path / "nan.gguf", n_layer=1, dtype=dtype)
    data = bytearray(src.read_bytes())
    t = next(t for t in GGUFReader(src).tensors if t.name == "blk.0.ffn_up.weight")
    bad = bad if isinstance(bad, bytes) else bad.tobytes()
    data[t.data_offset + 4 : t.data_offset + 4 + len(bad)] = bad  # not the first weight: a later one too is read
    src.write_bytes(bytes(data))
    with pytest.raises(KQuantError, match="blk.0.ffn_up.weight holds 1 NaN or Inf"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.gguf"]
    with pytest.raises(KQuantError):  # llama.cpp: "tensor 'blk.0.ffn_up.weight' has invalid data"
        llama_quantize(src, tmp_path / "llama.gguf", "Q4_K_M")
    # (llama.cpp leaves its half-written llama.gguf behind; kquant leaves nothing.)


def test_weights_too_large_for_fp16_scales_are_refused_like_llama_cpp_does(tmp_path):
    src = write_tiny_llama(tmp_path / "huge.gguf", n_layer=1)
    data = bytearray(src.read_bytes())
    t = next(t for t in GGUFReader(src).tensors if t.name == "blk.0.ffn_up.weight")
    data[t.data_offset : t.data_offset + 4] = np.float32(1e6).tobytes()  # Q4_0's d = max/-8 overflows fp16
    src.write_bytes(bytes(data))
    with pytest.raises(KQuantError, match=r"blk.0.ffn_up.weight as Q4_0: block 0: weights too large for Q4_0's fp16 d"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_0", progress=False)
    with pytest.raises(KQuantError):  # llama.cpp: "quantized data validation failed"
        llama_quantize(src, tmp_path / "llama.gguf", "Q4_0")


def test_weights_beyond_fp16s_range_are_refused_for_an_f16_target_like_llama_cpp_does(tmp_path):
    src = write_tiny_llama(tmp_path / "huge.gguf", n_layer=1)  # F32 weights
    data = bytearray(src.read_bytes())
    t = next(t for t in GGUFReader(src).tensors if t.name == "blk.0.ffn_up.weight")
    data[t.data_offset + 4 : t.data_offset + 8] = np.float32(65520).tobytes()  # the first value that rounds to inf
    src.write_bytes(bytes(data))
    with pytest.raises(KQuantError, match=r"blk.0.ffn_up.weight has weights beyond F16's range"):
        quantize_gguf(src, tmp_path / "q.gguf", "F16", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.gguf"]
    with pytest.raises(KQuantError):
        llama_quantize(src, tmp_path / "llama.gguf", "F16")


# --- bad input: one clear error -------------------------------------------------------------


def test_a_truncated_file_is_one_clear_error(small_model, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(small_model.read_bytes()[:-5000])
    with pytest.raises(KQuantError, match="truncated"):
        quantize_gguf(cut, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    cut.write_bytes(small_model.read_bytes()[:3000])  # cut inside the metadata
    with pytest.raises(KQuantError, match="truncated or corrupt"):
        quantize_gguf(cut, tmp_path / "q.gguf", "Q4_K_M", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a GGUF file"), (b"PK\x03\x04 a zip file", "not a GGUF file"), (None, "no such file")],
    ids=["empty", "not GGUF", "missing"],
)
def test_files_that_are_not_gguf_are_one_clear_error(content, message, tmp_path):
    src = tmp_path / "model.gguf"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(KQuantError, match=message):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", progress=False)


def test_an_already_quantized_model_is_refused(small_model, tmp_path):
    q = quantize_gguf(small_model, tmp_path / "q.gguf", "Q4_K_M", progress=False).path
    with pytest.raises(KQuantError, match=r"already quantized \(token_embd.weight is Q6_K\)"):
        quantize_gguf(q, tmp_path / "qq.gguf", "Q4_K_M", progress=False)


def test_an_unsupported_architecture_is_refused(tmp_path):
    src = tmp_path / "gpt2.gguf"
    w = GGUFWriter(src, "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 256), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(KQuantError, match="architecture 'gpt2' is not supported"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", progress=False)


def test_a_missing_hyper_parameter_is_refused(tmp_path):
    src = tmp_path / "nolayers.gguf"
    w = GGUFWriter(src, "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 256), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(KQuantError, match="lacks the metadata key llama.context_length"):
        plan_gguf(src, "Q4_K_M")


def test_an_output_type_that_does_not_fit_the_rows_is_refused(models, tmp_path):
    src = models["rows of 480 and 200, BF16"]
    with pytest.raises(KQuantError, match="rows of 480 weights, not a multiple of Q6_K's block of 256"):
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M", output_type="Q6_K", progress=False)


def test_strings_with_a_nul_byte_are_copied_as_llama_cpp_copies_them(small_model, tmp_path):
    """llama.cpp copies metadata as C strings: a token or value with a NUL byte ends there. Same sha256."""
    from gguf import GGUFValueType

    from kquant.gguf.reader import open_gguf
    from kquant.quantize_file import metadata

    src = tmp_path / "nul.gguf"
    w = GGUFWriter(src, "llama")
    del w.kv_data[0]["general.architecture"]  # copied from the source below, in its place
    with open_gguf(small_model) as f:
        for key, value, vtype, sub in metadata(f):
            if key == "tokenizer.ggml.tokens":
                value = [b"a\x00b" if i == 300 - 1 else t for i, t in enumerate(value)]  # a raw NUL inside a token
            w.add_key_value(key, value, vtype, sub_type=sub)
        w.add_key_value("kquant.test.nul", b"before\x00after", GGUFValueType.STRING)
        for t in f.tensors:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    ours = quantize_gguf(src, tmp_path / "ours.gguf", "Q4_K_M", progress=False).path
    theirs = llama_quantize(src, tmp_path / "llama.gguf", "Q4_K_M")
    assert sha256(ours) == sha256(theirs)


def test_memory_stays_bounded_by_a_tensor_not_by_the_file(tmp_path):
    """Pages of a tensor already quantized are let go: the peak grows by far less than the input's size."""
    import subprocess
    import sys

    if not pathlib.Path("/proc/self/status").exists():
        pytest.skip("reads the peak resident memory from Linux's /proc/self/status (VmHWM)")
    src = write_tiny_llama(tmp_path / "wide.gguf", n_layer=24, n_embd=512, n_ff=1536, n_head=8, dtype="F16")
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest).
    code = (
        "import sys, kquant\n"
        "hwm = lambda: int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024\n"
        "base = hwm()\n"
        "kquant.quantize_gguf(sys.argv[1], sys.argv[2], 'Q8_0', progress=False)\n"
        "print(base, hwm())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, src, tmp_path / "q.gguf"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    base, peak = map(int, out.stdout.split()[-2:])
    size = src.stat().st_size
    print(f"input {size / 1e6:.0f} MB, peak memory {base / 1e6:.0f} -> {peak / 1e6:.0f} MB")
    assert peak - base < 0.5 * size


@pytest.mark.parametrize(
    "model", ["4 layers, GQA 4, tied, F32", "8 layers, GQA 2, untied, F16", "rows of 480 and 200, BF16"]
)
def test_weights_and_blocks_that_restate_the_source_give_the_same_file(model, models, tmp_path):
    # The doors GPTQ, AWQ and LoRA use change nothing when they pass the source's own values.
    src = models[model]
    plain = quantize_gguf(src, tmp_path / "plain.gguf", "Q4_K_M", progress=False)
    same = {t.name: kquant.gguf.reader.weights(t) for t in kquant.gguf.reader.open_gguf(src).tensors}
    via_weights = quantize_gguf(src, tmp_path / "w.gguf", "Q4_K_M", weights=same, progress=False)
    assert sha256(via_weights.path) == sha256(plain.path)
    written = {t.name: np.array(t.data) for t in GGUFReader(plain.path).tensors if t.tensor_type.value >= 2}
    via_blocks = quantize_gguf(src, tmp_path / "b.gguf", "Q4_K_M", blocks=written, progress=False)
    assert sha256(via_blocks.path) == sha256(plain.path)


def test_replaced_weights_are_what_gets_written(small_model, tmp_path):
    choices = {c.name: c for c in plan_gguf(small_model, "Q8_0")}
    name, norm = "blk.0.attn_q.weight", "blk.0.attn_norm.weight"
    new = {name: np.full(choices[name].shape, 0.5, np.float32), norm: np.full(choices[norm].shape, 3.0, np.float32)}
    out = quantize_gguf(small_model, tmp_path / "x.gguf", "Q8_0", weights=new, progress=False)
    f = kquant.gguf.reader.open_gguf(out.path)
    got = {t.name: t for t in f.tensors}
    assert np.allclose(dequantize(np.ascontiguousarray(got[name].data), "Q8_0"), 0.5, rtol=1e-3)  # Q8_0's fp16 scale
    assert np.all(kquant.gguf.reader.weights(got[norm]) == 3.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weights={"nope.weight": np.zeros(3)}), "not a tensor of the source"),
        (dict(weights={"blk.0.attn_q.weight": np.zeros(3)}), "the tensor's shape is"),
        (dict(blocks={"blk.0.attn_q.weight": np.zeros(3, np.uint8)}), "see plan_gguf"),
        (dict(weights={"blk.0.attn_norm.weight": np.full(64, np.nan)}), "NaN or Inf"),
    ],
)
def test_bad_replacements_are_one_clear_error_before_anything_is_written(kwargs, message, small_model, tmp_path):
    if "NaN" in message:
        shape = {c.name: c.shape for c in plan_gguf(small_model)}["blk.0.attn_norm.weight"]
        kwargs = dict(weights={"blk.0.attn_norm.weight": np.full(shape, np.nan, np.float32)})
    with pytest.raises(KQuantError, match=message):
        quantize_gguf(small_model, tmp_path / "x.gguf", "Q4_K_M", **kwargs, progress=False)
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("model", ["8 layers, GQA 2, untied, F16", "8 experts", "rows of 480 and 200, BF16"])
def test_worker_processes_write_the_same_file_as_one_process(model, models, tmp_path, monkeypatch, capfd):
    # Tiny models are normally done in-process; lower the thresholds so that forked workers
    # split every tensor into many row ranges and write them at their offsets.
    monkeypatch.setattr(kquant.quantize_file, "_PARALLEL_MIN_WEIGHTS", 0)
    monkeypatch.setattr(kquant.quantize_file, "_UNIT_WEIGHTS", 1000)
    src = models[model]
    imatrix = {
        c.name: np.linspace(0.5, 2.0, c.shape[-1] * (c.shape[0] if len(c.shape) > 2 else 1))
        for c in plan_gguf(src)
        if len(c.shape) > 1
    }
    theirs = llama_quantize(src, tmp_path / "llama.gguf", "Q4_K_M", nthread=2, imatrix=imatrix)
    capfd.readouterr()
    ours = quantize_gguf(src, tmp_path / "kquant.gguf", "Q4_K_M", imatrix=imatrix, threads=2, progress=False)
    assert capfd.readouterr().err == ""  # the workers stop quietly (no traceback from the pool's SIGTERM)
    assert sha256(ours.path) == sha256(theirs)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_whole_number_of_at_least_one(threads, small_model, tmp_path):
    with pytest.raises(KQuantError, match="threads must be"):
        quantize_gguf(small_model, tmp_path / "x.gguf", threads=threads, progress=False)


@pytest.mark.parametrize("model", list(MODELS)[:4])
@pytest.mark.parametrize("mix", ["F16", "BF16", "F32"])
def test_float_file_types_give_the_same_file_as_llama_quantize(mix, model, models, tmp_path):
    # llama.cpp applies no rule, override or fallback when the file type is a float one: only
    # --token-embedding-type and --output-tensor-type still count (an override here is ignored).
    src = models[model]
    options = dict(overrides={"attn_q": "Q8_0"}, token_embd_type="Q8_0")
    theirs = llama_quantize(src, tmp_path / "llama.gguf", mix, **options)
    ours = quantize_gguf(src, tmp_path / "kquant.gguf", mix, progress=False, **options)
    assert sha256(ours.path) == sha256(theirs)
    assert all(c.type.name in (mix, c.source.name) for c in plan_gguf(src, mix))  # converted, or kept as it was


def test_a_model_read_from_f16_has_the_values_numpy_and_gguf_py_give():
    from kquant.model import hub  # the bundled model: F16, as downloads are

    path = hub.bundled()
    theirs = {t.name: np.asarray(t.data) for t in GGUFReader(path).tensors}
    with kquant.gguf.reader.open_gguf(path) as f:
        for t in f.tensors:
            if t.type.name == "F16":
                np.testing.assert_array_equal(kquant.gguf.reader.weights(t), theirs[t.name].astype(np.float32))


def test_kquants_writer_packs_every_array_as_gguf_py_does(tmp_path):
    from gguf import GGUFValueType as V

    from kquant.gguf.writer import _ITEM_DTYPES
    from kquant.gguf.writer import GGUFWriter as Writer

    rng = np.random.default_rng(0)
    arrays = [(f"n.{t.name}", rng.integers(0, 100, 7).astype(dt).tolist(), t) for t, dt in _ITEM_DTYPES.items()]
    arrays += [
        ("f.scores", np.float32([-1.5, np.inf, 3e-45, -0.0]).tolist(), V.FLOAT32),
        ("f.ints", [1, -2, 3], V.FLOAT32),  # Python ints for a float item
        ("b.ints", [0, 2, 1], V.BOOL),  # truthiness
        ("u.big", [2**64 - 1, 0], V.UINT64),
        ("s.bytes", [b"a", b"", "\u00e9".encode(), b"x\xff"], V.STRING),  # raw bytes, not valid UTF-8 too
        ("s.str", ["hello", "w\u00f6rld", ""], V.STRING),
        ("t.tuple", (5, 6), V.INT16),
    ]
    files = []
    for cls in (GGUFWriter, Writer):
        path = tmp_path / f"{cls.__module__}.gguf"
        w = cls(path, "llama")
        for key, value, item in arrays:
            w.add_key_value(key, value, V.ARRAY, sub_type=item)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.close()
        files.append(path.read_bytes())
    assert files[0] == files[1]


@pytest.mark.parametrize(
    "value, item",
    [([300], "UINT8"), ([-1], "UINT32"), ([1.5], "INT32"), ([1e39], "FLOAT32"), ([2**63], "INT64")],
    ids=["uint8 overflow", "negative unsigned", "float for int", "beyond float32", "int64 overflow"],
)
def test_kquants_writer_refuses_what_gguf_py_refuses(tmp_path, value, item):
    # numpy's casts would wrap, truncate or give inf; struct.pack refuses, and so does kquant's writer
    from gguf import GGUFValueType as V

    from kquant.gguf.writer import GGUFWriter as Writer

    errors = []
    for cls in (GGUFWriter, Writer):
        w = cls(tmp_path / f"{cls.__module__}.gguf", "llama")
        w.add_key_value("k", value, V.ARRAY, sub_type=V[item])
        w.write_header_to_file()
        with pytest.raises((struct.error, OverflowError)) as e:
            w.write_kv_data_to_file()
        errors.append(type(e.value))
        w.close()
    assert errors[0] is errors[1]
