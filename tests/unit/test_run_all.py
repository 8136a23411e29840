"""`make run` keeps its promises (issue 12 §5): every way a notebook can fail is reported and the
others still run; build/ is always complete and a killed run is repaired by the next; one run at a
time; kernels are this interpreter's; one console line per notebook, kernel chatter in a log file."""
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

import helpers.workbook.notebooks as notebooks
import helpers.workbook.run_all as R
from helpers.workbook.notebooks import Execution, execute
from helpers.workbook.params import ParameterError


def _write_notebook(path: Path, *cells: str, parameters: str = "seed = 0  # 0–9") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first] + [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _fake_executor(fail=(), interrupt_at=None, raise_at=None, invalid_output=(), chatter=False):
    calls = []

    def execute(notebook, output, build_dir, parameters=None):
        calls.append((notebook.stem, parameters))
        if notebook.stem == interrupt_at:
            raise KeyboardInterrupt
        if notebook.stem == raise_at:
            raise RuntimeError("the executor itself broke")
        if chatter:
            os.write(2, f"[IPKernelApp] WARNING | chatter of {notebook.stem}\n".encode())
        output.parent.mkdir(parents=True, exist_ok=True)
        if notebook.stem in invalid_output:
            output.write_text("{}")  # not a notebook: rendering it to HTML fails
        else:
            nbformat.write(nbformat.v4.new_notebook(), output)
        path = build_dir / "findings" / f"{notebook.stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"parameters": {"seed": 0}, "findings": {"x": 1}}))
        ok = notebook.stem not in fail
        return Execution(notebook.stem, output, {}, ok, 1.0, "" if ok else "ClaimFailed: nope",
                         "" if ok else "ClaimFailed", None if ok else 4)
    execute.calls = calls
    return execute


class Console:
    """Collects what run_all logs, as the terminal would show it."""
    def __init__(self):
        self.text = ""

    def __call__(self, text, end="\n"):
        self.text += text + end

    @property
    def lines(self):
        return [l for l in self.text.splitlines() if l.strip()]


@pytest.fixture
def old_build(tmp_path):
    build = tmp_path / "build"
    (build / "notebooks").mkdir(parents=True)
    (build / "report.md").write_text("previous report")
    (build / "sweeps").mkdir()
    (build / "sweeps" / "keep.csv").write_text("a,b")
    return build


NOTEBOOKS = ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"]


def _paths(tmp_path):
    return [_write_notebook(tmp_path / "nbs" / n) for n in NOTEBOOKS]


def _leftovers(tmp_path):
    return [p.name for p in tmp_path.glob(".build-*") if p.is_dir()]


def test_interrupted_run_keeps_previous_build(tmp_path, old_build):
    with pytest.raises(KeyboardInterrupt):
        R.run_all(_paths(tmp_path), old_build, executor=_fake_executor(interrupt_at="01_b"), html=False,
                  log=Console())
    assert (old_build / "report.md").read_text() == "previous report"
    assert not _leftovers(tmp_path), "staging folder left behind"


def test_finished_run_replaces_build_and_keeps_other_folders(tmp_path, old_build):
    executor = _fake_executor(fail={"01_b"})
    console = Console()
    rows = R.run_all(_paths(tmp_path), old_build, executor=executor, html=False, log=console)
    assert [c[0] for c in executor.calls] == ["00_a", "01_b", "02_c"], "a failure must not stop the others"
    assert [r["status"] for r in rows] == ["ok", "FAILED", "ok"]
    report = (old_build / "report.md").read_text()
    assert "previous report" not in report and "FAILED" in report and "ClaimFailed: nope" in report
    assert (old_build / "index.html").exists() and (old_build / "findings" / "02_c.json").exists()
    assert (old_build / "sweeps" / "keep.csv").read_text() == "a,b"
    assert not _leftovers(tmp_path)
    assert console.lines == ["[1/3] 00_a ... ok in 1.0 s",
                             "[2/3] 01_b ... FAILED in 1.0 s — cell 4: ClaimFailed: nope",
                             "[3/3] 02_c ... ok in 1.0 s"], "one line per notebook"


def test_first_run_creates_build(tmp_path):
    build = tmp_path / "build"
    R.run_all(_paths(tmp_path)[:1], build, executor=_fake_executor(), html=False, log=Console())
    assert (build / "report.md").exists() and (build / R.COMPLETE_MARKER).exists()


def test_an_executor_that_raises_is_a_failed_row_and_the_rest_runs(tmp_path):
    build = tmp_path / "build"
    rows = R.run_all(_paths(tmp_path), build, executor=_fake_executor(raise_at="00_a"), html=False,
                     log=Console())
    assert [r["status"] for r in rows] == ["FAILED", "ok", "ok"]
    assert rows[0]["error"] == "RuntimeError: the executor itself broke"


def test_an_html_rendering_error_is_a_failed_row_and_the_rest_runs(tmp_path):
    build = tmp_path / "build"
    rows = R.run_all(_paths(tmp_path), build, executor=_fake_executor(invalid_output={"01_b"}), log=Console())
    assert [r["status"] for r in rows] == ["ok", "FAILED", "ok"]
    assert rows[1]["error"].startswith("HTML rendering failed: ")
    assert (build / "html" / "00_a.html").exists() and (build / "html" / "02_c.html").exists()
    assert not (build / "html" / "01_b.html").exists()


def test_kernel_chatter_goes_to_the_log_file_not_the_terminal(tmp_path, capfd):
    build = tmp_path / "build"
    console = Console()
    R.run_all(_paths(tmp_path), build, executor=_fake_executor(chatter=True), html=False, log=console)
    out, err = capfd.readouterr()
    assert "chatter" not in err and "chatter" not in out and "chatter" not in console.text
    log = (build / "run.log").read_text()
    assert all(f"chatter of {n}" in log for n in ("00_a", "01_b", "02_c"))


# ---- the build folder: never absent, repaired after a crash ---------------------------------------

def _complete_staging(tmp_path, pid, report="new report"):
    staging = tmp_path / f".build-staging-{pid}"
    staging.mkdir()
    (staging / "report.md").write_text(report)
    (staging / R.COMPLETE_MARKER).write_text("done")
    return staging


def test_a_crash_between_the_two_renames_is_repaired_by_the_next_run(tmp_path, old_build, monkeypatch):
    staging = _complete_staging(tmp_path, 111)
    real_replace = os.replace

    def crash_on_second_rename(src, dst):
        if Path(src) == staging:
            raise SystemExit("killed between the renames")
        return real_replace(src, dst)
    monkeypatch.setattr(R.os, "replace", crash_on_second_rename)
    with pytest.raises(SystemExit):
        R.swap_into_place(staging, old_build, exchange=lambda a, b: False)
    monkeypatch.setattr(R.os, "replace", real_replace)
    assert not old_build.exists(), "the simulated crash left no build/"
    notes = R.recover(old_build)
    assert (old_build / "report.md").read_text() == "new report", "the completed run's results come back"
    assert (old_build / "sweeps" / "keep.csv").read_text() == "a,b", "carried folders too"
    assert not _leftovers(tmp_path)
    assert any("restored build/ from .build-staging-111" in n for n in notes), notes


def test_without_a_complete_staging_folder_the_previous_build_comes_back(tmp_path, old_build):
    os.replace(old_build, tmp_path / ".build-old-5")
    half = tmp_path / ".build-staging-6"
    (half / "notebooks").mkdir(parents=True)  # a run killed mid-way: no completion marker
    R.recover(old_build)
    assert (old_build / "report.md").read_text() == "previous report"
    assert not _leftovers(tmp_path)


def test_leftovers_beside_a_build_are_removed_keeping_what_build_lacks(tmp_path, old_build):
    stale = tmp_path / ".build-old-7"
    (stale / "screenshots").mkdir(parents=True)
    (stale / "screenshots" / "a.png").write_text("png")
    (stale / "report.md").write_text("older report")
    _complete_staging(tmp_path, 8)
    notes = R.recover(old_build)
    assert (old_build / "report.md").read_text() == "previous report"
    assert (old_build / "screenshots" / "a.png").read_text() == "png"
    assert not _leftovers(tmp_path) and len(notes) == 2


def test_a_run_repairs_leftovers_before_it_starts(tmp_path, old_build):
    os.replace(old_build, tmp_path / ".build-old-9")
    console = Console()
    R.run_all(_paths(tmp_path)[:1], old_build, executor=_fake_executor(), html=False, log=console)
    assert "restored build/ from .build-old-9" in console.text
    assert (old_build / "sweeps" / "keep.csv").read_text() == "a,b" and not _leftovers(tmp_path)


@pytest.mark.parametrize("exchange", [R._exchange, lambda a, b: False], ids=["atomic-exchange", "two-renames"])
def test_both_swaps_give_the_new_build_with_the_carried_folders(tmp_path, old_build, exchange):
    staging = _complete_staging(tmp_path, 12)
    R.swap_into_place(staging, old_build, exchange=exchange)
    assert (old_build / "report.md").read_text() == "new report"
    assert (old_build / "sweeps" / "keep.csv").read_text() == "a,b"
    assert not _leftovers(tmp_path)


def test_the_atomic_exchange_swaps_two_folders_where_the_system_has_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "in_a").write_text("")
    (b / "in_b").write_text("")
    if not R._exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: the two-rename path is used")
    assert (a / "in_b").exists() and (b / "in_a").exists()


