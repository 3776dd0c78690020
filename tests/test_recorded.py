"""Without llama.cpp: the recorded digests of its output, and notebooks that still run to the end.

llama-cpp-python is the ``llama`` extra. Where it is missing, the notebooks' comparisons with
llama.cpp's bytes check kquant's against sha256s recorded from llama.cpp
(kquant.reference.recorded, kquant/data/llama_cpp_digests.json), and the notebooks that run
models in llama.cpp say in one line what to install and skip the rest (kquant.llamacpp).
Here llama.cpp is made unimportable in the notebooks' kernels by tests/no_llama/sitecustomize.py
on their PYTHONPATH; the recorded digests are checked against the live oracle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from notebook_tools import NOTEBOOKS, ROOT, check_cells, execute, printed_text
from test_notebooks import CLAIMS_00_05, _claims_07

from kquant import KQuantError, llamacpp, reference
from kquant.exercises.notebook import load, with_solutions
from kquant.reference import recorded

NO_LLAMA = ROOT / "tests" / "no_llama"
STAND_IN = "(llama.cpp is not installed: "
RECORDED_FROM = f"whose sha256 equals the one recorded from {llamacpp.PIN}'s output for this input"
SOURCES = {p.name[:2]: p.read_text() for p in (ROOT / "scripts" / "notebooks").glob("[0-9][0-9]_*.py")}
# The notebooks that compare kquant's bytes with llama.cpp's (through kquant.reference.recorded), and those that
# run models in llama.cpp throughout (guarded by llamacpp.notebook_needs), read from their sources.
COMPARING = {n for n, text in SOURCES.items() if "recorded." in text}
RUNNING = {n for n, text in SOURCES.items() if "llamacpp.notebook_needs(" in text}
FIRST = [p for p in NOTEBOOKS if p.name[:2] <= "07"]


@pytest.fixture
def offline(monkeypatch):
    """This process as if llama.cpp were not installed."""
    monkeypatch.setattr(recorded, "live", lambda: False)
    monkeypatch.setattr(llamacpp, "available", lambda: False)


def _live_record(tmp_path, monkeypatch, call) -> dict:
    """Run ``call`` with llama.cpp live and recording; the digests it recorded, as the package stores them."""
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(recorded.RECORD_ENV, str(log))
    out = call()
    monkeypatch.delenv(recorded.RECORD_ENV)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return out, {e["key"]: {"sha256": e["sha256"], "what": e["what"]} for e in entries}


@pytest.mark.skipif(not reference.available(), reason="records from llama.cpp itself")
def test_live_it_is_the_oracle_and_offline_kquants_bytes_stand_in_only_with_llama_cpps_digest(
    tmp_path, monkeypatch, capsys
):
    x = np.random.default_rng(7).standard_normal((3, 256)).astype(np.float32)
    theirs, digests = _live_record(tmp_path, monkeypatch, lambda: recorded.quantize(x, "Q4_K"))
    assert (theirs == reference.quantize(x, "Q4_K")).all() and capsys.readouterr().out == ""
    ((key, entry),) = digests.items()
    assert entry["sha256"] == __import__("hashlib").sha256(theirs.tobytes()).hexdigest()

    monkeypatch.setattr(recorded, "live", lambda: False)
    monkeypatch.setattr(recorded, "digests", lambda: digests)
    assert (recorded.quantize(x, "Q4_K") == theirs).all()
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(STAND_IN) and RECORDED_FROM in line and 'pip install "kquant[llama]"' in line

    with pytest.raises(recorded.NotRecorded, match=r"not one of them: pip install \"kquant\[llama\]\""):
        recorded.quantize(x[:2], "Q4_K")  # another input: no digest of it, so no answer
    with pytest.raises(recorded.NotRecorded):
        recorded.quantize(x, "Q5_K")  # the same input, another type
    digests[key] = {**entry, "sha256": "0" * 64}  # kquant's bytes are not the recorded ones: refused
    with pytest.raises(KQuantError, match="kquant's result is not llama.cpp's"):
        recorded.quantize(x, "Q4_K")


@pytest.mark.skipif(not reference.available(), reason="records from llama.cpp itself")
def test_a_whole_file_offline_is_kquants_only_when_its_sha256_is_llama_cpps(tmp_path, monkeypatch, capsys):
    from kquant.gguf.summary import sha256
    from kquant.model import hub

    theirs, digests = _live_record(
        tmp_path, monkeypatch, lambda: recorded.model_quantize(hub.bundled(), tmp_path / "l.gguf", "Q8_0")
    )
    monkeypatch.setattr(recorded, "live", lambda: False)
    monkeypatch.setattr(recorded, "digests", lambda: digests)
    ours = recorded.model_quantize(hub.bundled(), tmp_path / "k.gguf", "Q8_0")
    assert sha256(ours) == sha256(theirs) and STAND_IN in capsys.readouterr().out
    digests[next(iter(digests))]["sha256"] = "0" * 64
    with pytest.raises(KQuantError, match="not llama.cpp's"):
        recorded.model_quantize(hub.bundled(), tmp_path / "bad.gguf", "Q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.gguf", "l.gguf", "log.jsonl"], "nothing left behind"


@pytest.mark.skipif(not reference.available(), reason="re-records the digests from llama.cpp itself")
def test_every_recorded_digest_is_what_llama_cpp_gives_now():
    """record_digests.py --check: the notebooks re-run live give the package's digests, none missing, none extra."""
    proc = subprocess.run(
        [sys.executable, ROOT / "scripts" / "record_digests.py", "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    stored = json.loads(recorded.FILE.read_text())
    assert stored["llama-cpp-python"] == llamacpp.PIN.split("==")[1]
    used = {nb[:2] for entry in stored["digests"].values() for nb in entry["notebooks"]}
    assert used == COMPARING and {"01", "03", "04", "05", "07"} <= used


def test_the_notebooks_that_run_models_in_llama_cpp_are_guarded():
    assert {"08", "09", "10", "17"} <= RUNNING


def test_without_llama_cpp_a_cell_guard_and_a_notebook_guard_say_one_line(offline, capsys):
    assert not llamacpp.needed("the answers")
    assert not llamacpp.notebook_needs("the table")  # outside IPython: the line only
    cell, notebook = capsys.readouterr().out.splitlines()
    assert cell.startswith('llama.cpp is not installed: the answers. To see it: pip install "kquant[llama]"')
    assert cell.endswith("then restart the kernel; this cell is skipped")
    assert notebook.endswith("until then the cells below are skipped")


@pytest.fixture
def no_llama_kernels(monkeypatch):
    """Notebook kernels started now import no llama_cpp (tests/no_llama/sitecustomize.py on their PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NO_LLAMA), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("LLAMA_CPP_LIB_PATH", raising=False)


@pytest.mark.parametrize("path", FIRST, ids=lambda p: p.stem)
def test_notebooks_00_to_07_run_without_llama_cpp_with_solutions_and_their_comparisons_use_the_digests(
    path, no_llama_kernels
):
    nb, _seconds = execute(with_solutions(load(path)))
    text = printed_text(nb)
    failed = {k: v for k, v in check_cells(nb).items() if not v.startswith("✔")}
    assert not failed, failed
    number = path.name[:2]
    stand_ins = [line for line in text.splitlines() if line.startswith(STAND_IN)]
    if number in COMPARING:
        assert stand_ins and all(RECORDED_FROM in line for line in stand_ins), stand_ins
    else:
        assert not stand_ins
    if number in CLAIMS_00_05:  # what the prose says holds without llama.cpp too
        CLAIMS_00_05[number](text)
    if number == "07":
        _claims_07(text)
    if number == "06":
        assert "llama.cpp is not installed: how unevenly each kind of matrix's inputs are spread" in text
    if number == "00":
        # here llama-cpp-python's metadata is installed, its module hidden (test_install checks the real core install)
        assert "✘ llama-cpp-python: " in text and "✘ llama.cpp's quantizer: " in text


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in RUNNING], ids=lambda p: p.stem)
def test_notebooks_that_run_models_in_llama_cpp_say_what_to_install_and_run_to_the_end(path, no_llama_kernels):
    nb, _seconds = execute(load(path))
    code = [c for c in nb.cells if c.cell_type == "code"]
    said = [i for i, c in enumerate(code) if c.outputs]
    assert said == [1], "only the import cell says something: one line"
    (line,) = printed_text(nb).strip().splitlines()
    assert line.startswith("llama.cpp is not installed: this notebook ") and 'pip install "kquant[llama]"' in line
    assert all(c.get("execution_count") for c in code), "every cell ran (skipped), to the last"


def test_the_check_names_every_missing_stale_and_unused_digest(monkeypatch, capsys):
    """What --check prints when llama.cpp now gives other digests than the package holds (no llama.cpp needed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_digests", ROOT / "scripts" / "record_digests.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stored = json.loads(recorded.FILE.read_text())
    keys = sorted(stored["digests"])
    fresh = {**stored, "digests": {k: dict(v) for k, v in stored["digests"].items() if k != keys[0]}}
    fresh["digests"][keys[1]]["sha256"] = "0" * 64
    fresh["digests"]["f" * 64] = {"sha256": "1" * 64, "what": "Q4_0 of a new input", "notebooks": ["03_blocks"]}
    monkeypatch.setattr(script, "record", lambda: fresh)
    assert script.main(["--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in out[:-1]) == ["missing", "no longer used", "stale"]
    assert out[-1] == "run python scripts/record_digests.py"
    monkeypatch.setattr(script, "record", lambda: stored)
    assert script.main(["--check"]) == 0
