"""What the browser tier drives and whether it runs (shared by its conftest and tests).

Environment switches:
  WORKBOOK_BROWSER=0   skip the tier even where Chromium exists (quick local runs)
  WORKBOOK_BROWSER=1   require it: a missing Chromium fails instead of skipping (CI)
  WORKBOOK_CHROMIUM    path of the browser binary (default: chromium on PATH)
  WORKBOOK_BROWSER_NOTEBOOKS  folder of notebooks to drive (default: notebooks/)
  WORKBOOK_BROWSER_TIMEOUT    seconds allowed for one notebook's Run All (default 900)
"""
from __future__ import annotations

import os
from pathlib import Path

import lab_driver

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "build" / "screenshots"

# What the terminal summary reports: set by the chromium_path fixture and the tests.
state = {"state": None, "reason": "", "notebooks": []}


def browser_notebook_dir() -> Path:
    override = os.environ.get("WORKBOOK_BROWSER_NOTEBOOKS")
    return Path(override).resolve() if override else REPO_ROOT / "notebooks"


def widget_notebooks() -> list[Path]:
    """The notebooks (NN_name.ipynb) in the browser folder that use widgets, in lesson order."""
    return lab_driver.widget_notebooks(sorted(browser_notebook_dir().glob("[0-9][0-9]_*.ipynb")))


def required() -> bool:
    return os.environ.get("WORKBOOK_BROWSER", "").strip() == "1"


def decide() -> tuple[bool, str, str | None]:
    """(run the tier?, why not, Chromium path)."""
    if os.environ.get("WORKBOOK_BROWSER", "").strip() == "0":
        return False, "disabled by WORKBOOK_BROWSER=0", None
    chromium = lab_driver.find_chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False, "Playwright for Python is not installed (pip install -r requirements.txt)", chromium
    if chromium is None:
        return False, ("no Chromium found (install it with `apt-get install chromium`, "
                       "or point WORKBOOK_CHROMIUM at a Chromium/Chrome binary)"), None
    return True, "", chromium


def note_notebook(stem: str, outcome: str) -> None:
    state["notebooks"].append(f"{stem}: {outcome}")
