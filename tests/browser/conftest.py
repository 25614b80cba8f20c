"""A real front end: a Jupyter server started per test module, driven by headless Chromium through Playwright.

Facts this relies on (../shared/recipes/jupyter-testing.md): Debian's Chromium, never
`playwright install`; a fresh root, settings, workspace and runtime directory per
server; JupyterLab's kernel dialog switched off by a settings file; "idle" read from
`/api/sessions`, not from the toolbar; the app exposed as `window.jupyterapp`.
Screenshots of every stage go to `$MTLNB_SCREENSHOTS` (default `ci-artifacts/screenshots`).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
jupyter_client = pytest.importorskip("jupyter_client")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("MTLNB_SCREENSHOTS", REPO / "ci-artifacts" / "screenshots"))
# What makes a fresh JupyterLab usable by a robot: no kernel dialog, every cell rendered, no news prompt.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}
ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"


class JupyterServer:
    """`jupyter lab` or `jupyter notebook` on 127.0.0.1 with a fresh root holding a copy of `notebooks/`."""

    def __init__(self, app: str, workdir: Path) -> None:
        self.app, self.token = app, secrets.token_hex(16)
        self.root, settings, workspaces, self.runtime = (workdir / d for d in ("root", "settings", "workspaces", "rt"))
        for folder in ("notebooks", "examples"):  # notebook 06 loads ../examples/readme_model.py
            shutil.copytree(REPO / folder, self.root / folder, ignore=shutil.ignore_patterns("runs"))
        for name, values in SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        workspaces.mkdir()
        self.port = _free_port()
        app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
        self.log = workdir / f"{app}.log"
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("jupyter")),
                app,
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                f"--{app_class}.user_settings_dir={settings}",
                f"--{app_class}.workspaces_dir={workspaces}",
                f"--{app_class}.expose_app_in_browser=True",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime)},
        )
        deadline = time.time() + 60
        while True:
            try:
                self.api("status")
                return
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"jupyter {app} did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.3)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def api(self, path: str) -> object:
        with urllib.request.urlopen(self.url(f"api/{path}"), timeout=5) as response:
            return json.load(response)

    def kernel_states(self) -> list[str]:
        return [s["kernel"]["execution_state"] for s in self.api("sessions")]

    def ask_kernel(self, code: str, timeout: float = 30) -> str:
        """Run `code` in the notebook's kernel through a second client (as a console would); its stdout."""
        (session,) = self.api("sessions")
        client = jupyter_client.BlockingKernelClient(
            connection_file=str(self.runtime / f"kernel-{session['kernel']['id']}.json")
        )
        client.load_connection_file()
        client.start_channels()
        try:
            msg_id, out = client.execute(code), []
            deadline = time.time() + timeout
            while time.time() < deadline:
                try:
                    msg = client.get_iopub_msg(timeout=1)
                except queue.Empty:
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    raise AssertionError("\n".join(msg["content"]["traceback"]))
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
            raise TimeoutError(code)
        finally:
            client.stop_channels()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("the browser tests need Chromium: apt-get install -y chromium (`make test` installs it)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _server(app: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = JupyterServer(app, tmp_path_factory.mktemp(app))
    yield server
    server.stop()


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    yield from _server("lab", tmp_path_factory)


@pytest.fixture
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    yield from _server("notebook", tmp_path_factory)


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    # Tall: JupyterLab scrolls inside its own panel, so a full-page screenshot shows no more than the viewport.
    page = browser.new_page(viewport={"width": 1400, "height": 2200})
    # What the page saw, for a failure's log: console errors and the kernel websockets' lives.
    events: list[str] = []

    def note(text: str) -> None:
        events.append(f"{time.strftime('%H:%M:%S')} {text}")

    def follow(socket: object) -> None:
        note(f"websocket open {socket.url.split('?')[0]}")
        socket.on("close", lambda ws: note(f"websocket closed {ws.url.split('?')[0]}"))
        socket.on("socketerror", lambda error: note(f"websocket error {error}"))

    page.on(
        "console",
        lambda message: message.type in ("error", "warning") and note(f"console {message.type}: {message.text}"),
    )
    page.on("pageerror", lambda error: note(f"page error: {error}"))
    page.on("websocket", follow)
    yield page
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        screenshot(page, f"FAILED-{request.node.name}")
        (SCREENSHOTS / f"FAILED-{request.node.name}.log").write_text("\n".join(events) + "\n")
        print("what the page saw:", *events[-40:], sep="\n  ")
    page.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def screenshot(page: object, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# ------------------------------------------------------------ what a user does in the page


def open_notebook(page: object, server: JupyterServer, name: str) -> None:
    """Open `notebooks/<name>` and wait until its kernel is up and idle."""
    path = f"lab/tree/notebooks/{name}" if server.app == "lab" else f"notebooks/notebooks/{name}"
    page.goto(server.url(path))
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel); }",
        timeout=90_000,
    )
    wait_idle(server, settle=0.5)


def wait_idle(server: JupyterServer, timeout: float = 180, settle: float = 1.0) -> None:
    """Until the kernel has stayed idle for `settle` seconds (run-all goes busy and idle once per cell)."""
    deadline, idle_since = time.time() + timeout, None
    while time.time() < deadline:
        states = server.kernel_states()
        if states and all(s == "idle" for s in states):
            idle_since = idle_since or time.time()
            if time.time() - idle_since >= settle:
                return
        else:
            idle_since = None
        time.sleep(0.2)
    raise TimeoutError(f"kernel still busy after {timeout} s: {server.kernel_states()}")


def run_all(page: object, server: JupyterServer) -> None:
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(1000)
    wait_idle(server, settle=2.0)
    pending = page.locator(".jp-InputPrompt", has_text="[*]")
    if pending.count():
        raise AssertionError(f"{pending.count()} cells still waiting after run-all")


def add_and_run_cell(page: object, server: JupyterServer, code: str) -> None:
    """Append a code cell at the end of the notebook, type `code` into it and run it, as a user would."""
    page.evaluate(
        """(code) => {
            const app = window.jupyterapp, panel = app.shell.currentWidget, notebook = panel.content;
            notebook.activeCellIndex = notebook.widgets.length - 1;
            return app.commands.execute('notebook:insert-cell-below').then(() => {
                notebook.activeCell.model.sharedModel.setSource(code);
                return app.commands.execute('notebook:run-cell');
            });
        }""",
        code,
    )
    wait_idle(server, settle=0.5)


def error_outputs(page: object) -> list[str]:
    return page.locator(ERROR_OUTPUT).all_inner_texts()
