"""Set the workbook up on Google Colab: install what Colab lacks, fetch the bundled model.

Every notebook's first code cell (written by scripts/build_notebooks.py) downloads this
file from the repository's main branch and calls its ``setup``, on Colab only:

    runpy.run_path("/tmp/kquant_colab.py")["setup"]("https://github.com/OWNER/REPO", llama=False)

It uses nothing but the standard library, so it works before kquant is installed. On
Colab (``"google.colab" in sys.modules``) it installs, each only if missing:

1. kquant itself from the repository, without its dependencies (Colab has numpy,
   matplotlib, ipywidgets 7.7 and a Jupyter stack; jupyterlab is not wanted there);
2. gguf at the version pinned in pyproject.toml (read from kquant's installed metadata), and,
   only for a notebook that runs llama.cpp (``llama=True``, which the notebook builder derives
   from the modules the notebook imports), llama-cpp-python at the ``llama`` extra's pin: first
   as a prebuilt wheel from the project's CPU wheel index only, then, if there is none for this
   Python, by compiling llama.cpp (minutes); the other notebooks compare with llama.cpp's
   recorded digests instead (kquant.reference.recorded);
3. the bundled model ``kquant/data/kquant-tiny-f16.gguf``: it is package data, so installing
   kquant brings it; only if the installed package lacks it (an install made without
   its data) is it downloaded from the repository's main branch into ``cache_dir()`` and
   checked against ``MODEL_SHA256``; kquant.model.hub looks there after the package.

Anywhere else it does nothing. ``KQUANT_DATA`` sets the cache folder and
``KQUANT_DATA_URL`` the address the model is downloaded from (tests point it at a
local server).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

MODEL = "kquant-tiny-f16.gguf"
# sha256 of kquant/data/kquant-tiny-f16.gguf (tests/test_colab.py keeps it in step with the file).
MODEL_SHA256 = "2660799f8095dc5201c40a96a93d759f345e2b06d1298dd6b00f4af50cb35f4a"
WHEELS = "https://abetlen.github.io/llama-cpp-python/whl/cpu"  # llama-cpp-python's CPU wheels
SOURCE_BUILD_MINUTES = 10  # compiling llama.cpp on Colab's 2 CPUs


class SetupError(Exception):
    """A step failed; the message is one line saying what to do."""


def on_colab() -> bool:
    return "google.colab" in sys.modules


def cache_dir() -> Path:
    """Where downloaded data goes: $KQUANT_DATA, else ~/.cache/kquant (or $XDG_CACHE_HOME/kquant)."""
    if os.environ.get("KQUANT_DATA"):
        return Path(os.environ["KQUANT_DATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kquant"


# The model is package data (kquant/data/), not a download, because:
# - it then travels with every install: a wheel, an sdist, a checkout or an editable install
#   all have it, offline (a classroom, CI, this machine reach no GitHub), with no cache to manage;
# - the model and the code that reads it are the same version, always;
# - no download address has to exist: the repository address is an unconfirmed assumption;
# - 13 MB is an ordinary size for a wheel (PyPI's limit is 100 MB).
# The download (fetch_model) stays as the fallback for an install that lacks its data.
# importlib.resources.files("kquant") would import kquant (numpy, gguf, ...), and this file
# must work before kquant can be imported; find_spec locates the package without importing it,
# and setuptools installs package data as plain files beside the modules.
def package_data() -> Path | None:
    """kquant's data/ folder (kquant/data/ in a checkout, an editable install or site-packages), if kquant is there."""
    spec = importlib.util.find_spec("kquant")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "data"


def github_path(repository: str) -> str:
    """ "https://github.com/OWNER/REPO" -> "OWNER/REPO"."""
    return repository.rstrip("/").removesuffix(".git").split("github.com/", 1)[-1]


def raw_url(repository: str, path: str) -> str:
    """The address of file ``path`` on the repository's main branch, as GitHub serves it raw."""
    return f"https://raw.githubusercontent.com/{github_path(repository)}/main/{path}"


def data_url(repository: str) -> str:
    """The folder the model is downloaded from: $KQUANT_DATA_URL, else kquant/data/ on the repository's main branch."""
    return os.environ.get("KQUANT_DATA_URL", "").rstrip("/") or raw_url(repository, "kquant/data")


