"""Colab: every notebook's badge and setup cell, and what the setup does on Colab and elsewhere.

Nothing here needs Colab or a network. Colab is a fake ``google.colab`` module in
sys.modules; pip is a recorder that installs nothing (it can be told to fail, as pip does
when no prebuilt wheel fits); GitHub is a local HTTP server serving a kquant/data/ folder from
a temporary directory; the download cache is a temporary directory too. kquant's package data
(where the model is in a checkout and in an installed wheel) is hidden where the download is tested.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pathlib
import sys
import types
import urllib.request
from http.server import SimpleHTTPRequestHandler

import pytest
from local_server import LocalServer
from notebook_tools import NOTEBOOKS, ROOT

from kquant import colab, selftest
from kquant.exercises.notebook import load, source_of
from kquant.lessons import samples
from kquant.model import hub

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli on 3.10
    import tomli as tomllib

NAMES = [p.stem for p in NOTEBOOKS]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
OWNER_REPO = REPOSITORY.split("github.com/", 1)[1].strip("/")
PINS = dict(
    dep.split("==")
    for dep in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["llama"]
    if dep.startswith(("gguf==", "llama-cpp-python=="))
)
MODEL_BYTES = (ROOT / "kquant" / "data" / colab.MODEL).read_bytes()


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the notebooks ---------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_the_first_markdown_cell_has_an_open_in_colab_badge_for_its_own_notebook(path):
    first = source_of(next(c for c in load(path)["cells"] if c["cell_type"] == "markdown"))
    url = f"https://colab.research.google.com/github/{OWNER_REPO}/blob/main/notebooks/{path.name}"
    assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})" in first
    assert first.count("colab.research.google.com/github/") == 1


def test_every_notebook_opens_with_the_setup_cell_made_from_pyprojects_address_and_what_it_imports():
    builder = _builder()
    firsts = {
        path.name: source_of(next(c for c in load(path)["cells"] if c["cell_type"] == "code")) for path in NOTEBOOKS
    }
    for path in NOTEBOOKS:
        llama = builder.needs_llama(builder.modules_used(load(path)["cells"]))
        assert firsts[path.name] == builder.setup_cell(llama=llama), path.name
    for llama in (True, False):
        cell = builder.setup_cell(llama=llama)
        assert f'"https://raw.githubusercontent.com/{OWNER_REPO}/main/kquant/colab.py"' in cell
        assert f'["setup"]("{REPOSITORY}", llama={llama})' in cell
        assert '"google.colab" in sys.modules' in cell and len(cell.splitlines()) <= 8
        assert "%" not in cell and "!" not in cell, "plain Python: no IPython magic"


def test_only_the_notebooks_that_run_llama_cpp_install_it_on_colab():
    """Comparing with llama.cpp's bytes needs no llama.cpp (recorded digests); running, tokenizing, the self-test do."""
    builder = _builder()
    installs = {
        path.name[:2]: "llama=True" in source_of(next(c for c in load(path)["cells"] if c["cell_type"] == "code"))
        for path in NOTEBOOKS
    }
    assert {n for n, llama in installs.items() if not llama} >= {"01", "02", "03", "04", "05", "07"}
    assert {n for n, llama in installs.items() if llama} >= {"00", "08", "09", "10", "17"}
    assert not builder.needs_llama(["kquant.reference.recorded", "kquant.gguf.anatomy", "kquant.quantize_file"])
    assert builder.needs_llama(["kquant.model.runner"]) and builder.needs_llama(["kquant.reference"])


def test_no_notebook_source_writes_its_own_colab_cell_and_the_build_refuses_one(tmp_path):
    assert not [p.name for p in (ROOT / "scripts" / "notebooks").glob("*.py") if "google.colab" in p.read_text()]
    source = tmp_path / "00_start_here.py"
    source.write_text(
        '# %% [markdown]\n"""\n# 00 · x\n"""\n\n# %%\nimport sys\nif "google.colab" in sys.modules:\n    pass\n'
    )
    with pytest.raises(ValueError, match="Colab setup cell"):
        _builder().build(source)


def test_the_packaged_sha256_is_the_shipped_models():
    assert hashlib.sha256(MODEL_BYTES).hexdigest() == colab.MODEL_SHA256


# --- the setup, with Colab, pip and GitHub played by stand-ins -------------------------


