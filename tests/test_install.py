"""kquant as a user gets it: ``python -m build``, then the wheel in a fresh venv outside the checkout.

One venv, in four steps, as a user would take them (the tests run in this order; each
adds to the venv of the one before):

1. ``pip install kquant-*.whl``, the light core: the codecs work, the bundled model is
   there (package data), kquant's bytes and whole file have the sha256s recorded from
   llama.cpp's output (kquant.reference.recorded), and whatever needs llama.cpp says
   ``pip install "kquant[llama]"`` in one line: the self-test marks it ✘, ``kquant demo``
   exits 1 before any work.
2. ``pip install "kquant-*.whl[lab]"``, still without llama.cpp: notebook 07, which compares
   kquant's Q4_K_M file with llama.cpp's, runs under ``jupyter nbconvert --execute`` against
   the recorded digest and says so.
3. ``pip install "kquant-*.whl[llama]"``: the self-test passes, every codec equals llama.cpp's
   bytes, and ``kquant demo --mixes Q4_K_M`` runs.
4. With both (the student set, what ``make lab`` installs): notebook 00, self-test included,
   runs there under ``jupyter nbconvert --execute``.

The dependencies come from the package index through pip's cache; llama-cpp-python (source
only on PyPI, so compiled) from the wheel pip built and cached when ``make test`` installed it,
so nothing is compiled here. The install times and venv sizes are written to
tests/artifacts/install.txt. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from notebook_tools import ROOT

from kquant import __version__, colab
from kquant.formats import FORMATS

REPORT = ROOT / "tests" / "artifacts" / "install.txt"
LLAMA_HINT = 'pip install "kquant[llama]"'
CHECK_CODECS = """
import numpy as np, kquant
from kquant import reference
x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
for name in reference.SUPPORTED:
    q = kquant.quantize(x, name)
    assert (q == reference.quantize(x, name)).all(), name
    assert (kquant.dequantize(q, name) == reference.dequantize(q, name)).all(), name
print("codecs equal llama.cpp:", " ".join(getattr(t, "name", str(t)) for t in reference.SUPPORTED))
"""
CHECK_CORE = """
import importlib.util, numpy as np, kquant
from kquant import reference
from kquant.model import hub
assert importlib.util.find_spec("llama_cpp") is None, "the core install must not bring llama-cpp-python"
x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
for name in ("Q8_0", "Q4_0", "Q4_K", "Q6_K"):
    assert kquant.dequantize(kquant.quantize(x, name), name).shape == x.shape, name
print(kquant.__file__)
print(hub.bundled())
try:
    reference.quantize(x, "Q4_K")
except kquant.KQuantError as e:
    print("oracle:", e)
"""
# kquant.quantize and quantize_gguf on notebook 05's weights and notebook 07's model, against llama.cpp's recorded
# sha256s: recorded.quantize raises unless kquant's bytes are the ones llama.cpp wrote (one printed line each).
CHECK_RECORDED = """
import numpy as np
from kquant.lessons import samples
from kquant.model import hub
from kquant.reference import recorded
assert not recorded.live()
weights = samples.model_weights().weights
W = np.concatenate([w.ravel() for w in weights.values()]).reshape(-1, 256)
for name in ("Q2_K", "Q6_K", "Q4_0"):
    recorded.quantize(W, name)
recorded.model_quantize(hub.bundled(), "kquant-Q4_K_M.gguf", "Q4_K_M")
"""
STAND_IN = "(llama.cpp is not installed: "


def _clean_env(home: Path) -> dict:
    """The environment of a user's shell: no PYTHONPATH into this checkout, no venv of ours, and the
    user's new venv (``home``/venv, once made) activated. Without that, a runner whose PATH starts
    with another environment (make test started from an activated .venv, which has llama.cpp) lent
    Jupyter that environment's python3 kernel: notebook 07 then ran with llama.cpp."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    venv = home / "venv"
    if (venv / "bin").is_dir():  # as `source venv/bin/activate` does
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


