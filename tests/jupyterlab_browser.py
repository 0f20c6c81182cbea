"""Drive JupyterLab in headless Chromium the way a learner does, for browser tests.

Two halves, usable apart:

* `start_jupyterlab` runs a JupyterLab server on 127.0.0.1 with a known token and isolated
  user config (a test that starts `meshlab lab` itself does the same with `lab_env`).
* `open_lab` opens that server (any base URL + token) in Debian's Chromium through Playwright's
  sync API and yields a `Learner`: open files, run cells, click widget buttons, read outputs,
  look at menus and sidebars, take screenshots.

Token: the server gets `JUPYTER_TOKEN=<random>` in its environment (jupyter_server honours it,
and `meshlab lab` passes its environment through), so the test knows the token without parsing
logs; `runtime_token` reads it from the server's runtime file when the test did not choose it.
Readiness: the server is ready when `GET /api/status` answers 200 with the token; the page is
ready when the splash screen is gone and the menu bar, file browser and main dock are shown.

Everything waits with a timeout, and each context manager stops what it started, also when the
test fails (then a `<name>-failure.png` screenshot is kept in `artifacts_dir()`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Never

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, sync_playwright

from labs.embedded.loopback import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium keeps dialling Google services and floods refused connections.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
# Settings put on the server before the page loads, so no toast ("get notified about official
# Jupyter news?") covers the notebook and nothing tries to reach the internet.
QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}
CellRef = int | str  # a cell by 0-based index, or by a piece of text in its source
_PROMPT_DONE = r"^\[\d+\]:?$"


# ----------------------------------------------------------------------------- environment

def chromium_path() -> str:
    """Debian's Chromium; skip when missing, or fail as root, since `./run test` (root) installs
    it with apt and a missing browser there is a broken setup, not an optional extra."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0:
        pytest.fail("chromium is not installed: `./run test` installs it (apt) when run as root")
    pytest.skip("chromium is not installed and this user cannot install it: "
                "sudo apt-get install chromium")


def artifacts_dir() -> Path:
    """Where screenshots go: `$MESHLAB_TEST_ARTIFACTS`, else `<repo>/test-artifacts` (gitignored),
    so CI can collect them. Not under `build/`: that directory would make ruff sort the grading
    fixtures' `build` module as first-party, differently from a clean clone."""
    found = os.environ.get("MESHLAB_TEST_ARTIFACTS")
    path = Path(found) if found else REPO / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lab_env(home: Path, token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a test JupyterLab: known token, user config/runtime/data dirs under
    `home` so no workspace or setting leaks between runs. The venv's share/jupyter (where the
    ipywidgets and nbgrader lab extensions live) stays on the path: JUPYTER_DATA_DIR only
    replaces the per-user dir, and JUPYTER_PATH is left alone."""
    env = dict(os.environ if base is None else base)
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                      ("JUPYTER_DATA_DIR", "data")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    env["JUPYTER_TOKEN"] = token
    env.pop("JUPYTERLAB_WORKSPACES_DIR", None)
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)
    return env


def runtime_token(runtime_dir: Path, port: int) -> str:
    """The token of the server on `port`, from its `jpserver-*.json` (what `jupyter server list
    --json` reads), for servers started without `JUPYTER_TOKEN`."""
    for info_file in sorted(Path(runtime_dir).glob("jpserver-*.json")):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(info_file.read_text())
            if int(info.get("port", -1)) == port:
                return str(info.get("token", ""))
    raise LookupError(f"no jpserver-*.json for port {port} in {runtime_dir}")


def _request(url: str, token: str, method: str = "GET", body: object = None,
             timeout: float = 5) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"token {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()  # type: ignore[no-any-return]


def wait_for_server(url: str, token: str, timeout: float = 60,
                    process: subprocess.Popen[bytes] | None = None, log: Path | None = None
                    ) -> None:
    """Wait until the server answers `/api/status` with this token; fail early, with the log's
    tail, if the process dies first."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode} before answering "
                        f"{url}\n{_tail(log)}")
        try:
            json.loads(_request(f"{url}/api/status", token, timeout=2))
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer {url}/api/status within {timeout:g}s "
                f"(last: {last!r})\n{_tail(log)}")


