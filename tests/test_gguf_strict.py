"""Specifications of kquant's one GGUF reader and one atomic writer (kquant.gguf).

The reader: on every hostile variant of a small model (tests/hostile_gguf.py), kquant agrees
with llama.cpp's ``llama_model_quantize``: it refuses every file llama.cpp refuses, accepts
every file llama.cpp accepts (except the few refusals listed in ``reader.DELIBERATE``), and
refuses with one KQuantError line that names the file, in bounded time and memory.

The writer: a file appears whole at its destination or not at all, whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import hostile_gguf as H
import numpy as np
import pytest
from gguf import GGUFReader
from tiny_llama import write_tiny_llama

from kquant.errors import KQuantError
from kquant.gguf import reader
from kquant.gguf.llama_keys import check_llama
from kquant.gguf.reader import StringArray, open_gguf
from kquant.gguf.writer import atomic_output, temp_name

# The variants llama.cpp accepts and kquant refuses on purpose, with the reason (reader.DELIBERATE).
DELIBERATE = {"n_dims 0": "n_dims 0", "dimension 0 in a matrix": "dimension 0"}
MEMORY_CAP = 64 << 20  # bytes of Python / numpy allocations kquant may use on any variant (tracemalloc peak)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    # rows=8: every row length of a real 2-layer llama, 8 rows per matrix; llama.cpp quantizes it.
    return write_tiny_llama(tmp_path_factory.mktemp("base") / "tiny.gguf", rows=8)


@pytest.fixture(scope="module")
def hostile(base, tmp_path_factory):
    """Every variant with both verdicts, computed once: {name: (path, recorded, llama, kquant)}."""
    vs = H.variants(base, tmp_path_factory.mktemp("hostile"))
    t0 = time.perf_counter()
    kq = H.kquant_verdicts([p for _, p, _ in vs])
    print(f"\nkquant judged {len(vs)} variants in {time.perf_counter() - t0:.1f} s")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        ll = None
    else:
        t0 = time.perf_counter()
        ll = H.llama_verdicts([p for _, p, _ in vs])
        print(f"llama.cpp judged them in {time.perf_counter() - t0:.1f} s")
    return {n: (p, rec, ll[str(p)] if ll else None, kq[str(p)]) for n, p, rec in vs}


def _llama(entry) -> str:
    """llama.cpp's verdict: asked now when llama-cpp-python is installed, else the recorded one."""
    _, recorded, llama, _ = entry
    return llama["verdict"] if llama else recorded


# --- the reader against llama.cpp


def test_llama_cpp_answers_as_recorded(hostile):
    """The recorded verdicts are llama.cpp 0c1e57098's: a llama.cpp upgrade that changes one shows here."""
    if next(iter(hostile.values()))[2] is None:
        pytest.skip("llama-cpp-python is not installed")
    changed = {n: (rec, ll["verdict"], ll.get("log")) for n, (_, rec, ll, _) in hostile.items() if rec != ll["verdict"]}
    assert not changed


def test_kquant_refuses_every_file_llama_cpp_refuses(hostile):
    missed = {n: kq for n, e in hostile.items() if _llama(e) == "refuse" and (kq := e[3])["verdict"] != "refuse"}
    assert not missed


def test_kquant_accepts_what_llama_cpp_accepts_but_the_deliberate_refusals(hostile):
    extra = {
        n: kq["error"]
        for n, e in hostile.items()
        if _llama(e) == "accept" and (kq := e[3])["verdict"] != "accept" and n not in DELIBERATE
    }
    assert not extra
    for n, key in DELIBERATE.items():
        assert key in reader.DELIBERATE
        assert _llama(hostile[n]) == "accept", f"{n}: llama.cpp refuses it now, so it is no longer a disagreement"
        assert hostile[n][3]["verdict"] == "refuse"


def test_random_damage_gets_the_same_verdict_from_both(base, tmp_path):
    """200 copies of the model damaged at random (seeded) before the tensor data: same verdict as llama.cpp."""
    pytest.importorskip("llama_cpp")
    paths = H.mutants(base, tmp_path, 200, seed=16)
    kq, ll = H.kquant_verdicts(paths), H.llama_verdicts(paths)
    differ = {p.name: (ll[str(p)]["verdict"], kq[str(p)]["verdict"], kq[str(p)]["error"]) for p in paths}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    assert not differ
    accepted = sum(v["verdict"] == "accept" for v in ll.values())
    print(f"\nrandom damage: llama.cpp accepts {accepted} of {len(paths)}; kquant agrees on all")


