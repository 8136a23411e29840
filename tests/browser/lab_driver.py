"""Drive the workbook in a real JupyterLab with Playwright and Debian's Chromium.

Two parts, both used by tests/browser/:

* `LabServer`: a JupyterLab server started from this Python environment on
  127.0.0.1, a free port and a random token, serving a *temporary copy* of the
  notebooks (the sources are never opened by the browser), with its own
  settings/runtime/workspace folders so a person's JupyterLab setup cannot
  change what the test sees. `stop()` shuts the kernels down and kills the
  server's process group, whatever state it is in.
* Page helpers: open a notebook, run all cells through the Run menu, wait for
  the kernel to finish, find error outputs, find the widget panels and move
  each control while watching the panel's output area.

Nothing here runs at import time.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Chromium flags for a headless run in a container, as root, offline.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]

# A source mentioning any of these has widgets the browser tier must move.
WIDGET_MARKERS = ("interact_panel(", "ipywidgets", "interactive(")

# JupyterLab user settings for the test server (written to its own settings dir).
LAB_SETTINGS = {
    # every cell stays in the DOM, so prompts and outputs can be read anywhere in the page
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no news or update pop-ups covering the page
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def find_chromium() -> str | None:
    """Path of the system Chromium ($WORKBOOK_CHROMIUM overrides), or None."""
    override = os.environ.get("WORKBOOK_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def widget_notebooks(paths) -> list[Path]:
    """The notebooks among `paths` whose cell sources use widgets."""
    found = []
    for path in paths:
        nb = json.loads(Path(path).read_text())
        source = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", [])
                           if c.get("cell_type") == "code")
        if any(marker in source for marker in WIDGET_MARKERS):
            found.append(Path(path))
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab; `url(path)` gives a tokenised address on it."""
    process: subprocess.Popen
    port: int
    token: str
    root_dir: Path
    home: Path
    log_path: Path
    descendants: set = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        req = urllib.request.Request(f"{self.base}/api/{path.lstrip('/')}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every session and its kernel (between notebooks, so idle kernels don't pile up)."""
        try:
            for session in self.api("sessions") or []:
                self.api(f"sessions/{session['id']}", method="DELETE", timeout=30)
        except Exception:  # the server may already be gone; stop() cleans up anyway
            pass

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def remember_descendants(self) -> None:
        """Note the server's child processes (kernels run in their own sessions)."""
        try:
            import psutil
            self.descendants |= {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        except Exception:  # psutil missing or the server already gone
            pass

    def stop(self) -> None:
        """Shut kernels down, stop the server, kill anything left; never raises."""
        self.remember_descendants()
        if self.process.poll() is None:
            try:
                self.api("shutdown", method="POST", timeout=10)
                self.process.wait(timeout=15)
            except Exception:
                pass
        if self.process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                    self.process.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
                    continue
        for pid in self.descendants:  # kernels the shutdown did not take down
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.home, ignore_errors=True)


def start_lab(notebooks: list[Path], kernel_build_dir: Path, *, siblings: list[Path] = (),
              timeout: float = 90.0) -> LabServer:
    """Copy `notebooks` to a temporary folder and serve it with JupyterLab.

    kernel_build_dir: WORKBOOK_BUILD_DIR for the kernels (findings of the
    browser runs land there, not in the build folder the other tests read).
    siblings: folders linked beside the copy (e.g. the repository's data/), so
    a lesson reading "../data/..." finds what it finds in notebooks/.
    """
    home = Path(tempfile.mkdtemp(prefix="workbook-lab-"))
    root = home / "notebooks"
    root.mkdir()
    for path in notebooks:
        shutil.copy2(path, root / Path(path).name)
    for folder in siblings:
        if Path(folder).is_dir():
            (home / Path(folder).name).symlink_to(Path(folder).resolve(), target_is_directory=True)
    settings = home / "settings"
    for rel, values in LAB_SETTINGS.items():
        target = settings / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = dict(os.environ,
               WORKBOOK_BUILD_DIR=str(Path(kernel_build_dir).resolve()),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               PYTHONUNBUFFERED="1")
    env.pop("JUPYTER_TOKEN", None)
    # kernels run this interpreter even where the user has a `python3` kernelspec of their own
    from helpers.workbook.notebooks import kernelspec_dir
    env["JUPYTER_PATH"] = os.pathsep.join([str(kernelspec_dir())] + [p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p])
    port, token = free_port(), secrets.token_hex(24)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--ServerApp.open_browser=False",
           "--LabServerApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = home / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    server = LabServer(proc, port, token, root, home, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} while starting:\n{tail}")
        try:
            server.api("status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s:\n{tail}")
        time.sleep(0.5)


