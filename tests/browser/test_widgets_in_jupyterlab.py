"""The workbook in a real browser: every notebook with widgets runs in JupyterLab
through the Run menu without an error, and each widget kind, moved as a person
would move it, changes what its panel shows.

Screenshots (one per notebook, one per widget panel) and a JSON record of the
moves go to build/screenshots/ for a person to look at.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request

import nbformat
import pytest

import lab_driver
from browser_tier import browser_notebook_dir, note_notebook, widget_notebooks

WIDGET_NOTEBOOKS = widget_notebooks()


def has_outputs(path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


# The sources must stay untouched. Committed notebooks carry no outputs, so a
# source that gains outputs was written by the browser run; comparing bytes
# instead would also flag an author saving the lesson while the tier runs.
SOURCE_HAD_OUTPUTS = {p.name: has_outputs(p) for p in WIDGET_NOTEBOOKS}
SOURCE_DIGESTS = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in WIDGET_NOTEBOOKS}
RUN_ALL_TIMEOUT_S = float(os.environ.get("WORKBOOK_BROWSER_TIMEOUT", "900"))
OUTPUT_TIMEOUT_S = 60.0  # one widget update, kernel round trip included, on a busy machine


def test_server_is_local_and_needs_its_token(lab_server):
    assert lab_server.base.startswith("http://127.0.0.1:")
    assert lab_server.api("status") is not None
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{lab_server.base}/api/contents", timeout=5)
    assert refused.value.code in (401, 403)
    served = sorted(p.name for p in lab_server.root_dir.glob("*.ipynb"))
    assert served == sorted(p.name for p in WIDGET_NOTEBOOKS)
    assert lab_server.root_dir != browser_notebook_dir(), "the server must serve a copy"


def saved_errors(lab_server, name: str) -> list[str]:
    """Error outputs in the notebook as JupyterLab saved it (ename: evalue per error)."""
    nb = read_when_complete(lab_server.root_dir / name)
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
            for i, cell in enumerate(nb.cells) for o in cell.get("outputs", [])
            if o.get("output_type") == "error"]


def read_when_complete(path, timeout_s: float = 30.0):
    """The notebook at `path`, read once the server has finished writing it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return nbformat.reads(path.read_text(), as_version=4)
        except (ValueError, OSError):  # caught mid-write (empty or truncated JSON)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def save_notebook(page, lab_server, name: str) -> None:
    """File > Save Notebook, then wait for the file on disk to be written."""
    path = lab_server.root_dir / name
    before = path.stat().st_mtime_ns
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text="Save Notebook").first.click()
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.25)
    assert path.stat().st_mtime_ns != before, "JupyterLab did not save the notebook"


@pytest.mark.parametrize("notebook", WIDGET_NOTEBOOKS, ids=[p.stem for p in WIDGET_NOTEBOOKS])
def test_notebook_runs_and_its_widgets_respond(notebook, lab_server, page, screenshot_dir):
    name, stem = notebook.name, notebook.stem
    moves: list[lab_driver.Move] = []
    record = {"notebook": stem, "moves": []}
    outcome = "failed"
    for stale in screenshot_dir.glob(f"{stem}.*"):  # a previous run's files, so none outlive their notebook
        stale.unlink()
    for stale in screenshot_dir.glob(f"{stem}__panel*.png"):
        stale.unlink()
    try:
        lab_driver.open_notebook(page, lab_server, name)
        lab_driver.run_all_cells(page)
        state = lab_driver.wait_for_run_all(page, RUN_ALL_TIMEOUT_S)
        record["run_all_seconds"] = round(state["seconds"], 1)
        lab_server.remember_descendants()

        # Collect every problem before failing, so one run shows all of them: the
        # cells' errors, and how the widgets that exist respond all the same.
        problems = []
        save_notebook(page, lab_server, name)
        errors = saved_errors(lab_server, name)
        if errors:
            problems.append(f"cells show errors in JupyterLab: {errors}")
        elif state["errors"]:
            problems.append(f"tracebacks on the page: {state['errors']}")
        if state["executed"] != state["cells"]:
            problems.append(f"Run All stopped early: prompts {state['prompts']}")

        panels = page.locator(lab_driver.PANELS)
        if panels.count() == 0:
            problems.append("the notebook uses widgets but shows no widget panel")
        for k in range(panels.count()):
            panel = panels.nth(k)
            controls = lab_driver.controls_of(panel)
            if not controls:
                problems.append(f"widget panel {k} has no control the browser tier can move")
            for kind, control in controls:
                before = lab_driver.output_snapshot(panel)
                start = time.monotonic()
                lab_driver.move_control(page, kind, control)
                after = lab_driver.wait_for_new_output(panel, before, OUTPUT_TIMEOUT_S)
                moves.append(lab_driver.Move(k, kind, lab_driver._label(control), before, after,
                                             time.monotonic() - start))
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(screenshot_dir / f"{stem}__panel{k}.png"))

        record["moves"] = [{"panel": m.panel, "kind": m.kind, "label": m.label, "changed": m.changed,
                            "seconds": round(m.seconds, 2), "before": lab_driver.digest(m.before),
                            "after": lab_driver.digest(m.after)} for m in moves]
        unchanged = [f"panel {m.panel} {m.kind} '{m.label}'" for m in moves if not m.changed]
        if unchanged:
            problems.append(f"moving these controls did not change the panel's output (text, table or "
                            f"image) within {OUTPUT_TIMEOUT_S:.0f} s: {unchanged}")
        new_errors = [e for e in lab_driver.notebook_state(page)["errors"] if e not in state["errors"]]
        if new_errors:
            problems.append(f"tracebacks after moving widgets: {new_errors}")
        record["problems"] = problems
        assert not problems, f"{stem}:\n- " + "\n- ".join(problems)
        outcome = f"{len(moves)} controls moved, run all {state['seconds']:.0f} s"
    finally:
        try:
            first = page.locator(lab_driver.PANELS).first
            stuck = [m.panel for m in moves if not m.changed]
            if stuck:  # show the panel that did not respond
                page.locator(lab_driver.PANELS).nth(stuck[0]).evaluate(
                    "(el) => el.scrollIntoView({block: 'start'})")
            elif outcome == "failed" or record.get("problems"):  # show the cell where Run All stopped
                lab_driver.scroll_to_last_run_cell(page)
            elif first.count():
                first.evaluate("(el) => el.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(screenshot_dir / f"{stem}.png"))
        except Exception as exc:  # a screenshot must not hide the real failure
            record["screenshot_error"] = str(exc)
        record["outcome"] = outcome
        (screenshot_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        note_notebook(stem, outcome)
    if SOURCE_HAD_OUTPUTS[name]:
        digest = hashlib.sha256(notebook.read_bytes()).hexdigest()
        assert digest == SOURCE_DIGESTS[name], f"the source notebook {notebook} changed during the test"
    else:
        assert not has_outputs(notebook), f"the browser run wrote outputs into the source {notebook}"