# ---- one run at a time ---------------------------------------------------------------------------

def test_a_second_run_stops_at_once_while_the_first_holds_the_lock(tmp_path, old_build):
    executor = _fake_executor()
    with R.build_lock(old_build.resolve()):
        with pytest.raises(R.RunLocked, match=rf"another run is already writing .*pid {os.getpid()}"):
            R.run_all(_paths(tmp_path), old_build, executor=executor, html=False, log=Console())
    assert executor.calls == [], "the second run must not execute anything"
    assert (old_build / "report.md").read_text() == "previous report"
    R.run_all(_paths(tmp_path)[:1], old_build, executor=executor, html=False, log=Console())  # lock released


def test_main_reports_a_locked_build_with_exit_3(tmp_path, capsys):
    build = tmp_path / "build"
    with R.build_lock(build.resolve()):
        assert R.main(["00", "--build", str(build)]) == 3
    assert "another run is already writing" in capsys.readouterr().err


# ---- parameters ----------------------------------------------------------------------------------

def test_parameters_reach_every_notebook(tmp_path):
    executor = _fake_executor()
    R.run_all(_paths(tmp_path), tmp_path / "build", executor=executor, html=False, log=Console(),
              parameters={"seed": 3})
    assert [c[1] for c in executor.calls] == [{"seed": 3}] * 3


