"""Fixtures for the browser tier: one JupyterLab server and one Chromium per session.

The tier runs when a system Chromium is found (`apt-get install chromium`)
and Playwright for Python is importable. Otherwise every test here is skipped
and the end of the pytest output says so in one line.

Switches (WORKBOOK_BROWSER=0/1, WORKBOOK_CHROMIUM, ...): see browser_tier.py.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest

import browser_tier
import lab_driver
from browser_tier import SCREENSHOT_DIR

_tier = browser_tier.state


@pytest.fixture(scope="session")
def chromium_path() -> str:
    run, reason, path = browser_tier.decide()
    if not run:
        _tier.update(state="skipped", reason=reason)
        if browser_tier.required():
            pytest.fail(f"browser tier required (WORKBOOK_BROWSER=1) but {reason}")
        pytest.skip(f"browser tier skipped: {reason}")
    _tier.update(state="ran")
    return path


@pytest.fixture(scope="session")
def lab_server(chromium_path):
    """A JupyterLab on a temporary copy of the widget notebooks; stopped at the end whatever happens."""
    notebooks = browser_tier.widget_notebooks()
    kernel_build = Path(tempfile.mkdtemp(prefix="workbook-browser-build-"))
    server = lab_driver.start_lab(notebooks, kernel_build, siblings=[browser_tier.REPO_ROOT / "data"])
    atexit.register(server.stop)  # even if pytest is interrupted before teardown
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(kernel_build, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, headless=True,
                                      args=lab_driver.CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, lab_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        lab_server.remember_descendants()
        context.close()
        lab_server.shutdown_kernels()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


def pytest_terminal_summary(terminalreporter):
    """One clear line at the end of the run: whether the browser tier ran."""
    if _tier["state"] == "skipped":
        terminalreporter.write_line(f"BROWSER TIER SKIPPED: {_tier['reason']}", yellow=True, bold=True)
    elif _tier["state"] == "ran":
        done = "; ".join(_tier["notebooks"]) or "no widget notebooks yet"
        terminalreporter.write_line(f"browser tier ran in JupyterLab + Chromium ({done}); "
                                    f"screenshots in {SCREENSHOT_DIR}", bold=True)