# ----------------------------------------------------------------------------
# Page helpers (Playwright sync API; `page` is a playwright Page)

# One JS function reading the whole notebook's state from the DOM.
NOTEBOOK_STATE_JS = r"""
() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
      .map(p => p.textContent.trim());
  // JupyterLab renders error outputs with the stderr MIME type; an IPython
  // traceback (also inside a widget's output area) always carries this header.
  const errors = [...panel.querySelectorAll('.jp-OutputArea-output')]
      .filter(e => /Traceback \(most recent call last\)|Error displaying widget|Error rendering/.test(e.textContent))
      .map(e => e.textContent.slice(0, 2000));
  const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const kname = panel.querySelector('.jp-Toolbar-kernelName');
  return {prompts, errors, kernelName: kname ? kname.textContent.trim() : '',
          running: prompts.filter(p => p.includes('*')).length,
          executed: prompts.filter(p => /\[\d+\]/.test(p)).length,
          cells: prompts.length,
          kernel: status ? (status.getAttribute('data-status') || '') : ''};
}
"""


def open_notebook(page, server: LabServer, name: str, timeout_s: float = 120) -> None:
    """Open notebooks/<name> in JupyterLab and wait until its kernel is idle."""
    # ?reset: a fresh workspace, so tabs of notebooks opened earlier are not restored
    page.goto(server.url(f"lab/tree/{name}?reset"), wait_until="domcontentloaded", timeout=timeout_s * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout_s * 1000)
    wait_for_kernel_idle(page, timeout_s)


def wait_for_kernel_idle(page, timeout_s: float) -> dict:
    """Wait until the notebook has a kernel (not "No Kernel") that is idle on three polls."""
    start, stable, state = time.monotonic(), 0, {}
    while time.monotonic() - start < timeout_s:
        state = notebook_state(page) or {}
        ready = state.get("kernel") == "idle" and state.get("kernelName") not in ("", "No Kernel")
        stable = stable + 1 if ready else 0
        if stable >= 3:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"the kernel was not idle after {timeout_s:.0f} s; last state: {state}")


def run_all_cells(page) -> None:
    """Run > Run All Cells, through the menu bar as a learner would."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def notebook_state(page) -> dict:
    return page.evaluate(NOTEBOOK_STATE_JS)


def wait_for_run_all(page, timeout_s: float, on_progress=None) -> dict:
    """Poll until no prompt shows [*] and the kernel is idle (or an error stops the run).

    Returns the last state (prompts, errors, counts). Raises TimeoutError with
    the state when `timeout_s` passes.
    """
    start = time.monotonic()
    seen_running = False
    stable = 0
    state = {}
    while time.monotonic() - start < timeout_s:
        state = notebook_state(page) or {}
        seen_running |= state.get("running", 0) > 0
        done = (state.get("running", 1) == 0 and state.get("kernel") == "idle"
                and (seen_running or state.get("executed", 0) > 0))  # a fast run may finish between polls
        stable = stable + 1 if done else 0
        if stable >= 3:  # idle on three polls in a row: nothing queued behind
            state["seconds"] = time.monotonic() - start
            return state
        if on_progress:
            on_progress(state)
        time.sleep(1.0)
    raise TimeoutError(f"run-all did not finish in {timeout_s:.0f} s; last state: {state}")


# The widget panels: ipywidgets.interactive renders as .widget-interact, the
# controls first and the output area (.widget-output) last.
PANELS = ".jp-OutputArea-output .widget-interact"

OUTPUT_SNAPSHOT_JS = """
(panel) => {
  const outs = panel.querySelectorAll(':scope > .widget-output, :scope .widget-output');
  const out = outs[outs.length - 1];
  if (!out) return '';
  const imgs = [...out.querySelectorAll('img')].map(i => i.getAttribute('src') || '');
  const svgs = [...out.querySelectorAll('svg')].map(s => s.outerHTML);
  return JSON.stringify({text: out.innerText, imgs, svgs});
}
"""


def output_snapshot(panel) -> str:
    """A digest-able description of a panel's output: text, table cells, image data."""
    return panel.evaluate(OUTPUT_SNAPSHOT_JS)