class Pip:
    """Records each ``pip install`` instead of running it; fails the calls ``fail`` picks out."""

    def __init__(self, fail=lambda args: False):
        self.calls, self.fail = [], fail

    def __call__(self, args, env=None):
        self.calls.append((list(args), env))
        return 1 if self.fail(args) else 0

    @property
    def args(self):
        return [args for args, _env in self.calls]


class GitHub(LocalServer):
    """Serves a kquant/data/ folder holding ``payload`` as the model, counting the requests it answers."""

    def __init__(self, root: pathlib.Path, payload: bytes):
        (root / "kquant" / "data").mkdir(parents=True)
        (root / "kquant" / "data" / colab.MODEL).write_bytes(payload)
        self.requests = 0
        github = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # (http.server's naming)
                github.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        super().__init__(functools.partial(Handler, directory=str(root)))
        self.data_url = f"{self.url}/kquant/data"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache, and a kquant without its data: the model is nowhere until the setup fetches it."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("KQUANT_DATA", str(folder))
    monkeypatch.delenv("KQUANT_DATA_URL", raising=False)
    monkeypatch.setattr(colab, "package_data", lambda: tmp_path / "no-package-data" / "data")
    monkeypatch.delitem(hub.__dict__, "BUNDLED", raising=False)  # looked up at each use (another test may have set it)
    return folder


@pytest.fixture
def on_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def nothing_installed(name):
    return None


def _expected_installs():
    return [
        ["--quiet", "--no-deps", f"kquant @ git+{REPOSITORY}@main"],
        ["--quiet", f"gguf=={PINS['gguf']}"],
        [
            "--quiet",
            "--only-binary=:all:",
            "--extra-index-url",
            "https://abetlen.github.io/llama-cpp-python/whl/cpu",
            f"llama-cpp-python=={PINS['llama-cpp-python']}",
        ],
    ]


def test_on_colab_it_installs_kquant_gguf_and_a_prebuilt_llama_then_fetches_the_model_hub_finds(
    on_colab, cache, tmp_path, capsys
):
    pip = Pip()
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url=github.data_url)
    assert pip.args == _expected_installs()
    assert github.requests == 1
    model = cache / colab.MODEL
    assert model.read_bytes() == MODEL_BYTES and sorted(p.name for p in cache.iterdir()) == [colab.MODEL]
    assert hub.bundled() == model == hub.BUNDLED
    assert selftest.check_model().status == selftest.OK
    assert samples.model_weights().source.startswith(f"the bundled model {colab.MODEL}")
    assert f"ready (model: {model})" in capsys.readouterr().out


def test_without_a_prebuilt_wheel_it_says_so_and_builds_llama_cpp_from_source(on_colab, cache, tmp_path, capsys):
    pip = Pip(fail=lambda args: "--only-binary=:all:" in args)
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url=github.data_url)
    assert pip.args == [*_expected_installs(), ["--quiet", f"llama-cpp-python=={PINS['llama-cpp-python']}"]]
    assert "CMAKE_BUILD_PARALLEL_LEVEL" in pip.calls[-1][1]
    out = capsys.readouterr().out
    message = next(line for line in out.splitlines() if "no prebuilt wheel" in line)
    assert f"llama-cpp-python=={PINS['llama-cpp-python']}" in message
    assert f"building llama.cpp from source, about {colab.SOURCE_BUILD_MINUTES} minutes" in message
    assert out.index("no prebuilt wheel") < out.index("ready")


def test_a_failed_source_build_stops_with_one_line_and_fetches_nothing(on_colab, cache, tmp_path, capsys):
    pip = Pip(fail=lambda args: "llama-cpp-python" in " ".join(args))
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert not colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url=github.data_url)
    assert github.requests == 0 and not cache.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not build llama-cpp-python" in err[0]


def test_a_notebook_that_runs_no_llama_cpp_installs_kquant_and_gguf_only(on_colab, cache, tmp_path, capsys):
    pip = Pip()
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url=github.data_url, llama=False)
    assert pip.args == _expected_installs()[:2]
    assert "llama" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("failing", "says"),
    [
        ("kquant @ git+", f"could not install kquant from {REPOSITORY} (pip's message is above): check the network"),
        ("gguf==", f"could not install gguf=={PINS['gguf']} (pip's message is above): check the network, then run"),
    ],
)
def test_each_failed_install_is_one_line_that_says_what_to_do(on_colab, cache, failing, says, capsys):
    pip = Pip(fail=lambda args: any(a.startswith(failing) for a in args))
    assert not colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url="http://127.0.0.1:1/data")
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("kquant setup failed: pip ") and says in line and line.endswith("the cell again"), line


