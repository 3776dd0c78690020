"""The command line: ``python -m kquant quantize | inspect | plan``, as llama-quantize's users expect."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tiny_llama import write_tiny_llama

from kquant.__main__ import main
from kquant.gguf.summary import sha256
from kquant.reference import model_quantize as llama_quantize


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("cli") / "tiny-f32.gguf", n_layer=4, n_head_kv=1, rows=32)


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``kquant ARGV``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_quantize_takes_llama_quantizes_argument_order_and_writes_its_file(model, tmp_path, capsys):
    code, out, err = run(capsys, "quantize", model, tmp_path / "q.gguf", "Q4_K_M", "--quiet")
    assert (code, out, err) == (0, "", "")
    assert sha256(tmp_path / "q.gguf") == sha256(llama_quantize(model, tmp_path / "llama.gguf", "Q4_K_M"))


def test_quantize_takes_threads_and_refuses_a_bad_count_in_one_line(model, tmp_path, capsys):
    code, _, err = run(capsys, "quantize", model, tmp_path / "q.gguf", "Q4_K_M", "--quiet", "--threads", "2")
    assert (code, err) == (0, "")
    assert sha256(tmp_path / "q.gguf") == sha256(llama_quantize(model, tmp_path / "llama.gguf", "Q4_K_M"))
    code, _, err = run(capsys, "quantize", model, tmp_path / "r.gguf", "Q4_K_M", "--threads", "0")
    assert code == 1 and err.count("\n") == 1 and "threads must be" in err


def test_quantize_prints_the_tensor_table_and_passes_llama_quantizes_options(model, tmp_path, capsys):
    dst = tmp_path / "q.gguf"
    code, out, _ = run(capsys, "quantize", model, dst, "q3_k_m", "--tensor-type", r"blk\.0\.attn_v=q8_0", "--pure")
    assert code == 0
    assert "blk.0.attn_v.weight" in out and "Q8_0" in out and "average bits per weight" in out
    theirs = llama_quantize(
        model, tmp_path / "llama.gguf", "Q3_K_M", pure=True, overrides=[(r"blk\.0\.attn_v", "Q8_0")]
    )
    assert sha256(dst) == sha256(theirs)


def test_inspect_shows_metadata_and_a_tensor_table_with_totals(model, tmp_path, capsys):
    run(capsys, "quantize", model, tmp_path / "q.gguf", "Q4_K_M", "--quiet")
    code, out, _ = run(capsys, "inspect", tmp_path / "q.gguf")
    assert code == 0
    lines = out.splitlines()
    assert any(line.split() == ["general.file_type", "15"] for line in lines)
    assert any(line.startswith("blk.3.attn_v.weight") and "Q6_K" in line and "6.562" in line for line in lines)
    assert "38 tensors" in lines[-1] and "(average bits per weight)" in lines[-1]


def test_plan_shows_every_tensors_type_and_reason_without_writing(model, tmp_path, capsys):
    before = set(os.listdir(model.parent))
    code, out, _ = run(capsys, "plan", model, "Q4_K_M")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("blk.2.ffn_down.weight"))
    assert "Q6_K" in line and "a layer that gets more bits" in line
    assert set(os.listdir(model.parent)) == before


@pytest.mark.parametrize("command", ["quantize", "inspect", "plan"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    assert f"usage: kquant {command}" in capsys.readouterr().out


def test_python_dash_m_kquant_runs_the_same_main():
    result = subprocess.run([sys.executable, "-m", "kquant", "--help"], capture_output=True, text=True, cwd=os.getcwd())
    assert result.returncode == 0
    assert "quantize" in result.stdout and "inspect" in result.stdout and "plan" in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["quantize", "{missing}", "{out}", "Q4_K_M"], "no such file"),
        (["quantize", "{model}", "{out}", "Q4_K_X"], "unknown mix 'Q4_K_X'"),
        (["quantize", "{model}", "{model}", "Q4_K_M", "--force"], "refusing to overwrite the input"),
        (["quantize", "{model}", "{out}", "Q4_K_M", "--tensor-type", "attn_v"], "write it as REGEX=TYPE"),
        (["inspect", "{not_gguf}"], "not a GGUF file"),
        (["plan", "{not_gguf}", "Q4_K_M"], "not a GGUF file"),
    ],
    ids=[
        "missing input",
        "unknown mix",
        "output is the input",
        "bad --tensor-type",
        "inspect non-GGUF",
        "plan non-GGUF",
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_1(argv, message, model, tmp_path, capsys):
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    names = dict(missing=tmp_path / "missing.gguf", out=tmp_path / "q.gguf", model=model, not_gguf=not_gguf)
    code, out, err = run(capsys, *[a.format(**names) for a in argv])
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "q.gguf").exists()


def test_an_existing_output_needs_force(model, tmp_path, capsys):
    dst = tmp_path / "q.gguf"
    dst.write_bytes(b"old")
    code, _, err = run(capsys, "quantize", model, dst, "Q8_0", "--quiet")
    assert code == 1 and "already exists" in err and "--force" in err
    assert dst.read_bytes() == b"old"
    code, _, _ = run(capsys, "quantize", model, dst, "Q8_0", "--quiet", "--force")
    assert code == 0 and dst.read_bytes()[:4] == b"GGUF"


def test_a_missing_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["quantize", "only-one.gguf"])
    assert exit.value.code == 2
    assert "usage: kquant quantize" in capsys.readouterr().err