def quiet_settings(url: str, token: str) -> None:
    """Store `QUIET_SETTINGS` as the server's user settings (the test server's own, isolated by
    `lab_env`), so the news prompt never appears over the notebook."""
    for plugin, values in QUIET_SETTINGS.items():
        _request(f"{url}/lab/api/settings/{plugin}", token, "PUT",
                 {"raw": json.dumps(values)})


def shutdown_kernels(url: str, token: str) -> None:
    """Stop every kernel of the server: kernels run in their own sessions, so killing the
    server's process group would leave them behind."""
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
        for kernel in json.loads(_request(f"{url}/api/kernels", token)):
            with contextlib.suppress(urllib.error.URLError, OSError):
                _request(f"{url}/api/kernels/{kernel['id']}", token, "DELETE", timeout=15)


def _tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------- server

@dataclass
class LabServer:
    """A JupyterLab this test started: its base URL, token, process and log."""

    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    home: Path

    def stop(self, timeout: float = 20) -> None:
        """Shut kernels down, then SIGTERM the server (it also stops its kernels), SIGKILL if it
        hangs."""
        if self.process.poll() is None:
            shutdown_kernels(self.url, self.token)
        stop_group(self.process, timeout)


def stop_group(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group a test started (`start_new_session=True`), SIGKILL it if it
    outlives `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def start_jupyterlab(root_dir: Path, port: int | None = None,
                     env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                     timeout: float = 60) -> Iterator[LabServer]:
    """Run plain JupyterLab from this venv serving `root_dir` on 127.0.0.1, wait until it
    answers, yield it, and stop it (and its kernels) afterwards."""
    port = port or free_port()
    token = secrets.token_hex(16)
    home = Path(tempfile.mkdtemp(prefix="meshlab-jupyter-"))
    log = home / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser",
               f"--ServerApp.root_dir={root_dir}", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", *extra_args]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=lab_env(home, token, env), cwd=root_dir,
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, process, log, home)
    try:
        wait_for_server(server.url, token, timeout, process, log)
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------------- browser

@dataclass
class Learner:
    """One browser tab on a JupyterLab, driven through the UI as a learner would."""

    page: Page
    url: str
    token: str = ""
    timeout: float = 30
    errors: list[str] = field(default_factory=list)
    _panel_id: str | None = None
    _path: str = ""

    # -- navigation -----------------------------------------------------------------------

    def _href(self, path: str, *query: str) -> str:
        params = [*query, *([f"token={self.token}"] if self.token else [])]
        return f"{self.url}{path}" + (f"?{'&'.join(params)}" if params else "")

    def open_lab(self) -> None:
        """Load `/lab` with a fresh workspace (no tabs restored from an earlier run) and wait
        until JupyterLab is ready."""
        self.page.goto(self._href("/lab", "reset"), timeout=self.timeout * 1000)
        self.wait_ready()
        self._panel_id = None

    def wait_ready(self) -> None:
        """Ready = splash screen gone, menu bar and main area shown, file browser built (it may
        sit in a collapsed side bar, so only attached)."""
        ms = self.timeout * 1000
        self.page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=ms)
        for selector in ("#jp-top-panel .lm-MenuBar-item", "#jp-main-dock-panel"):
            self.page.locator(selector).first.wait_for(state="visible", timeout=ms)
        self.page.locator(".jp-FileBrowser .jp-DirListing-content").first.wait_for(
            state="attached", timeout=ms)

    def open_file(self, path: str) -> None:
        """Open `path` (relative to the server root) by URL `/lab/tree/<path>`, as a link in
        course material would, in a fresh workspace (other tabs close; their kernels keep
        running), and wait for its tab (and, for a notebook, its kernel)."""
        quoted = urllib.parse.quote(path.strip("/"))
        self.page.goto(self._href(f"/lab/tree/{quoted}", "reset"), timeout=self.timeout * 1000)
        self.wait_ready()
        self._activate(path)

    def open_from_file_browser(self, path: str) -> None:
        """Open `path` by double-clicking through the file browser, from its root folder."""
        self.page.locator(".jp-FileBrowser .jp-BreadCrumbs-home").click()
        *folders, name = path.strip("/").split("/")
        for folder in folders:
            self._file_item(folder).dblclick()
            self.page.locator(".jp-FileBrowser .jp-BreadCrumbs-item",
                              has_text=folder).last.wait_for()
        self._file_item(name).dblclick()
        self._activate(path)

    def file_browser_entries(self, refresh: bool = False) -> list[str]:
        """Names listed in the file browser's current folder (folders and files)."""
        if refresh:
            self.page.locator(
                ".jp-FileBrowser [data-command='filebrowser:refresh']").first.click()
            self.page.wait_for_timeout(300)
        items = self.page.locator(".jp-FileBrowser .jp-DirListing-item .jp-DirListing-itemText")
        return [text.strip() for text in items.all_text_contents()]

    def _file_item(self, name: str) -> Locator:
        return self.page.locator(".jp-FileBrowser .jp-DirListing-item").filter(
            has=self.page.locator(".jp-DirListing-itemText").get_by_text(name, exact=True))

    def _activate(self, path: str) -> None:
        """Find the main-area tab whose tooltip names `path`; remember its panel so the cell
        methods act on it; for a notebook wait for its kernel (accepting a kernel dialog)."""
        tab = self.page.locator("#jp-main-dock-panel .lm-TabBar-tab").filter(
            has_text=Path(path).name)
        want = f"Path: {path.strip('/')}"
        deadline = time.monotonic() + self.timeout
        panel_id = None
        while panel_id is None:
            for index in range(tab.count()):
                title = tab.nth(index).get_attribute("title") or ""
                if want in title.splitlines():
                    panel_id = tab.nth(index).get_attribute("data-id")
            if panel_id is None:
                if time.monotonic() > deadline:
                    self._fail(f"no tab for {path} after {self.timeout:g}s")
                self.page.wait_for_timeout(100)
        self._panel_id = panel_id
        self._path = path.strip("/")
        self.panel.wait_for(state="visible", timeout=self.timeout * 1000)
        if "jp-NotebookPanel" in (self.panel.get_attribute("class") or ""):
            self.panel.locator(".jp-Cell").first.wait_for(timeout=self.timeout * 1000)
            self.wait_kernel_idle()

    @property
    def panel(self) -> Locator:
        """The document panel opened last (cell methods act on it)."""
        if self._panel_id is None:
            raise RuntimeError("open a file first (open_file / open_from_file_browser)")
        return self.page.locator(f"[id='{self._panel_id}']")

    # -- kernel and cells -------------------------------------------------------------------

    def kernel_status(self) -> str:
        """The notebook toolbar's execution indicator (idle, busy, starting, connecting,
        unknown...), or "no kernel" while the toolbar says so: the indicator alone reads "idle"
        before any kernel is attached."""
        name = self.panel.locator(".jp-Toolbar-kernelName").first.text_content() or ""
        if name.strip() in ("", "No Kernel"):
            return "no kernel"
        return self.panel.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute(
            "data-status") or ""

    def _server_has_kernel(self) -> bool:
        """Does the server hold a session with a kernel for the open notebook?"""
        try:
            sessions = json.loads(_request(f"{self.url}/api/sessions", self.token))
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(s.get("path") == self._path and s.get("kernel") for s in sessions)

    def wait_kernel_idle(self, timeout: float | None = None) -> None:
        """Wait until the notebook has a kernel on the server and the page shows it idle;
        accept a "Select Kernel" dialog on the way (a notebook without kernelspec metadata
        asks for one: the default choice is the venv's Python 3)."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        status = ""
        while True:
            dialog = self.page.locator(".jp-Dialog .jp-mod-accept")
            if dialog.count():
                dialog.first.click()
            elif (status := self.kernel_status()) == "idle" and self._server_has_kernel():
                return
            if time.monotonic() > deadline:
                self._fail(f"kernel not idle after {timeout:g}s (status {status!r})")
            self.page.wait_for_timeout(100)

    def cells(self) -> Locator:
        """All cells of the open notebook, in order."""
        return self.panel.locator(".jp-Notebook .jp-Cell")

    def cell_sources(self) -> list[str]:
        """Each cell's source as the editor shows it (CodeMirror lines joined by newlines)."""
        return self.panel.locator(".jp-Notebook .jp-Cell").evaluate_all(
            "cells => cells.map(c => [...c.querySelectorAll('.jp-InputArea-editor .cm-line')]"
            ".map(l => l.textContent).join('\\n'))")

    def cell(self, which: CellRef) -> Locator:
        """A cell by 0-based index, or the first cell whose source contains the text."""
        if isinstance(which, int):
            count = self.cells().count()
            if not -count <= which < count:
                self._fail(f"no cell {which}: the notebook has {count}")
            return self.cells().nth(which % count)
        sources = self.cell_sources()
        for index, source in enumerate(sources):
            if which in source:
                return self.cells().nth(index)
        return self._fail(f"no cell contains {which!r}; sources: {sources!r}")

    def replace_source(self, which: CellRef, text: str) -> None:
        """Type `text` over a cell's source as a learner would (select all, then insert; inserted
        as one input, so the editor adds no closing brackets or indentation of its own)."""
        cell = self.cell(which)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-InputArea-editor .cm-content").first.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.insert_text(text)
        if text.splitlines()[0] not in "\n".join(self.cell_sources()):
            self._fail(f"typing into cell {which!r} did not change its source to {text!r}")

    def run_cell(self, which: CellRef, timeout: float = 60) -> str:
        """Select the cell, press Ctrl+Enter (run without advancing, so no cell is added at the
        end) and wait until it has run and the kernel is idle; return its output text."""
        cell = self.cell(which)
        cell.scroll_into_view_if_needed()
        watched = self._watch_prompts([cell])
        cell.locator(".jp-InputPrompt").first.click()
        self.page.keyboard.press("Control+Enter")
        if watched:
            self._wait_prompts(timeout)
        self.wait_kernel_idle(timeout)
        return self.output(cell)

    def run_all(self, timeout: float = 120) -> None:
        """Run > Run All Cells from the menu bar; wait until no cell is queued or running,
        the first code cell has run again and the kernel is idle."""
        self.panel.locator(".jp-InputPrompt").first.click()
        watched = self._watch_prompts([self.cells()], first_only=True)
        self.menu_click("Run", "Run All Cells")
        if watched:
            self._wait_prompts(timeout)
        self.wait_kernel_idle(timeout)

    def _watch_prompts(self, cells: list[Locator], first_only: bool = False) -> int:
        """Mark non-empty code cells and watch their prompts change: a cell counts as run once
        its prompt went through `[*]` and shows a number (the same number as before is fine,
        e.g. after a kernel restart). Returns how many cells are watched."""
        script = """(cells, firstOnly) => {
            const code = cells.filter(c => c.classList.contains('jp-CodeCell') &&
                c.querySelector('.cm-content')?.textContent.trim());
            const watched = firstOnly ? code.slice(0, 1) : code;
            document.querySelectorAll('[data-meshlab-watch]').forEach(
                c => c.removeAttribute('data-meshlab-watch'));
            for (const cell of watched) {
                cell.setAttribute('data-meshlab-watch', 'pending');
                const observer = new MutationObserver(() => {
                    if (cell.querySelector('.jp-InputPrompt')?.textContent.includes('*')) {
                        cell.setAttribute('data-meshlab-watch', 'started');
                        observer.disconnect();
                    }
                });
                observer.observe(cell, {subtree: true, childList: true, characterData: true});
            }
            return watched.length;
        }"""
        return sum(locator.evaluate_all(script, first_only) for locator in cells)

    def _wait_prompts(self, timeout: float) -> None:
        script = """(done) => {
            const cells = [...document.querySelectorAll('[data-meshlab-watch]')];
            const text = c => (c.querySelector('.jp-InputPrompt')?.textContent || '').trim();
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')];
            return cells.every(c => c.getAttribute('data-meshlab-watch') === 'started' &&
                                    new RegExp(done).test(text(c)))
                && !prompts.some(p => p.textContent.includes('*'));
        }"""
        try:
            self.page.wait_for_function(script, arg=_PROMPT_DONE, timeout=timeout * 1000)
        except PlaywrightError:
            self._fail(f"cells did not finish running within {timeout:g}s")

    def output(self, which: CellRef | Locator) -> str:
        """The text a learner sees in a cell's output area (widgets included)."""
        cell = which if isinstance(which, Locator) else self.cell(which)
        cell.scroll_into_view_if_needed()
        area = cell.locator(".jp-Cell-outputArea")
        return area.first.inner_text() if area.count() else ""

    def click_button(self, label: str, cell: CellRef | None = None, expect: str | None = None,
                     timeout: float | None = None) -> str:
        """Click the output button labelled `label` (e.g. an ipywidgets "Check my work"), in
        `cell` or any cell, optionally wait for `expect` to show in that output; return it.
        The name is matched as a substring: an icon's glyph (Font Awesome's ::before content)
        is part of a button's accessible name."""
        in_output = self.page.locator(".jp-Cell-outputArea").get_by_role(
            "button", name=label)  # relative: `has=` queries it inside each cell
        owner = self.cell(cell) if cell is not None else self.cells().filter(has=in_output)
        owner = owner.first
        ms = (timeout or self.timeout) * 1000
        button = owner.locator(".jp-Cell-outputArea").get_by_role(
            "button", name=label).first
        button.scroll_into_view_if_needed(timeout=ms)
        button.click(timeout=ms)
        if expect is not None:
            self.wait_for_text(expect, owner.locator(".jp-Cell-outputArea"), timeout)
        return self.output(owner)

    # -- page ------------------------------------------------------------------------------

    def wait_for_text(self, text: str, within: Locator | None = None,
                      timeout: float | None = None) -> None:
        """Wait until `text` is in the page (or in `within`)."""
        timeout = timeout or self.timeout
        scope = within or self.page.locator("body")
        try:
            scope.first.wait_for(state="attached", timeout=timeout * 1000)
            scope.first.evaluate(
                """(el, [text, ms]) => new Promise((resolve, reject) => {
                    const found = () => el.textContent.includes(text);
                    if (found()) return resolve(true);
                    const observer = new MutationObserver(() => {
                        if (found()) { observer.disconnect(); resolve(true); }
                    });
                    observer.observe(el, {subtree: true, childList: true, characterData: true});
                    setTimeout(() => { observer.disconnect(); reject(new Error('timeout')); },
                               ms);
                })""", [text, timeout * 1000])
        except PlaywrightError:
            shown = scope.first.text_content() if scope.count() else ""
            self._fail(f"{text!r} did not appear within {timeout:g}s; shown: {shown!r:.2000}")

    def page_text(self) -> str:
        """All text in the page's DOM (textContent, so also what is scrolled out of view)."""
        return self.page.locator("body").text_content() or ""

    def has_text(self, text: str) -> bool:
        """Is `text` anywhere in the page (outputs, editors, menus, sidebars)?"""
        return text in self.page_text()

    def menu_bar_items(self) -> list[str]:
        """Labels of the top menu bar (File, Edit, ..., Nbgrader, ...)."""
        labels = self.page.locator("#jp-top-panel .lm-MenuBar-itemLabel")
        return [text.strip() for text in labels.all_text_contents()]

    def menu_items(self, menu: str) -> list[str]:
        """Labels in one menu of the menu bar (opened, read, closed again)."""
        self._open_menu(menu)
        labels = self.page.locator(".lm-Menu").last.locator(".lm-Menu-itemLabel")
        found = [text.strip() for text in labels.all_text_contents() if text.strip()]
        self.page.keyboard.press("Escape")
        return found

    def menu_click(self, menu: str, item: str) -> None:
        """Choose `menu` > `item` from the menu bar."""
        self._open_menu(menu)
        self.page.locator(".lm-Menu").last.locator(".lm-Menu-item").filter(
            has=self.page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True)
        ).first.click()

    def _open_menu(self, menu: str) -> None:
        self.page.locator("#jp-top-panel .lm-MenuBar-item").filter(
            has=self.page.get_by_text(menu, exact=True)).first.click()
        self.page.locator(".lm-Menu").last.wait_for(timeout=self.timeout * 1000)

    def sidebar_tabs(self, side: Literal["left", "right"] = "left") -> list[str]:
        """The side bar's tabs by tooltip without the shortcut ("File Browser", "Nbgrader
        Create Assignment", "Property Inspector", ...)."""
        tabs = self.page.locator(f".jp-SideBar.jp-mod-{side} .lm-TabBar-tab")
        found = []
        for index in range(tabs.count()):
            tab = tabs.nth(index)
            title = tab.get_attribute("title") or tab.text_content() or ""
            found.append(re.sub(r"\s*\([^)]*\)$", "", title).strip())
        return found

    def open_sidebar(self, title: str, side: Literal["left", "right"] = "left") -> Locator:
        """Click the side-bar tab whose tooltip contains `title`; return its (shown) panel."""
        tab = self.page.locator(f".jp-SideBar.jp-mod-{side} .lm-TabBar-tab[title*='{title}']")
        tab = tab.first
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        panel = self.page.locator(f"[id='{tab.get_attribute('data-id')}']")
        panel.wait_for(state="visible", timeout=self.timeout * 1000)
        return panel

    def screenshot(self, name: str) -> Path:
        """Save a full-page PNG as `artifacts_dir()/<name>.png` and return its path."""
        path = artifacts_dir() / (name if name.endswith(".png") else f"{name}.png")
        self.page.screenshot(path=str(path), full_page=True, timeout=self.timeout * 1000)
        return path

    def _fail(self, message: str) -> Never:
        pytest.fail(message + (f"\nbrowser errors: {self.errors[-5:]}" if self.errors else ""))


@contextlib.contextmanager
def open_lab(url: str, token: str = "", name: str = "lab", timeout: float = 30,
             viewport: tuple[int, int] = (1400, 900), quiet: bool = True
             ) -> Iterator[Learner]:
    """Launch headless Debian Chromium (fresh profile) on the JupyterLab at `url`, wait until
    it is ready and yield a `Learner`. On any failure inside the block save
    `<name>-failure.png`; always close the browser."""
    executable = chromium_path()
    url = url.rstrip("/")
    if quiet:
        quiet_settings(url, token)
    with tempfile.TemporaryDirectory(prefix="meshlab-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": viewport[0], "height": viewport[1]}, timeout=timeout * 1000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(timeout * 1000)
            learner = Learner(page, url, token, timeout)
            page.on("pageerror", lambda exc: learner.errors.append(str(exc)))
            learner.open_lab()
            try:
                yield learner
            except BaseException:
                with contextlib.suppress(PlaywrightError):
                    learner.screenshot(f"{name}-failure")
                raise
        finally:
            with contextlib.suppress(PlaywrightError):
                context.close()