def test_it_installs_only_what_is_missing_or_at_another_version(on_colab, cache, tmp_path):
    versions = {"kquant": "0.1.0", "gguf": "0.10.0", "llama-cpp-python": PINS["llama-cpp-python"]}
    pip = Pip()
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert colab.setup(REPOSITORY, pip=pip, have=versions.get, base_url=github.data_url)
        assert pip.args == [["--quiet", f"gguf=={PINS['gguf']}"]] and github.requests == 1
        versions["gguf"] = PINS["gguf"]
        pip.calls.clear()
        assert colab.setup(
            REPOSITORY, pip=pip, have=versions.get, base_url=github.data_url
        )  # everything there: a no-op
    assert pip.calls == [] and github.requests == 1


def test_a_corrupted_download_is_refused_in_one_line_and_leaves_no_file(on_colab, cache, tmp_path, capsys):
    broken = bytearray(MODEL_BYTES)
    broken[len(broken) // 2] ^= 1
    with GitHub(tmp_path / "github", bytes(broken)) as github:
        assert not colab.setup(REPOSITORY, pip=Pip(), have=nothing_installed, base_url=github.data_url)
    assert github.requests == 1 and list(cache.iterdir()) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupted" in err[0] and "nothing was saved" in err[0]
    assert not hub.BUNDLED.is_file()


def test_an_unreachable_server_is_one_line_too(on_colab, cache, tmp_path, capsys):
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        url = github.data_url
    assert not colab.setup(REPOSITORY, pip=Pip(), have=nothing_installed, base_url=url)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not download" in err[0]
    assert list(cache.iterdir()) == []


def test_a_wrong_address_404_is_one_line_that_says_the_address_is_wrong(on_colab, cache, tmp_path, capsys):
    """The repository address is an assumption: if nothing is there, say so, and what to do, in one line."""
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert not colab.setup(REPOSITORY, pip=Pip(), have=nothing_installed, base_url=f"{github.url}/no/such/repo")
    assert github.requests == 1 and list(cache.iterdir()) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kquant setup failed: could not download http://127.0.0.1:")
    assert "answered 404" in err[0] and "the address is wrong, not the network" in err[0]
    assert "[project.urls] Repository" in err[0] and "Traceback" not in err[0]


def test_a_failed_kquant_install_is_one_line_naming_the_repository(on_colab, cache, tmp_path, capsys):
    pip = Pip(fail=lambda args: any(a.startswith("kquant @ git+") for a in args))
    assert not colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url="http://127.0.0.1:1/data")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"could not install kquant from {REPOSITORY}" in err[0]


def test_the_installed_package_carries_the_model_so_nothing_is_downloaded(on_colab, tmp_path, monkeypatch, capsys):
    """kquant's package data holds the model: with kquant installed, the setup fetches nothing."""
    monkeypatch.setenv("KQUANT_DATA", str(tmp_path / "cache"))
    monkeypatch.delitem(hub.__dict__, "BUNDLED", raising=False)
    assert colab.package_data() == ROOT / "kquant" / "data"
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert colab.setup(
            REPOSITORY, pip=Pip(), have=lambda name: "0.1.0" if name == "kquant" else None, base_url=github.data_url
        )
    assert github.requests == 0 and not (tmp_path / "cache").exists()
    assert hub.bundled() == ROOT / "kquant" / "data" / colab.MODEL


def test_the_download_address_is_the_repositorys_main_branch_unless_kquant_data_url_says_otherwise(monkeypatch):
    monkeypatch.delenv("KQUANT_DATA_URL", raising=False)
    assert colab.data_url(REPOSITORY) == f"https://raw.githubusercontent.com/{OWNER_REPO}/main/kquant/data"
    monkeypatch.setenv("KQUANT_DATA_URL", "http://127.0.0.1:1/data/")
    assert colab.data_url(REPOSITORY) == "http://127.0.0.1:1/data"


def test_the_download_address_comes_from_kquant_data_url_when_no_base_url_is_given(
    on_colab, cache, tmp_path, monkeypatch
):
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        monkeypatch.setenv("KQUANT_DATA_URL", github.data_url)
        assert colab.setup(REPOSITORY, pip=Pip(), have=nothing_installed)
    assert github.requests == 1 and hub.bundled() == cache / colab.MODEL


