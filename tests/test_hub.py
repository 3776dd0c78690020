"""The Hub path: kquant.model.hub.fetch downloads a GGUF, caches it, and falls back to the bundled
model when offline. The Hub is played by a local HTTP server on 127.0.0.1 (HF_ENDPOINT
points at it), never the internet.

The stand-in answers the two requests ``huggingface_hub.hf_hub_download`` makes for a
file: ``HEAD /{repo}/resolve/{revision}/{file}`` (commit hash, ETag and size in headers)
and ``GET`` of the same path (the bytes). Anything else is a 404, as on the Hub.
"""

from __future__ import annotations

import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from local_server import LocalServer

from kquant.errors import KQuantError
from kquant.model import hub

pytest.importorskip("huggingface_hub", reason="the Hub path needs the optional huggingface_hub")

REPO, FILE = "kquant/tiny-GGUF", "kquant-tiny-f16.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class StandIn(LocalServer):
    """A Hub that serves one file, counting the downloads (GETs) it answers."""

    def __init__(self, data: bytes):
        self.data, self.downloads = data, 0
        etag = hashlib.sha256(data).hexdigest()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _head(self) -> bool:
                if self.path.split("?")[0] != f"/{REPO}/resolve/main/{FILE}":
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(stand_in.data)))
                self.end_headers()
                return True

            def do_HEAD(self):  # (http.server's naming)
                self._head()

            def do_GET(self):
                if self._head():
                    stand_in.downloads += 1
                    self.wfile.write(stand_in.data)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        super().__init__(Handler)


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


def _closed_port_url() -> str:
    """An address where nothing listens: what an unplugged network looks like, instantly."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()
    return url


def test_fetch_downloads_the_file_once_then_serves_it_from_the_cache_even_offline(hub_env, monkeypatch):
    data = hub.bundled().read_bytes()
    with StandIn(data) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        first = hub.fetch(REPO, FILE)
        again = hub.fetch(REPO, FILE)
    assert first.read_bytes() == data
    assert str(first).startswith(str(hub_env / "cache"))
    assert again == first and stand_in.downloads == 1
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())  # the stand-in is gone: offline now
    assert hub.fetch(REPO, FILE) == first


def test_the_downloaded_model_runs_in_the_same_pipeline(hub_env, monkeypatch):
    from kquant.model import runner

    with StandIn(hub.bundled().read_bytes()) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        path = hub.fetch(REPO, FILE)
    model = runner.load(path, n_ctx=64)
    assert model.generate("Once upon a time", max_tokens=8, seed=1) == runner.load(hub.bundled(), n_ctx=64).generate(
        "Once upon a time", max_tokens=8, seed=1
    )


def test_offline_without_a_cached_copy_says_so_in_one_line_and_returns_the_bundled_model(hub_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    assert hub.fetch(REPO, FILE) == hub.bundled()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not reachable" in lines[0] and hub.bundled().name in lines[0]


def test_offline_without_fallback_is_a_clear_error(hub_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    with pytest.raises(KQuantError, match="not reachable"):
        hub.fetch(REPO, FILE, fallback=False)


def test_a_file_the_hub_does_not_have_is_an_error_not_a_fallback(hub_env, monkeypatch):
    with StandIn(b"GGUF") as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        with pytest.raises(KQuantError, match="not on the Hub"):
            hub.fetch(REPO, "no-such-file.gguf")


def test_a_file_that_is_not_gguf_is_refused(hub_env, monkeypatch):
    with StandIn(b"<html>not a model</html>") as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        with pytest.raises(KQuantError, match="not a GGUF file"):
            hub.fetch(REPO, FILE)


def test_a_model_whose_rows_do_not_fit_k_quant_blocks_comes_with_a_note(hub_env, monkeypatch, capsys):
    """A width that is not a multiple of 256 (SmolLM2's 576, the default's) means K-quant fallbacks: say so."""
    from tiny_llama import write_tiny_llama

    narrow = write_tiny_llama(hub_env / "w576.gguf", n_embd=576, n_head=4, n_ff=512, rows=8)
    with StandIn(narrow.read_bytes()) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        hub.fetch(REPO, FILE)
    note = capsys.readouterr().out.strip().splitlines()
    assert len(note) == 1 and "rows of 576 weights, not a multiple of 256" in note[0]
    with StandIn(hub.bundled().read_bytes()) as stand_in:  # 256 wide: nothing to say
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(hub_env / "cache2"))
        hub.fetch(REPO, FILE)
    assert capsys.readouterr().out == ""