def digest(snapshot: str) -> str:
    return hashlib.sha1(snapshot.encode()).hexdigest()[:12]


@dataclass
class Move:
    """One control moved in the browser and what its panel's output did."""
    panel: int
    kind: str
    label: str
    before: str
    after: str
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.after) and self.after != self.before


def controls_of(panel) -> list[tuple[str, object]]:
    """(kind, locator) for each control of a panel that the browser tier knows how to move."""
    found = []
    for kind, selector in (("slider", ".widget-slider .noUi-handle"),
                           ("dropdown", ".widget-dropdown select"),
                           ("toggle-buttons", ".widget-toggle-buttons"),
                           ("toggle", "button.widget-toggle-button:not(.widget-toggle-buttons *)"),
                           ("checkbox", ".widget-checkbox input[type=checkbox]"),
                           ("radio", ".widget-radio-box")):
        loc = panel.locator(selector)
        for i in range(loc.count()):
            found.append((kind, loc.nth(i)))
    return found


def _label(control) -> str:
    """The control's description as shown beside it (for messages and the JSON record)."""
    try:
        return control.evaluate(r"""(el) => {
            let w = el;
            while (w && !w.querySelector(':scope > .widget-label')) {
              if (w.classList && w.classList.contains('widget-interact')) return '';
              w = w.parentElement;
            }
            if (!w) return '';
            const l = w.querySelector(':scope > .widget-label');
            const text = (l.textContent.replace(/\u200b/g, '').trim() || w.textContent);
            return text.replace(/\u200b/g, '').trim().slice(0, 40);
        }""")
    except Exception:
        return ""


def move_control(page, kind: str, control) -> None:
    """Change a control's value the way a person would (keyboard, select, click)."""
    if kind == "slider":
        control.scroll_into_view_if_needed()
        now = control.get_attribute("aria-valuenow")
        top = control.get_attribute("aria-valuemax")
        key = "ArrowLeft" if now is not None and top is not None and float(now) >= float(top) else "ArrowRight"
        control.focus()
        control.press(key)
    elif kind == "dropdown":
        options = control.locator("option")
        values = [options.nth(i).get_attribute("value") for i in range(options.count())]
        current = control.input_value()
        other = next(v for v in values if v != current)
        control.select_option(other)
    elif kind == "toggle-buttons":
        buttons = control.locator("button:not(.mod-active)")
        buttons.first.click()
    elif kind in ("toggle", "checkbox"):
        control.click()
    elif kind == "radio":
        control.locator("input[type=radio]:not(:checked)").first.check()
    else:  # pragma: no cover
        raise ValueError(kind)


def wait_for_new_output(panel, before: str, timeout_s: float) -> str:
    """Poll until the panel's output differs from `before`, is non-empty and stable."""
    start = time.monotonic()
    last, same = None, 0
    while time.monotonic() - start < timeout_s:
        now = output_snapshot(panel)
        content = json.loads(now) if now else {}
        non_empty = bool(content.get("text", "").strip() or content.get("imgs") or content.get("svgs"))
        if now != before and non_empty:
            same = same + 1 if now == last else 0
            if same >= 2:  # unchanged over ~0.5 s: the redraw has finished
                return now
        last = now
        time.sleep(0.25)
    return output_snapshot(panel)


LAST_RUN_CELL_JS = r"""
() => {
  let best = null, bestN = -1;
  for (const cell of document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')) {
    const p = cell.querySelector('.jp-InputArea-prompt');
    const m = p && p.textContent.match(/\[(\d+)\]/);
    if (m && +m[1] > bestN) { bestN = +m[1]; best = cell; }
  }
  if (best) best.scrollIntoView({block: 'start'});
  return bestN;
}
"""


def scroll_to_last_run_cell(page) -> int:
    """Scroll the cell that ran last (where Run All stopped) to the top; its execution count."""
    return page.evaluate(LAST_RUN_CELL_JS)
