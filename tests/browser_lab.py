"""What tests/test_browser.py drives: Debian's chromium through Playwright, JupyterLab, a static web server.

- :func:`chromium_path` / :func:`sync_playwright`: the browser by its path (nothing is downloaded) and Playwright;
  when either is missing the test skips with the install step, and fails in CI (``CI=true``).
- :class:`OfflineContext`: a browser context whose pages reach 127.0.0.1 only; it records what it refused.
- :class:`JupyterLab`: ``jupyter lab`` on a free 127.0.0.1 port with a token, settings and state in a temp folder
  (no news, no update check, no autosave), stopped with its kernels and everything they started.
- :class:`StaticSite`: ``python -m http.server`` on a folder (the book).
- :func:`read_notebook`: every cell of the open notebook as the page shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from labkit import paths, process
from tests.conftest import IN_CI, require_tool

SCREENSHOTS = paths.BUILD / "screenshots"
CHROMIUM_INSTALL = "sudo apt-get install chromium"
PLAYWRIGHT_INSTALL = ".venv/bin/pip install -r requirements.txt  (playwright; no browser download is needed)"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


# ------------------------------------------------------------------ the browser


def chromium_path() -> str:
    """The chromium to drive: $CHROMIUM, else `chromium` or `chromium-browser` on PATH (fails in CI when none)."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        found = shutil.which(chosen)
        if not found:
            _missing(f"$CHROMIUM is {chosen!r}, which is not an executable. Install chromium with: {CHROMIUM_INSTALL}")
        return found
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return require_tool("chromium", CHROMIUM_INSTALL)


def sync_playwright():
    """Playwright's ``sync_playwright`` (fails in CI when the package is missing, skips elsewhere)."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        _missing(f"the `playwright` Python package is not installed. Install it with: {PLAYWRIGHT_INSTALL}")
    return start


def _missing(message: str):
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def launch_chromium(playwright, executable: str):
    """Headless chromium from ``executable``; ``--no-sandbox`` only as root (chromium refuses its sandbox there)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=executable, headless=True, args=args, timeout=60_000)


class OfflineContext:
    """A new browser context, 1400x900, whose requests reach 127.0.0.1 only; the others are refused and noted.

    It also notes the pages' uncaught JavaScript errors (``page_errors``).
    """

    def __init__(self, browser) -> None:
        self.refused: list[str] = []
        self.page_errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.set_default_timeout(60_000)
        # only what leaves 127.0.0.1 is intercepted (a routed request is slow: a notebook's save would stall)
        self.context.route(lambda url: urlsplit(url).hostname not in LOCAL_HOSTS, self._refuse)

    def _refuse(self, route) -> None:
        self.refused.append(route.request.url)
        route.abort()

    def new_page(self):
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)[:500]))
        return page

    def close(self) -> None:
        self.context.close()


@contextlib.contextmanager
def screenshot_on_failure(page, name: str) -> Iterator[None]:
    """On any exception in the block, save the page as ``build/screenshots/<name>-failure.png`` and say so."""
    try:
        yield
    except BaseException as err:
        path = SCREENSHOTS / f"{name}-failure.png"
        with contextlib.suppress(Exception):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), timeout=15_000)
            print(f"screenshot of the page at the failure: {path}")
            if hasattr(err, "add_note"):  # Python 3.11+
                err.add_note(f"screenshot of the page at the failure: {path}")
        raise


# ------------------------------------------------------------------ JupyterLab