def run_pip(args: list[str], env: dict | None = None) -> int:
    """``python -m pip install ARGS`` with this kernel's Python; its output shown as it comes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pip", "install", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    for line in proc.stdout:
        print(line, end="", flush=True)
    return proc.wait()


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    importlib.invalidate_caches()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirements(extras: tuple[str, ...] = ("llama",)) -> dict[str, str]:
    """{"numpy": ">=1.24", …, "gguf": "==0.19.0", "llama-cpp-python": "==0.3.36"}: kquant's dependencies as its
    installed metadata (pyproject.toml) states them, with those of the ``extras`` named (llama.cpp's, by default:
    the notebooks use it); other extras and environment markers left out. The one reader of them."""
    importlib.invalidate_caches()  # kquant may have been installed a moment ago
    wanted = {f'extra == "{name}"' for name in extras} | {f"extra == '{name}'" for name in extras}
    found = {}
    for req in importlib.metadata.requires("kquant") or []:
        req, _, marker = req.partition(";")
        if marker.strip() and marker.strip() not in wanted:  # another extra, or a marker
            continue
        cut = next((i for i, ch in enumerate(req) if ch in "<>=!~ ("), len(req))
        found[req[:cut].strip().lower()] = req[cut:].strip().strip("()").replace(" ", "")
    return found


def pins(names=("gguf", "llama-cpp-python")) -> dict:
    """{"gguf": "0.19.0", "llama-cpp-python": "0.3.36"}: the exact pins of kquant's installed metadata
    (gguf a dependency, llama-cpp-python the ``llama`` extra's), for the ``names`` asked."""
    found = {name: spec[2:] for name, spec in requirements().items() if spec.startswith("==")}
    missing = set(names) - set(found)
    if missing:
        raise SetupError(
            f"kquant's metadata pins no version of {', '.join(sorted(missing))}: reinstall kquant "
            "(pip install --force-reinstall kquant) and run the cell again"
        )
    return {name: found[name] for name in names}


def install(repository: str, pip=run_pip, have=installed, llama: bool = True) -> None:
    """Install kquant, gguf and (if ``llama``) llama-cpp-python, each only if it is not there at the right version."""
    if have("kquant") is None:
        print("kquant: installing kquant from", repository, flush=True)
        if pip(["--quiet", "--no-deps", f"kquant @ git+{repository.rstrip('/')}@main"]) != 0:
            raise SetupError(
                f"pip could not install kquant from {repository} (pip's message is above): check the network and "
                "that this is the workbook's repository ([project.urls] Repository in pyproject.toml), then run the "
                "cell again"
            )
    versions = pins(("gguf", "llama-cpp-python") if llama else ("gguf",))
    if have("gguf") != versions["gguf"]:
        if pip(["--quiet", f"gguf=={versions['gguf']}"]) != 0:
            raise SetupError(
                f"pip could not install gguf=={versions['gguf']} (pip's message is above): check the network, then run "
                "the cell again"
            )
    if not llama:
        return
    llama = f"llama-cpp-python=={versions['llama-cpp-python']}"
    if have("llama-cpp-python") != versions["llama-cpp-python"]:
        if pip(["--quiet", "--only-binary=:all:", "--extra-index-url", WHEELS, llama]) != 0:
            print(
                f"kquant: no prebuilt wheel of {llama} for Python "
                f"{sys.version_info.major}.{sys.version_info.minor} at {WHEELS}; "
                f"building llama.cpp from source, about {SOURCE_BUILD_MINUTES} minutes (once per Colab runtime)",
                flush=True,
            )
            # PyPI publishes llama-cpp-python as source only: pip compiles it, on every CPU.
            if pip(["--quiet", llama], env={"CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}) != 0:
                raise SetupError(
                    f"pip could not build {llama} (pip's message is above): check the network and run the cell "
                    "again; the notebooks that do not run llama.cpp (their first cell installs no llama-cpp-python) "
                    "work without it"
                )


def model_path() -> Path | None:
    """The bundled model where kquant.model.hub looks for it (kquant's package data, then ``cache_dir()``), or None."""
    for folder in (package_data(), cache_dir()):
        if folder is not None and (folder / MODEL).is_file():
            return folder / MODEL
    return None


def fetch_model(base_url: str, dest: Path | None = None) -> Path:
    """Download the bundled model into ``dest`` (default ``cache_dir()``); refused unless its sha256 is MODEL_SHA256.

    Written to a temporary file and renamed once verified: an interrupted or corrupted
    download leaves no file behind.
    """
    dest = Path(dest or cache_dir())
    dest.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{MODEL}"
    print(f"kquant: downloading {MODEL} (13 MB) from {url}", flush=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{MODEL}.", suffix=".part", dir=dest)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != MODEL_SHA256:
            raise SetupError(
                f"the download of {url} is corrupted (sha256 {digest.hexdigest()[:12]}…, expected "
                f"{MODEL_SHA256[:12]}…): nothing was saved; run the cell again"
            )
        os.replace(tmp, dest / MODEL)
    except urllib.error.HTTPError as e:  # the server answered: the address, not the network, is wrong
        raise SetupError(
            f"could not download {url}: the server answered {e.code} {e.reason}; the address is wrong, not the "
            f"network: check [project.urls] Repository in kquant's pyproject.toml (or $KQUANT_DATA_URL), or install "
            f"kquant with its model (pip install kquant) and run the cell again"
        ) from None
    except OSError as e:  # no network, a full disk
        raise SetupError(
            f"could not download {url} ({type(e).__name__}: {e}); check the network and run the cell again"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest / MODEL


def setup(repository: str, pip=run_pip, have=installed, base_url: str | None = None, llama: bool = True) -> bool:
    """On Colab: install what is missing and fetch the model, printing one line per step. Elsewhere: nothing.

    ``llama``: install llama-cpp-python too (the notebook runs llama.cpp). True when everything is in
    place (or not on Colab); on a failure, one line saying what to do, and False.
    """
    if not on_colab():
        return True
    try:
        install(repository, pip=pip, have=have, llama=llama)
        model = model_path() or fetch_model(base_url or data_url(repository))
    except SetupError as e:
        print(f"kquant setup failed: {e}", file=sys.stderr, flush=True)
        return False
    print(f"kquant: ready (model: {model})", flush=True)
    return True