def test_every_refusal_is_one_line_naming_the_file(hostile):
    for name, (path, _, _, kq) in hostile.items():
        if kq["verdict"] == "refuse":
            assert "\n" not in kq["error"] and str(path) in kq["error"], (name, kq["error"])
        else:  # a crash (any exception but KQuantError), a hang or a kill is never an answer
            assert kq["verdict"] == "accept", (name, kq["error"], kq.get("traceback"))


def test_time_and_memory_are_bounded(hostile):
    # The guard against a true hang is the 30 s alarm in each child (a hang shows as verdict "hang");
    # no timing is asserted, so a busy machine cannot fail this test.
    slowest = max(hostile.items(), key=lambda kv: kv[1][3]["seconds"])
    print(f"\nslowest variant for kquant: {slowest[0]} ({slowest[1][3]['seconds']:.3f} s, fork included)")
    for name, (_, _, _, kq) in hostile.items():
        assert kq["verdict"] in ("accept", "refuse"), (name, kq)
        assert kq["peak_bytes"] < MEMORY_CAP, (name, kq["peak_bytes"])


def test_the_referee_catches_crashes_hangs_and_memory_blowups():
    """The harness the verdicts come from: an exception, an endless loop or an allocation past the cap
    in the child is reported as such, never taken for an answer."""
    assert H._run_forked(lambda p: {"verdict": "accept", "n": len(bytearray(3 << 30))}, "", 20, 1 << 30)[
        "error"
    ].startswith("MemoryError")
    assert H._run_forked(lambda p: time.sleep(100), "", 1, 1 << 30)["verdict"] == "hang"
    assert H._run_forked(lambda p: {}["x"], "", 20, 1 << 30)["verdict"] == "crash"


def test_a_few_messages_say_what_and_how_to_fix(hostile):
    def error(name):
        return hostile[name][3]["error"]

    assert "big-endian" in error("big-endian") and "little-endian" in error("big-endian")
    assert "truncated" in error("truncated at 24")
    assert "block_count is 0" in error("block_count 0")
    assert "i32" in error("block_count -1 as i32") and "u32" in error("block_count -1 as i32")
    assert "split.count" in error("split.count as string")
    assert "array of arrays" in error("array of arrays")
    assert "FIFO" in error("fifo") and "character device" in error("/dev/zero") and "folder" in error("folder")
    assert "no such file" in error("missing file")


# --- what the reader returns


def test_fields_and_tensors_match_gguf_py(base):
    ref = GGUFReader(base)
    with open_gguf(base) as f:
        check_llama(f)
        assert f.version == 3 and f.alignment == 32 and f.data_offset == ref.data_offset
        assert list(f.fields) == list(ref.fields)[3:]  # file order, no header pseudo-fields
        assert [t.name for t in f.tensors] == [t.name for t in ref.tensors]
        for t, r in zip(f.tensors, ref.tensors):
            assert t.ne == tuple(int(n) for n in r.shape) and t.shape == t.ne[::-1]
            assert t.offset == r.data_offset and t.n_bytes == r.n_bytes and t.type == r.tensor_type
            assert np.array_equal(t.data.reshape(-1), r.data.reshape(-1)) and not t.data.flags.writeable
        assert f.get("llama.block_count") == 2 and isinstance(f.get("llama.block_count"), int)
        assert f.get("kquant.test.string") == "héllo ☃"
        assert f.fields["kquant.test.string"].value == "héllo ☃".encode()
        assert f.get("kquant.test.u64s").tolist() == [1, 2**64 - 1]
        assert f.get("kquant.test.bools").tolist() == [True, False, True]
        assert f.get("tokenizer.ggml.tokens")[:3] == ["<s>", "</s>", "<0x00>"]
        assert isinstance(f.fields["tokenizer.ggml.tokens"].value, StringArray)
        assert f.fields["tokenizer.ggml.tokens"].type_name == "arr[str]"
        assert f.get("no.such.key", 7) == 7