# Settings of a fresh JupyterLab, in a temp folder: the learner's own settings (~/.jupyter) play no part.
LAB_SETTINGS = {
    # no "Would you like to receive official Jupyter news?" toast, no request for news or updates
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # the run's outputs stay in the page: nothing writes the notebook back while the test runs
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # every cell in the page, so the test reads them all at once and scrolls the browser's way (the default,
    # "full", attaches only the cells near the viewport; a cell and its outputs are drawn the same either way)
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class JupyterLab(process.ManagedServer):
    """``jupyter lab`` serving ``root_dir`` on 127.0.0.1 with a random token; config, data, runtime in ``state``."""

    title = "JupyterLab"

    def __init__(self, root_dir: Path, state: Path, port: int) -> None:
        self.root_dir, self.state, self.port = root_dir, state, port
        self.token = secrets.token_hex(24)
        self.base = f"http://{self.host}:{port}"
        config = state / "config"
        settings = config / "lab" / "user-settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}  # the kernel's inline plots
        env.update(
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTER_DATA_DIR=str(state / "data"),
            JUPYTER_RUNTIME_DIR=str(state / "runtime"),
            IPYTHONDIR=str(state / "ipython"),
        )
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            f"--ip={self.host}", f"--port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root_dir}",
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={config / 'lab' / 'workspaces'}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]  # fmt: skip
        if os.geteuid() == 0:
            command.append("--allow-root")
        super().__init__(command, env=env, name="jupyterlab", cwd=root_dir)

    @classmethod
    def start(cls, root_dir: Path, state: Path, timeout: float = 120) -> JupyterLab:
        def launch() -> JupyterLab:
            lab = cls(root_dir, state, process.free_port())
            lab.wait_ready(timeout)
            return lab

        return process.start_with_port_retry(launch)  # "The port N is already in use": another port

    def describe(self) -> str:
        return f"{self.base} root={self.root_dir}"

    def ready_urls(self) -> list[str]:
        return [f"{self.base}/api/status?token={self.token}"]

    def url(self, path: str) -> str:
        """``path`` (e.g. ``lab/tree/04.ipynb``) with the token."""
        return f"{self.base}/{path}?token={self.token}"

    def api(self, method: str, path: str) -> requests.Response:
        response = requests.request(method, self.url(f"api/{path}"), timeout=30)
        response.raise_for_status()
        return response

    def stop_everything(self) -> list[str]:
        """Shut the kernels down, stop the server, and return what it started that is still alive (then killed).

        A kernel runs in its own process group, so the server's group is not enough: every descendant alive
        before the stop (kernels, the tritonserver a notebook started, its stubs and watchdogs) must end.
        """
        descendants: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants = psutil.Process(self.pid).children(recursive=True)
        if self.is_running():
            with contextlib.suppress(requests.RequestException):
                for kernel in self.api("GET", "kernels").json():
                    self.api("DELETE", f"kernels/{kernel['id']}")
        self.stop()
        gone, alive = psutil.wait_procs(descendants, timeout=30)
        left = []
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
                proc.kill()
        return left


# ------------------------------------------------------------------ a static site


class StaticSite(process.ManagedServer):
    """``python -m http.server`` serving ``folder`` on 127.0.0.1."""

    title = "http.server"

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.base = folder, f"http://{self.host}:{port}"
        command = [sys.executable, "-m", "http.server", "--bind", self.host, str(port), "--directory", str(folder)]
        super().__init__(command, env=dict(os.environ), name="http-server")

    @classmethod
    def start(cls, folder: Path, timeout: float = 30) -> StaticSite:
        def launch() -> StaticSite:
            site = cls(folder, process.free_port())
            site.wait_ready(timeout)
            return site

        return process.start_with_port_retry(launch)

    def describe(self) -> str:
        return f"{self.base} {self.folder}"

    def ready_urls(self) -> list[str]:
        return [f"{self.base}/index.html"]


# ------------------------------------------------------------------ what the notebook shows

# Every cell of the notebook: its index, kind, prompt, outputs, images and progress bars (tqdm's widget: an HBox of
# HTML, a horizontal progress bar and HTML; a widget's output has no data-mime-type, only the widget's DOM).
_CELLS_JS = """
panel => [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map(cell => ({
  index: Number(cell.dataset.windowedListIndex),
  code: cell.classList.contains('jp-CodeCell'),
  prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
  outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => ({
    mime: o.dataset.mimeType ?? '', widget: o.querySelector('.jupyter-widgets') !== null,
    text: (o.textContent ?? '').slice(0, 2000)})),
  images: [...cell.querySelectorAll('.jp-OutputArea-output img')].map(i => ({
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  bars: [...cell.querySelectorAll('.jp-OutputArea-output .widget-hbox')].filter(
    box => box.querySelector('.widget-hprogress .progress')).map(box => ({
      text: box.textContent.trim(),
      width: box.querySelector('.widget-hprogress .progress').getBoundingClientRect().width,
      filled: box.querySelector('.widget-hprogress .progress-bar')?.getBoundingClientRect().width ?? 0})),
}))
"""
_IMAGES_LOADED_JS = "panel => [...panel.querySelectorAll('.jp-OutputArea-output img')].every(i => i.complete)"


def read_notebook(page, panel_selector: str) -> dict[int, dict]:
    """Every cell of the notebook in ``panel_selector``, by index, as drawn (once its images have loaded).

    JupyterLab runs here with ``windowingMode: none`` (:data:`LAB_SETTINGS`): every cell is in the page.
    """
    panel = page.locator(panel_selector)
    with contextlib.suppress(Exception):  # an image that never loads is reported by the caller
        page.wait_for_function(_IMAGES_LOADED_JS, arg=panel.element_handle(), timeout=30_000)
    return {cell["index"]: cell for cell in panel.evaluate(_CELLS_JS)}


def show(page, selector: str) -> None:
    """Scroll the first element matching ``selector`` to the middle of its scroller."""
    page.locator(selector).first.evaluate("element => element.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(500)