def test_an_unknown_parameter_name_stops_the_run_before_anything_runs(tmp_path, old_build):
    executor = _fake_executor()
    with pytest.raises(ParameterError, match=r"unknown parameter 'sede' \(did you mean 'seed'\?\).*"
                                             r"expected one of 'seed'"):
        R.run_all(_paths(tmp_path), old_build, executor=executor, html=False, log=Console(),
                  parameters={"sede": 1})
    assert executor.calls == [] and (old_build / "report.md").read_text() == "previous report"


def test_main_refuses_an_unknown_parameter_with_exit_2(tmp_path, capsys):
    assert R.main(["00", "--build", str(tmp_path / "build"), "-p", "lerning_rate", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "ParameterError: unknown parameter 'lerning_rate'" in err and "'logical_devices'" in err
    assert not (tmp_path / "build").exists()


# ---- real executions: unreadable notebook, missing kernel, dying kernel, which interpreter ---------

def test_an_unreadable_notebook_is_reported_and_the_next_one_runs(tmp_path):
    bad = tmp_path / "nbs" / "00_broken.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text("this is not JSON {")
    fine = _write_notebook(tmp_path / "nbs" / "01_fine.ipynb", "print('ran')")
    rows = R.run_all([bad, fine], tmp_path / "build", html=False, log=Console(), kernel_log=False)
    assert [r["status"] for r in rows] == ["FAILED", "ok"]
    assert "JSONDecodeError" in rows[0]["error"] or "NotJSONError" in rows[0]["error"], rows[0]["error"]


def test_a_missing_kernel_is_reported_not_raised(tmp_path, monkeypatch):
    import contextlib

    @contextlib.contextmanager
    def missing_kernel():
        yield "no-such-kernel-for-this-test"
    monkeypatch.setattr(notebooks, "venv_kernel", missing_kernel)
    result = execute(_write_notebook(tmp_path / "00_x.ipynb", "print(1)"), tmp_path / "out.ipynb")
    assert not result.ok and result.error_name == "NoSuchKernel", result.error
    assert "no-such-kernel-for-this-test" in result.error


def _flaky_kernel(tmp_path, monkeypatch, failures: int) -> Path:
    """A kernelspec whose first `failures` kernels exit before answering, as one whose ports were
    taken by another process does; later ones are this interpreter's ipykernel. Returns the counter."""
    import contextlib
    counter = tmp_path / "launches"
    launcher = tmp_path / "flaky_launcher.py"
    launcher.write_text(
        "import os, sys\n"
        f"counter = {str(counter)!r}\n"
        "n = int(open(counter).read()) if os.path.exists(counter) else 0\n"
        "open(counter, 'w').write(str(n + 1))\n"
        f"if n < {failures}:\n"
        "    sys.exit(1)\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', '-f', sys.argv[1]])\n")
    spec = tmp_path / "jupyter" / "kernels" / "flaky"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, str(launcher), "{connection_file}"], "display_name": "flaky",
         "language": "python"}))

    @contextlib.contextmanager
    def flaky_kernel():
        with notebooks.environ(JUPYTER_PATH=str(tmp_path / "jupyter")):
            yield "flaky"
    monkeypatch.setattr(notebooks, "venv_kernel", flaky_kernel)
    monkeypatch.setattr(notebooks, "KERNEL_START_PAUSE_S", 0.0)
    return counter


