"""JupyterLab in a real browser: notebook 02's bit-depth slider redraws its histogram.

The notebook tests (test_notebooks.py) run every notebook headless through nbclient;
this one checks what only a browser shows: that JupyterLab loads the workbook, that
the widget manager renders the ipywidgets, and that moving a slider makes the kernel
draw a new figure. It starts `jupyter lab` on a free local port with a random token,
serving a temporary copy of notebooks/ (the repository's notebooks are never
touched), drives Debian's Chromium headless through Playwright (the system browser:
Playwright downloads nothing), runs notebook 02, moves the "bits" slider from 4 to 3
with the keyboard, and checks that the slider's readout and the histogram image
changed. Screenshots before and after go to tests/artifacts/ (git-ignored).

KQUANT_CHROMIUM names another Chromium binary. Nothing reaches the network: JupyterLab's
news and update checks are off, and Chromium runs with the flags that keep it off the network (no background
networking, no component updates, no sync). Chromium missing: skipped, but in CI
(the CI variable set) a failure, so the test cannot silently stop running there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = "02_scale_and_zero_point.ipynb"
CHROMIUM = os.environ.get("KQUANT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
INSTALL_HINT = "install Debian's Chromium: apt-get update && apt-get install -y --no-install-recommends chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # else Chromium phones home, and a closed network refuses it
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 60  # JupyterLab answers in a few seconds; CI machines are slow and shared
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception)\b.*: ", re.MULTILINE)
UI_TIMEOUT_MS = 30_000  # any single wait on the page; the whole test takes about 15-25 s


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(why: str):
    """Skip on a reader's machine; fail in CI, where the browser test must really run."""
    message = f"{why}: {INSTALL_HINT}"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- the server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: pathlib.Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _lab_environment(home: pathlib.Path) -> dict:
    """A private Jupyter configuration: no news, no update checks, no toasts, every cell in the DOM.

    The user's own ~/.jupyter settings and workspaces are kept out, so the page is the same everywhere.
    """
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        # The kernel imports this checkout's kquant, which finds the bundled model in kquant/data/.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env.pop("MPLBACKEND", None)  # ipykernel's inline backend puts the figures into the page
    # news_url None: the announcements handler fetches no feed (the server side of "no news").
    _write_json(home / "config" / "jupyter_server_config.json", {"LabApp": {"news_url": None}})
    settings = home / "settings" / "@jupyterlab"
    _write_json(
        settings / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
    )
    # Attach every cell to the DOM, so the test can see all of them without scrolling; start
    # the notebook's kernel without the "Select Kernel" dialog JupyterLab may otherwise show.
    _write_json(
        settings / "notebook-extension" / "tracker.jupyterlab-settings",
        {"windowingMode": "none", "autoStartDefaultKernel": True},
    )
    return env