def test_quantized_tensors_are_rows_of_bytes_and_close_releases_the_file(tmp_path):
    from gguf import GGMLQuantizationType, GGUFWriter

    path = tmp_path / "q8.gguf"
    w = GGUFWriter(path, "llama")
    blocks = np.arange(3 * 2 * 34, dtype=np.uint8).reshape(3, 68)  # 3 rows of 64 Q8_0 values: 2 blocks of 34 bytes
    w.add_tensor("w", blocks, raw_dtype=GGMLQuantizationType.Q8_0)  # gguf-py derives ne = (64, 3)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open_gguf(path) as f:
        (t,) = f.tensors
        assert t.ne == (64, 3) and t.shape == (3, 64) and t.n_elements == 192 and t.n_bytes == 204
        assert t.data.dtype == np.uint8 and t.data.shape == (3, 68) and np.array_equal(t.data, blocks)
    assert f.fields == {} and f.tensors == []


def test_raw_recreates_each_record_byte_for_byte(base):
    blob = base.read_bytes()
    with open_gguf(base) as f:
        records = b"".join(len(k.encode()).to_bytes(8, "little") + k.encode() + fld.raw for k, fld in f.fields.items())
    assert blob[24 : 24 + len(records)] == records


def test_a_256k_token_vocabulary_opens_in_little_memory(tmp_path):
    path = H.vocab_model(tmp_path / "vocab.gguf", 256 * 1024)
    t0 = time.perf_counter()
    with open_gguf(path) as f:
        opened = time.perf_counter() - t0
        tokens = f.get("tokenizer.ggml.tokens")
        listed = time.perf_counter() - t0
    assert len(tokens) == 256 * 1024 and tokens[12345] == "tok12345"
    # Memory is measured apart: tracemalloc slows every allocation down, so it would spoil the times.
    tracemalloc.start()
    with open_gguf(path) as f:
        _, peak_open = tracemalloc.get_traced_memory()
        n = sum(1 for _ in f.fields["tokenizer.ggml.tokens"].value)
    tracemalloc.stop()
    print(f"\n256K vocabulary: open {opened:.3f} s ({peak_open / 2**20:.1f} MiB), listed as str in {listed:.3f} s")
    assert n == 256 * 1024
    assert peak_open < 8 << 20  # the index: two int64 per token, no object per token


# --- the atomic writer


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".partial")]


def test_writes_whole_file_and_never_touches_the_input(base, tmp_path):
    before = _sha(base)
    dst = tmp_path / "out.gguf"
    with atomic_output(dst, protect=[base]) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".kquant-")
        tmp.write_bytes(base.read_bytes())
    assert _sha(dst) == before == _sha(base) and not _leftovers(tmp_path)
    (tmp_path / "hard.gguf").hardlink_to(base)
    (tmp_path / "soft.gguf").symlink_to(base)
    for same in (base, tmp_path / "hard.gguf", tmp_path / "soft.gguf"):
        with pytest.raises(KQuantError, match="input"), atomic_output(same, overwrite=True, protect=[base]):
            pass
    assert _sha(base) == before


def test_no_clobber_even_when_the_destination_appears_during_the_write(tmp_path):
    dst = tmp_path / "out.gguf"
    with pytest.raises(KQuantError, match="appeared"), atomic_output(dst) as tmp:
        tmp.write_bytes(b"new")
        dst.write_bytes(b"someone else's")
    assert dst.read_bytes() == b"someone else's" and not _leftovers(tmp_path)
    with pytest.raises(KQuantError, match="already exists"), atomic_output(dst):
        pass
    with atomic_output(dst, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert dst.read_bytes() == b"new"


@pytest.mark.parametrize("kind", ["character device", "symlink to a character device", "fifo", "folder"])
def test_non_regular_destinations_are_refused_even_with_overwrite(tmp_path, kind):
    dst = {"character device": Path("/dev/null"), "symlink to a character device": tmp_path / "null"}.get(
        kind, tmp_path / "x"
    )
    if kind == "symlink to a character device":
        dst.symlink_to("/dev/null")
    elif kind == "fifo":
        os.mkfifo(dst)
    elif kind == "folder":
        dst.mkdir()
    mode = os.stat(dst).st_mode
    with pytest.raises(KQuantError) as e, atomic_output(dst, overwrite=True):
        pytest.fail("the block must not run")
    assert "\n" not in str(e.value)
    assert os.stat(dst).st_mode == mode and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not _leftovers(tmp_path)


def test_a_250_byte_name_works_and_the_mode_follows_the_umask(tmp_path):
    dst = tmp_path / ("m" * 245 + ".gguf")
    old = os.umask(0o027)
    try:
        with atomic_output(dst) as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert dst.read_bytes() == b"x" and stat.S_IMODE(dst.stat().st_mode) == 0o640
    assert len(temp_name()) < 40


def test_failures_leave_nothing_and_say_so_in_one_line(tmp_path):
    dst = tmp_path / "out.gguf"
    with pytest.raises(RuntimeError), atomic_output(dst) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), atomic_output(dst) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KQuantError, match="nothing was written"), atomic_output(dst) as tmp:
        raise OSError(28, "No space left on device")
    assert not dst.exists() and not _leftovers(tmp_path)
    with pytest.raises(KQuantError, match="does not exist"), atomic_output(tmp_path / "nope" / "out.gguf"):
        pass


_CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from kquant.gguf.writer import atomic_output
    # As in a terminal, whatever the test runner inherited (nohup, a background job ignoring SIGINT):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    # ... and a signal mask inherited with these blocked (a job-control shell may leave one) would keep the
    # signal pending forever: the child would sleep through it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    with atomic_output(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half a model")
        print("writing", flush=True)
        # A long write, back in Python every 0.1 s as a real one is between its pieces. One
        # time.sleep(60) would race the signal: Python runs a handler only between bytecodes, and a
        # signal caught just after the last check before the sleep's system call began is acted on
        # when the sleep ends, after this test's 30 s wait (seen once, on a loaded machine).
        for _ in range(600):
            time.sleep(0.1)
    """
)


def _child_writing(dst: Path) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    p = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(dst)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert p.stdout.readline().strip() == "writing"
    assert _leftovers(dst.parent)  # the temp file is there while it writes
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_mid_write_leaves_no_temp_and_no_output(tmp_path, sig):
    dst = tmp_path / "out.gguf"
    p = _child_writing(dst)
    p.send_signal(sig)
    rc = p.wait(timeout=30)
    assert rc in (-sig, 128 + sig, 1)  # ends by the signal (SIGINT: KeyboardInterrupt, status 1)
    assert not dst.exists() and not _leftovers(tmp_path)


def test_the_next_run_removes_the_temp_of_a_killed_run(tmp_path):
    dst = tmp_path / "out.gguf"
    p = _child_writing(dst)
    p.kill()
    p.wait(timeout=30)
    (stale,) = _leftovers(tmp_path)
    assert f"-{p.pid}-" in stale  # recognisable: the pid of the run that left it
    elsewhere = tmp_path / f".kquant-000000-{p.pid}-0123abcd.partial"  # another machine's run, same pid
    elsewhere.write_bytes(b"")
    with atomic_output(tmp_path / "other.gguf") as tmp:
        tmp.write_bytes(b"x")
    assert _leftovers(tmp_path) == [elsewhere.name] and not dst.exists()


def test_a_dangling_symlink_is_not_followed_into_a_new_file(tmp_path):
    dst = tmp_path / "link.gguf"
    dst.symlink_to(tmp_path / "missing" / "target.gguf")
    with pytest.raises(KQuantError, match="symbolic link to a missing file"), atomic_output(dst):
        pass
    with atomic_output(dst, overwrite=True) as tmp:  # --force replaces the link itself
        tmp.write_bytes(b"x")
    assert not dst.is_symlink() and dst.read_bytes() == b"x"


# --- the command line on every variant


def test_the_command_line_answers_every_variant_in_one_line_and_leaves_nothing(hostile, tmp_path, capsys):
    """quantize / plan / inspect on each hostile file: exit 0, or exit 1 with one line on stderr and no
    file left behind; never a traceback or an internal error; and quantize refuses whatever llama.cpp refuses."""
    from kquant.__main__ import main

    for name, entry in hostile.items():
        path = entry[0]
        out = tmp_path / f"{abs(hash(name))}"
        out.mkdir()
        for argv in (
            ["quantize", str(path), str(out / "q.gguf"), "Q4_K_M", "--quiet"],
            ["plan", str(path), "Q4_K_M"],
            ["inspect", str(path)],
        ):
            code = main(argv)
            err = capsys.readouterr().err
            assert code in (0, 1), (name, argv[0], code, err)
            if code == 1:
                assert err.count("\n") == 1 and "internal error" not in err, (name, argv[0], err)
        assert sorted(p.name for p in out.iterdir()) in ([], ["q.gguf"]), (name, list(out.iterdir()))
        if _llama(entry) == "refuse":
            assert not (out / "q.gguf").exists(), f"{name}: llama.cpp refuses it, kquant quantized it"
