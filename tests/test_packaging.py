"""The repository's promises about installation, checked."""

import pathlib
import sys

import yaml
from packaging.requirements import Requirement

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


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = _pyproject()["project"]
    wanted = _normalise(project["dependencies"] + project["optional-dependencies"]["test"])

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        (pip.extend(dep["pip"]) if isinstance(dep, dict) else conda.append(dep))
    listed = _normalise([d for d in conda if not d.startswith(("python", "pip"))] + [d for d in pip if d != "-e ."])
    assert listed == wanted
    assert "-e ." in pip, "environment.yml must install kquant itself for Binder"


def test_ipywidgets_stays_within_what_colab_ships():
    deps = _normalise(_pyproject()["project"]["dependencies"])
    assert deps["ipywidgets"] == "<9,>=7.7"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0], "the README must open with the test command"
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]