class Lab:
    def __init__(self, url: str, token: str, root: pathlib.Path, proc: subprocess.Popen, log: pathlib.Path):
        self.url, self.token, self.root, self.proc, self.log = url, token, root, proc, log

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else None

    def wait_for_kernel(self, path: str, timeout_s: float = UI_TIMEOUT_MS / 1000) -> None:
        """Until the notebook's kernel has started, is idle and has a browser connected to it."""
        deadline, sessions = time.monotonic() + timeout_s, []
        while time.monotonic() < deadline:
            sessions = self.api("/api/sessions")
            kernels = [s["kernel"] for s in sessions if s.get("path") == path and s.get("kernel")]
            if any(k.get("execution_state") == "idle" and k.get("connections", 0) >= 1 for k in kernels):
                return
            time.sleep(0.2)
        raise AssertionError(f"no idle kernel with a browser connected for {path} within {timeout_s:.0f} s: {sessions}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`jupyter lab` from this Python's environment, serving a copy of notebooks/; shut down afterwards."""
    home = tmp_path_factory.mktemp("jupyterlab")
    root = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = _free_port(), secrets.token_hex(24)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # fail rather than silently move to another port
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = home / "jupyter-server.log"
    with log.open("wb") as out:
        # A session of its own: the finalizer can end the server and any kernel it left, by group id.
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=_lab_environment(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Lab(f"http://127.0.0.1:{port}", token, root, proc, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {proc.returncode}:\n{server.log_tail()}", pytrace=False)
            with contextlib.suppress(OSError, ValueError):
                server.api("/api/status")
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer within {SERVER_START_S} s:\n{server.log_tail()}", pytrace=False
                )
            time.sleep(0.2)
        yield server
    finally:
        _stop(server)


def _stop(server: Lab) -> None:
    """Ask the server to shut down (it ends its kernels), then make sure its whole process group is gone."""
    with contextlib.suppress(OSError, ValueError):
        server.api("/api/shutdown", method="POST")
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.proc.pid, 9)  # a kernel that outlived its server (the group is the server's own)


# --- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """Debian's Chromium, headless, with a fresh profile; closed afterwards."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package playwright is missing (pip install -e '.[test]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        # launch_persistent_context: the profile directory is ours and new (Chromium's --user-data-dir).
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
            service_workers="block",
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield context
        finally:
            context.close()


# --- the test ---------------------------------------------------------------------------


def _code_cell_count(path: pathlib.Path) -> int:
    return sum(c["cell_type"] == "code" for c in json.loads(path.read_text())["cells"])


def _screenshot(page, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def test_bits_slider_redraws_the_error_histogram_in_jupyterlab(
    browser_context, lab
):  # browser first: skip before starting a server
    (ARTIFACTS / "02_failure.png").unlink(missing_ok=True)
    page = browser_context.new_page()
    console_errors = []
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    try:
        _drive_notebook_02(lab, page)
    except BaseException:
        with contextlib.suppress(Exception):
            _screenshot(page, "02_failure.png")
        print(f"jupyter server log (tail):\n{lab.log_tail()}\npage errors: {console_errors}")
        raise
    finally:
        page.close()


def _drive_notebook_02(lab: Lab, page) -> None:
    from playwright.sync_api import expect

    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?reset&token={lab.token}")  # reset: no tabs from a saved workspace
    panel = page.locator(".jp-NotebookPanel").filter(visible=True)  # the current tab
    panel.wait_for(state="visible")
    # Run All only runs once the page is connected to the kernel (before that, JupyterLab
    # silently skips the cells), and the toolbar says "idle" before it is: ask the server.
    lab.wait_for_kernel(NOTEBOOK)
    idle = panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    idle.wait_for(state="attached")

    # Run > Run All Cells, through the menu bar, as a reader would.
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu").get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()

    # Wait for the run to end: nothing pending ("[*]") and something numbered. A cell that
    # raises ends Run All early, leaving the cells after it unnumbered ("[ ]").
    prompts = panel.locator(".jp-CodeCell .jp-InputArea-prompt")
    page.wait_for_function(
        """(panel) => {
            const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                .map(p => p.textContent.trim());
            return !prompts.includes('[*]:') && prompts.some(p => /^\\[\\d+\\]:$/.test(p));
        }""",
        arg=panel.element_handle(),
    )
    idle.wait_for(state="attached")

    # No cell raised, and no widget callback either: JupyterLab shows a traceback as stderr
    # text, in the cell's output or, for a callback, in the widget's output area.
    stderr = panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
    tracebacks = [t for t in stderr if TRACEBACK.search(t)]
    assert not tracebacks, "error output in the notebook:\n" + "\n---\n".join(tracebacks)
    texts = prompts.all_inner_texts()
    assert len(texts) == _code_cell_count(lab.root / NOTEBOOK), (
        "the page shows a different number of code cells than the file has"
    )
    not_run = [i for i, t in enumerate(texts) if not re.fullmatch(r"\[\d+\]:", t.strip())]
    assert not not_run, f"code cells {not_run} (counting from 0) did not run: {texts}"

    # The interact of section 4: the slider labelled "bits", and the figure in its output.
    interact = panel.locator(".widget-interact").filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^bits$"))
    )
    assert interact.count() == 1, f"expected one interact with a 'bits' slider, found {interact.count()}"
    slider = interact.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^bits$"))
    )
    readout = slider.locator(".widget-readout")
    image = interact.locator('.jp-OutputArea-output img[src^="data:image/png;base64,"]')
    image.wait_for(state="visible")
    expect(readout).to_have_text("4")
    before = image.get_attribute("src")
    interact.scroll_into_view_if_needed()
    _screenshot(page, "02_before.png")

    # One step left with the keyboard on the slider's handle: 4 bits -> 3 bits.
    handle = slider.locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowLeft")
    expect(readout).to_have_text("3", timeout=UI_TIMEOUT_MS)
    # The kernel redraws: wait until the output holds a PNG other than the one at 4 bits.
    page.wait_for_function(
        """([root, old]) => {
            const img = root.querySelector('.jp-OutputArea-output img[src^="data:image/png;base64,"]');
            return img !== null && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0;
        }""",
        arg=[interact.element_handle(), before],
    )
    idle.wait_for(state="attached")
    after = image.get_attribute("src")
    _screenshot(page, "02_after.png")

    expect(readout).to_have_text("3")
    assert after != before, "the histogram image did not change when the bits slider moved"
    assert _png_bytes(after) != _png_bytes(before)


def _png_bytes(src: str) -> bytes:
    data = base64.b64decode(src.split(",", 1)[1])
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "the widget's output is not a PNG image"
    return data