def test_outside_colab_it_installs_nothing_fetches_nothing_and_says_nothing(cache, tmp_path, capsys):
    assert "google.colab" not in sys.modules
    pip = Pip()
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        assert colab.setup(REPOSITORY, pip=pip, have=nothing_installed, base_url=github.data_url)
    assert pip.calls == [] and github.requests == 0 and not cache.exists()
    assert capsys.readouterr() == ("", "")


# --- the setup cell itself, run as the notebook runs it --------------------------------


class Downloads:
    """Stands in for urllib.request.urlretrieve: serves this checkout's kquant/colab.py, recording the address."""

    def __init__(self):
        self.urls = []

    def __call__(self, url, filename):
        self.urls.append(url)
        pathlib.Path(filename).write_bytes((ROOT / "kquant" / "colab.py").read_bytes())
        return filename, None


def _run_cell(monkeypatch, tmp_path):
    cell = _builder().setup_cell().replace("/tmp/kquant_colab.py", str(tmp_path / "kquant_colab.py"))
    downloads, popen = Downloads(), []
    monkeypatch.setattr(urllib.request, "urlretrieve", downloads)
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: popen.append(a) or pytest.fail("the cell ran pip"))
    exec(compile(cell, "<setup cell>", "exec"), {})
    return downloads.urls, popen


def test_the_cell_on_colab_runs_the_repositorys_setup_which_installs_nothing_here_and_fetches_the_model(
    on_colab, cache, tmp_path, monkeypatch, capsys
):
    real = importlib.util.find_spec  # as on Colab with a kquant that came without its data: the model is fetched
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kquant" else real(name, *a))
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        monkeypatch.setenv("KQUANT_DATA_URL", github.data_url)
        urls, popen = _run_cell(monkeypatch, tmp_path)
    assert urls == [f"https://raw.githubusercontent.com/{OWNER_REPO}/main/kquant/colab.py"]
    assert popen == [] and github.requests == 1  # kquant, gguf, llama-cpp-python are installed; the model was fetched
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"kquant: ready (model: {cache / colab.MODEL})"


def test_the_cell_elsewhere_downloads_nothing_and_prints_nothing(cache, tmp_path, monkeypatch, capsys):
    assert _run_cell(monkeypatch, tmp_path) == ([], [])
    assert capsys.readouterr() == ("", "")


def test_the_cell_elsewhere_without_kquant_prints_the_one_line_fix(cache, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kquant" else real(name, *a))
    assert _run_cell(monkeypatch, tmp_path) == ([], [])
    assert capsys.readouterr() == ("kquant is not installed: run `make lab` from the repository\n", "")


def test_the_cell_on_colab_says_in_one_line_when_the_repository_address_is_wrong(on_colab, tmp_path, monkeypatch):
    """A 404 for colab.py (the address in pyproject.toml is not the workbook's) is one line, not a traceback."""
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:  # serves nothing at the cell's path: a real 404
        cell = _builder().setup_cell().replace("/tmp/kquant_colab.py", str(tmp_path / "kquant_colab.py"))
        cell = cell.replace("https://raw.githubusercontent.com/", f"{github.url}/no-such-owner/")
        with pytest.raises(SystemExit) as stop:
            exec(compile(cell, "<setup cell>", "exec"), {})
    message = str(stop.value)
    assert "\n" not in message and "404" in message and "is the workbook's repository" in message
    assert message.endswith("then run this cell again")


def test_the_cell_on_colab_says_in_one_line_when_the_network_is_down(on_colab, tmp_path):
    with GitHub(tmp_path / "github", MODEL_BYTES) as github:
        url = github.url  # closed once the block ends: nothing answers there
    cell = _builder().setup_cell(llama=False).replace("/tmp/kquant_colab.py", str(tmp_path / "kquant_colab.py"))
    cell = cell.replace("https://raw.githubusercontent.com/", f"{url}/")
    with pytest.raises(SystemExit) as stop:
        exec(compile(cell, "<setup cell>", "exec"), {})
    message = str(stop.value)
    assert "\n" not in message and message.startswith("kquant: could not download the setup (")
    assert "check the network" in message and message.endswith("then run this cell again")