def test_a_kernel_that_dies_before_any_cell_is_started_again(tmp_path, monkeypatch):
    """Real kernels: the first one exits during start-up (nothing ran), the run is made on a second."""
    counter = _flaky_kernel(tmp_path, monkeypatch, failures=1)
    result = execute(_write_notebook(tmp_path / "00_x.ipynb", "print('ran')"), tmp_path / "out.ipynb")
    assert result.ok, result.error
    assert counter.read_text() == "2", "one failed start, then one that ran"
    assert len(result.extra["failed_kernel_starts"]) == 1
    assert "Kernel died before replying to kernel_info" in result.extra["failed_kernel_starts"][0]
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "".join(o.get("text", "") for o in out.cells[1].outputs).strip() == "ran"


def test_a_kernel_that_never_starts_is_reported_after_the_attempts(tmp_path, monkeypatch):
    counter = _flaky_kernel(tmp_path, monkeypatch, failures=99)
    result = execute(_write_notebook(tmp_path / "00_x.ipynb", "print('ran')"), tmp_path / "out.ipynb")
    assert not result.ok
    assert counter.read_text() == str(notebooks.KERNEL_START_ATTEMPTS)
    assert "Kernel died before replying to kernel_info" in result.error, result.error
    assert f"failed to start {notebooks.KERNEL_START_ATTEMPTS} times" in result.error, result.error


def test_a_cell_error_or_a_kernel_death_mid_run_is_not_run_again(tmp_path, monkeypatch):
    counter = _flaky_kernel(tmp_path, monkeypatch, failures=0)
    for n, cell in enumerate(("raise ValueError('no')", "import os\nos._exit(3)"), start=1):
        result = execute(_write_notebook(tmp_path / f"0{n}_x.ipynb", cell), tmp_path / f"out{n}.ipynb")
        assert not result.ok and "failed_kernel_starts" not in result.extra, result.error
        assert counter.read_text() == str(n), "one kernel per run"


