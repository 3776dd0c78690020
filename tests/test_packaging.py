"""The repository's promises about installation, checked."""

import json
import pathlib
import re
import sys

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli on 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalise(specs):
    out = {}
    for spec in specs:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate():
            continue  # e.g. tomli, only needed on Python 3.10
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


# What environment.yml may list besides pyproject's dependencies: conda-forge tools that only
# build llama-cpp-python from source (PyPI has no wheel of it), on Binder and for conda users.
BUILD_ONLY = {"cxx-compiler", "cmake", "ninja"}


def _conda_name(spec: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", spec).group(0)  # "cmake>=3.21" -> "cmake", "python=3.11" -> "python"


def _environment_yml():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        (pip.extend(dep["pip"]) if isinstance(dep, dict) else conda.append(dep))
    return env, conda, pip


# What `make lab` installs, and so environment.yml (Binder, conda): the student set.
STUDENT_EXTRAS = ("lab", "llama")


def test_environment_yml_lists_the_student_set_of_pyproject():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = _normalise(project["dependencies"] + [dep for name in STUDENT_EXTRAS for dep in extras[name]])

    _env, conda, pip = _environment_yml()
    build_only = [d for d in conda if _conda_name(d) in BUILD_ONLY]
    listed = _normalise(
        [d for d in conda if not d.startswith(("python", "pip")) and d not in build_only]
        + [d for d in pip if d != "-e ."]
    )
    assert listed == wanted
    assert "-e ." in pip, "environment.yml must install kquant itself for Binder"
    assert sorted(map(_conda_name, build_only)) == sorted(BUILD_ONLY), (
        "the build-only tools are conda packages, each listed once"
    )


def test_environment_yml_is_what_binder_needs():
    """repo2docker (mybinder.org) reads conda-forge's channel and an exact python=X.Y from it."""
    env, conda, _pip = _environment_yml()
    assert env["channels"][0] == "conda-forge"
    python = [d for d in conda if _conda_name(d) == "python"]
    assert len(python) == 1 and re.fullmatch(r"python=3\.\d+", python[0]), (
        f"repo2docker reads only python=X.Y, not {python}"
    )
    minimum = _pyproject()["project"]["requires-python"]  # ">=3.10"
    assert SpecifierSet(minimum).contains(python[0].split("=")[1]), f"{python[0]} outside requires-python {minimum}"


def test_binder_and_make_lab_turn_jupyterlabs_news_prompt_off_with_the_same_postbuild(tmp_path):
    """repo2docker runs an executable ./postBuild after building environment.yml's environment (a binder/ or
    .binder/ folder would hide both); `make lab` runs the same file. It puts jupyter/overrides.json where the
    JupyterLab of the `python` first on PATH reads it: its application folder's settings/ (get_app_dir)."""
    import os
    import subprocess

    from jupyterlab.commands import get_app_dir

    post = ROOT / "postBuild"
    assert post.is_file() and os.access(post, os.X_OK), "repo2docker runs postBuild only if it is executable"
    assert not (ROOT / "binder").exists() and not (ROOT / ".binder").exists()
    assert pathlib.Path(get_app_dir()) == pathlib.Path(sys.prefix) / "share" / "jupyter" / "lab", (
        "postBuild writes to <sys.prefix>/share/jupyter/lab/settings: JupyterLab must read its settings there"
    )
    prefix = tmp_path / "env"  # a stand-in for the image's environment: a venv whose python postBuild asks
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", prefix], check=True)
    env = {**os.environ, "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([post], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    written = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert written.read_bytes() == (ROOT / "jupyter" / "overrides.json").read_bytes(), done.stderr
    settings = json.loads(written.read_text())["@jupyterlab/apputils-extension:notification"]
    assert settings["fetchNews"] == "false" and settings["checkForUpdates"] is False
    makefile = (ROOT / "Makefile").read_text()
    lab_rule = makefile.split("\n$(LAB):", 1)[1].split("\n\n", 1)[0]
    assert "./postBuild" in lab_rule and "$(BIN)" in lab_rule.split("./postBuild")[0].splitlines()[-1]


def test_the_core_is_light_and_the_heavy_parts_are_extras():
    """`pip install kquant` compiles nothing and brings no Jupyter server; the extras say what they add."""
    project = _pyproject()["project"]
    assert sorted(_normalise(project["dependencies"])) == ["gguf", "ipywidgets", "matplotlib", "numpy"]
    extras = {name: _normalise(deps) for name, deps in project["optional-dependencies"].items()}
    assert extras["llama"] == {"llama-cpp-python": "==0.3.36"}
    assert extras["lab"] == {"jupyterlab": ">=4"}
    assert "nbgrader" in extras["instructor"] and "nbgrader" in extras["test"]
    student = set(extras["lab"]) | set(extras["llama"])
    assert not {"nbgrader", "pytest"} & student, "students get no test or grading tools"


def test_make_lab_installs_the_student_set_and_make_test_the_test_set():
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[lab]"' in makefile and '-e ".[lab,llama,test]"' in makefile
    # llama.cpp in a pip call of its own, announced, at the version of the llama extra
    assert 'colab.requirements()["llama-cpp-python"]' in makefile and "compiling llama.cpp" in makefile
    assert "instructor" not in makefile and '".[test]"' not in makefile


def test_the_licence_is_an_spdx_expression_with_its_file():
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the kquant authors" in text


def test_ipywidgets_stays_within_what_colab_ships():
    deps = _normalise(_pyproject()["project"]["dependencies"])
    assert deps["ipywidgets"] == "<9,>=7.7"


# The one line .ci/run may run besides the test command: install the Chromium that
# tests/test_browser.py drives, with apt, only when it is missing. It installs, it tests nothing.
CI_INSTALLS_CHROMIUM = (
    "[ -x /usr/bin/chromium ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive "
    "apt-get install -y -q --no-install-recommends chromium; }"
)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0], "the README must open with the test command"
    commands = [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == [CI_INSTALLS_CHROMIUM, "WITH_ORACLES=1 make test"], (
        "CI installs Chromium if missing and runs `make test` with the NF4 oracle switched on, nothing else"
    )
    test_recipe = (ROOT / "Makefile").read_text().split("\ntest:")[1].split("\n\n")[0]
    oracle_lines = [line for line in test_recipe.splitlines() if "oracle" in line.lower()]
    assert oracle_lines == ['\t@if [ -n "$$WITH_ORACLES" ]; then $(MAKE) --no-print-directory oracle-nf4; fi'], (
        "`make test` must reach the NF4 oracle's GBs only when WITH_ORACLES is set"
    )


def test_without_llama_cpp_whatever_needs_it_says_pip_install_kquant_llama_in_one_line(monkeypatch, capsys):
    """The core install has no llama-cpp-python: the runner, the oracle and the demo say what to install."""
    from kquant import KQuantError, llamacpp
    from kquant.demo import main as demo_main
    from kquant.model import hub, runner

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    hint = 'pip install "kquant[llama]" (llama-cpp-python==0.3.36'
    for needs_llama in (llamacpp.load, lambda: runner.load(hub.bundled())):
        with pytest.raises(KQuantError) as e:
            needs_llama()
        assert hint in str(e.value) and "\n" not in str(e.value)
    assert demo_main(["--mixes", "Q4_K_M"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and hint in err