def _run(args, cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(Path(cwd)), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def _cached_llama_wheel() -> list[str]:
    """``--find-links`` to the llama-cpp-python wheel pip built and cached, if any (else pip finds it itself)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "--format=abspath", "llama_cpp_python"],
        capture_output=True,
        text=True,
    )
    pin = colab.requirements()["llama-cpp-python"].removeprefix("==")
    wheels = [line for line in proc.stdout.split() if f"-{pin}-" in Path(line).name]
    return ["--find-links", str(Path(wheels[0]).parent)] if wheels else []


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sdist and the wheel, as ``python -m build`` makes them (the wheel is built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    start = time.perf_counter()
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out)
    times = {"build": time.perf_counter() - start}
    (sdist,), (wheel,) = out.glob("kquant-*.tar.gz"), out.glob("kquant-*.whl")
    return sdist, wheel, times


@pytest.fixture(scope="module")
def venv(tmp_path_factory, built):
    """A fresh venv outside the checkout, with the core wheel installed; the report of what it took."""
    _sdist, wheel, times = built
    home = tmp_path_factory.mktemp("user")
    assert ROOT not in home.parents
    _run([sys.executable, "-m", "venv", home / "venv"], cwd=home)
    sizes = {"empty venv": _size_mb(home / "venv")}
    start = time.perf_counter()
    _run([home / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], cwd=home)
    times["pip install kquant"] = time.perf_counter() - start
    sizes["with kquant"] = _size_mb(home / "venv")
    return home, wheel, times, sizes


def _python(home: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    return _run([home / "venv" / "bin" / "python", *args], cwd=home, check=check)


def test_the_sdist_is_the_whole_workbook_and_the_wheel_the_package_with_its_model(built):
    sdist, wheel, _times = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "kquant/data/kquant-tiny-f16.gguf",
        "tests/local_server.py",
        "tests/notebook_tools.py",
        "notebooks/00_start_here.ipynb",
        "scripts/build_notebooks.py",
        "jupyter/overrides.json",
        "postBuild",
        ".ci/run",
        "LICENSE",
        "Makefile",
        "pyproject.toml",
    ):
        assert needed in names, needed
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"kquant-{__version__}.dist-info/METADATA").decode()
    assert "kquant/data/llama_cpp_digests.json" in names
    assert "kquant/data/kquant-tiny-f16.gguf" in names and f"kquant-{__version__}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "data/", "notebooks/"))]
    assert "License-Expression: MIT" in metadata
    assert 'Requires-Dist: llama-cpp-python==0.3.36; extra == "llama"' in metadata
    assert not [
        line for line in metadata.splitlines() if line.startswith("Requires-Dist: jupyterlab") and "extra" not in line
    ]


def test_the_core_install_quantizes_has_the_model_and_names_the_llama_extra_where_it_is_needed(venv):
    home, _wheel, _times, _sizes = venv
    lines = _python(home, "-c", CHECK_CORE).stdout.splitlines()
    site = home / "venv" / "lib"
    assert Path(lines[0]).is_relative_to(site) and Path(lines[1]) == Path(lines[0]).parent / "data" / colab.MODEL
    assert lines[2].startswith("oracle: llama.cpp's library was not found: " + LLAMA_HINT)

    report = _python(home, "-m", "kquant.selftest", check=False)
    assert report.returncode == 1
    assert f"✘ llama-cpp-python: not installed  →  fix: {LLAMA_HINT}" in report.stdout
    assert "✔ bundled model: kquant-tiny-f16.gguf" in report.stdout

    demo = _python(home, "-m", "kquant", "demo", "--mixes", "Q4_K_M", check=False)
    assert demo.returncode == 1 and demo.stdout == "", "it stops before any work"
    (line,) = demo.stderr.strip().splitlines()
    assert line.startswith(f"kquant demo: error: llama.cpp (llama-cpp-python) is not installed: {LLAMA_HINT}")

    version = _run([home / "venv" / "bin" / "kquant", "--version"], cwd=home).stdout
    assert version.startswith(f"kquant {__version__} (llama.cpp ")
    assert _python(home, "-m", "kquant", "--version").stdout == version
    helptext = _python(home, "-m", "kquant", "demo", "--help").stdout
    assert "usage: kquant demo" in helptext and "``" not in helptext and ":func:" not in helptext

    said = _python(home, "-c", CHECK_RECORDED).stdout.splitlines()
    assert len(said) == 4 and all(
        line.startswith(STAND_IN) and "recorded from llama-cpp-python" in line for line in said
    )


def test_with_the_lab_extra_and_no_llama_cpp_a_notebook_compares_with_the_recorded_digests(venv):
    """Notebook 07 without llama.cpp: its Q4_K_M file is checked against the sha256 recorded from llama.cpp's."""
    home, wheel, times, sizes = venv
    start = time.perf_counter()
    _run([home / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[lab]"], cwd=home)
    times['pip install "kquant[lab]"'] = time.perf_counter() - start
    sizes["with kquant[lab]"] = _size_mb(home / "venv")
    texts = _notebook(home, "07_inside_gguf.ipynb", times)
    (line,) = [t for t in texts if t.startswith(STAND_IN)]
    assert "the Q4_K_M file is kquant's, whose sha256 equals the one recorded from llama-cpp-python" in line
    assert any("the same file: True" in t for t in texts)


def test_with_the_llama_extra_the_self_test_codecs_and_demo_pass(venv):
    home, wheel, times, sizes = venv
    start = time.perf_counter()
    _run(
        [
            home / "venv" / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            *_cached_llama_wheel(),
            f"{wheel}[llama]",
        ],
        cwd=home,
    )
    times['pip install "kquant[llama]" (cached llama.cpp wheel)'] = time.perf_counter() - start
    sizes["with kquant[lab,llama]"] = _size_mb(home / "venv")

    report = _python(home, "-m", "kquant.selftest")
    assert report.stdout.strip().splitlines()[-1] == "everything the notebooks need is here", report.stdout
    assert "✘" not in report.stdout
    codecs = _python(home, "-c", CHECK_CODECS).stdout.split(":")[1].split()
    assert sorted(codecs) == sorted(f.name for f in FORMATS) and "IQ4_NL" in codecs, codecs  # every codec kquant has

    start = time.perf_counter()
    demo = _python(home, "-m", "kquant", "demo", "--mixes", "Q4_K_M")
    times["kquant demo --mixes Q4_K_M"] = time.perf_counter() - start
    assert "Q4_K_M" in demo.stdout and "same bytes as llama.cpp: yes" in demo.stdout
    assert str(home / "venv") in demo.stdout.splitlines()[0], "the demo's model is the installed package's"

    _write_report(wheel, times, sizes)


def _notebook(home: Path, name: str, times: dict) -> list[str]:
    """Run notebooks/``name`` in the venv with Jupyter's own nbconvert; the texts its cells printed or displayed."""
    shutil.copy(ROOT / "notebooks" / name, home)
    start = time.perf_counter()
    _python(
        home,
        "-m",
        "jupyter",
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        "--output",
        f"ran-{name}",
        "--ExecutePreprocessor.timeout=300",
        name,
    )
    times[f"notebook {name[:2]} (nbconvert --execute)"] = time.perf_counter() - start
    outputs = [o for c in json.loads((home / f"ran-{name}").read_text())["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    return ["".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in outputs]


def test_with_lab_and_llama_the_student_set_notebook_00_runs_there(venv):
    """The student set (`make lab`'s .[lab,llama]): notebook 00, with its self-test, run by Jupyter's own nbconvert."""
    home, wheel, times, sizes = venv
    texts = _notebook(home, "00_start_here.ipynb", times)
    (report,) = [t for t in texts if t.startswith("✔ Python")]
    assert report.strip().splitlines()[-1] == "everything the notebooks need is here" and "✘" not in report, report
    _write_report(wheel, times, sizes)
    shutil.rmtree(home / "venv")


def _write_report(wheel: Path, times: dict, sizes: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB\n"
        + "".join(f"{what}: {seconds:.1f} s\n" for what, seconds in times.items())
        + "".join(
            f"venv {what}: {mb:.0f} MB" + (f" (+{mb - before:.0f} MB)\n" if before else "\n")
            for (what, mb), before in zip(sizes.items(), [0, *sizes.values()])
        )
    )