def test_nbval_starts_its_kernels_through_the_retrying_start(monkeypatch):
    """nbval's RunningKernel calls nbval.kernel.start_new_kernel: tests/conftest.py wraps it."""
    import nbval.kernel
    assert getattr(nbval.kernel.start_new_kernel, "_retrying", False)
    calls = []

    def start(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "km", "kc"
    monkeypatch.setattr(notebooks, "KERNEL_START_PAUSE_S", 0.0)
    assert notebooks.retrying_kernel_start(start)(kernel_name="k") == ("km", "kc") and len(calls) == 2

    def broken(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("something else")
    calls.clear()
    with pytest.raises(RuntimeError, match="something else"):
        notebooks.retrying_kernel_start(broken)()
    assert len(calls) == 1, "only a kernel that failed to start is started again"


def test_a_kernel_that_dies_is_reported_and_the_next_notebook_runs(tmp_path, monkeypatch):
    """Real kernels; the user has a `python3` kernelspec of their own that must not be used."""
    user_data = tmp_path / "user-jupyter"
    (user_data / "kernels" / "python3").mkdir(parents=True)
    (user_data / "kernels" / "python3" / "kernel.json").write_text(json.dumps(
        {"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "someone else's Python", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(user_data))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")  # the user's folder first, as outside a venv
    dies = _write_notebook(tmp_path / "nbs" / "00_dies.ipynb", "import os\nos._exit(3)", "print('never')")
    fine = _write_notebook(tmp_path / "nbs" / "01_fine.ipynb", "import sys\nprint(sys.executable)")
    build = tmp_path / "build"
    rows = R.run_all([dies, fine], build, log=Console())
    assert [r["status"] for r in rows] == ["FAILED", "ok"]
    assert rows[0]["error"].startswith("DeadKernelError: the kernel died"), rows[0]["error"]
    assert rows[0]["failed_cell"] == 1, "the cell that was running when the kernel died"
    out = nbformat.read(build / "notebooks" / "01_fine.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for o in out.cells[1].outputs).strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve(), "the kernel ran another interpreter"
    assert (build / "html" / "00_dies.html").exists() and (build / "html" / "01_fine.html").exists()


def test_the_kernelspec_resolves_to_this_interpreter_whatever_the_user_has(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager
    user = tmp_path / "kernels" / "python3"
    user.mkdir(parents=True)
    (user / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/false", "{connection_file}"],
                                                  "display_name": "other", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == "/usr/bin/false", "the trap is set"
    with notebooks.venv_kernel() as name:
        assert KernelSpecManager().get_kernel_spec(name).argv[0] == sys.executable
    assert os.environ.get("JUPYTER_PATH", "") == "" or str(notebooks.kernelspec_dir()) not in os.environ.get(
        "JUPYTER_PATH", ""), "the search path is restored after the block"


def test_a_second_process_gets_the_clear_message(tmp_path):
    import subprocess
    build = tmp_path / "build"
    with R.build_lock(build.resolve()):
        proc = subprocess.run([sys.executable, "-m", "helpers.workbook.run_all", "00", "--build", str(build)],
                              capture_output=True, text=True, cwd=R.REPO_ROOT)
    assert proc.returncode == 3, proc.stderr
    assert f"another run is already writing {build.resolve()} (pid {os.getpid()}" in proc.stderr
    assert not build.exists() and not _leftovers(tmp_path)


def test_git_and_make_clean_know_the_leftover_folders():
    import fnmatch
    patterns = [l.strip().rstrip("/") for l in (R.REPO_ROOT / ".gitignore").read_text().splitlines() if l.strip()]
    for name in (".build-staging-123", ".build-old-123", ".build-lock"):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f".gitignore does not ignore {name}"
    clean = (R.REPO_ROOT / "Makefile").read_text().split("\nclean:")[1]
    assert "rm -rf build .build-*" in clean
