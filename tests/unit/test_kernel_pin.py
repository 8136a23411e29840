"""The ipykernel pin, and the widget-cell stall of plain papermill that the workbook's papermill engine removes.

1. requirements.txt pins ipykernel to the series that was checked: 7.0-7.3 send shell replies raw on
   the kernel's ROUTER socket, beside the ZMQStream that reads requests from it, and can leave a request
   unread (ipython/ipykernel#1554); 7.4 sends them through the stream (#1529). A bump of the pin fails
   here until someone has checked the new series and updated VERIFIED_SERIES.
2. The widget-cell stall of `python -m papermill` is on papermill's side, whatever the kernel: nbclient
   answers each output of a widget panel with a comm_msg on the shell channel, jupyter_client's
   Session.send sends it on a raw shadow of the asyncio socket, and that send can swallow the wake-up for
   the execute_reply that has just arrived. The reply then waits in the socket while both processes sit
   idle. Reproduced below without a kernel, deterministically and in about a second: a poll with no
   timeout never returns, while a timeout (the README's `--execution-timeout`) and the one-second polling
   of helpers/workbook/notebooks.py both read the reply.
3. That polling reaches plain `python -m papermill` through the engine the package registers
   (helpers/workbook/papermill_engine.py): papermill imports every registered engine when it starts.
"""
from __future__ import annotations

import asyncio
import inspect
import re
import time
from importlib.metadata import version

import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from helpers.workbook import notebooks
from helpers.workbook.notebooks import REPO_ROOT

VERIFIED_SERIES = "7.4"  # ipykernel series checked against #1554 and the widget-cell stall (7.4.0)
RAW_REPLY_RELEASES = ("7.0.0", "7.0.1", "7.1.0", "7.2.0", "7.3.0")  # send shell replies beside the stream


def ipykernel_pin() -> SpecifierSet:
    lines = [l.split("#")[0].strip() for l in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    pins = [l for l in lines if re.match(r"ipykernel\b", l)]
    assert len(pins) == 1, f"requirements.txt should name ipykernel once: {pins}"
    return SpecifierSet(pins[0][len("ipykernel"):].split(";")[0].strip())


def test_requirements_pin_the_verified_ipykernel_series():
    pin = ipykernel_pin()
    assert pin == SpecifierSet(f"~={VERIFIED_SERIES}"), (
        f"requirements.txt pins ipykernel {pin}, but {VERIFIED_SERIES} is the series that was checked: run a "
        "widget notebook through papermill and JupyterLab on the new series, then update VERIFIED_SERIES")
    allowed = [v for v in RAW_REPLY_RELEASES if pin.contains(v)]
    assert not allowed, f"the pin {pin} allows {allowed}, which can leave a shell request unread (ipykernel#1554)"


def test_the_installed_ipykernel_is_the_pinned_one():
    installed, pin = Version(version("ipykernel")), ipykernel_pin()
    assert pin.contains(installed), f"ipykernel {installed} is installed, requirements.txt pins {pin}: re-run make"
    assert installed.major == Version(VERIFIED_SERIES).major


def test_the_installed_kernel_sends_shell_replies_through_its_stream():
    from ipykernel.subshell_manager import SubshellManager
    source = inspect.getsource(SubshellManager._send_on_shell_channel)
    assert "_shell_stream.send_multipart" in source and "_shell_socket.send_multipart" not in source, source


async def _reply_after_swallowed_wakeup(timeout: float | None, wait: float) -> tuple[str | None, float]:
    """papermill's side of one cell: wait for the execute_reply on an asyncio DEALER while, just after the
    reply has reached the socket and before the event loop looks at it again, the client sends a comm_msg
    on the same channel (what nbclient's output-widget stand-in does for each output of a widget panel).
    Returns (the msg_type read, or None if nothing within `wait` s; seconds waited after the send)."""
    for delay in (0.2, 0.5, 1.0, 2.0):  # how long the reply gets to reach the client (longer on a busy machine)
        outcome = await _one_try(timeout, wait, delay)
        if outcome is not None:
            return outcome
    pytest.fail("the reply never reached the client socket within 2 s")


async def _one_try(timeout, wait, delay):
    kernel_ctx, ctx = zmq.Context(), zmq.asyncio.Context()
    kernel = kernel_ctx.socket(zmq.ROUTER)
    client = ctx.socket(zmq.DEALER)
    try:
        port = kernel.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        session = Session(key=b"test")
        shell = AsyncZMQSocketChannel(client, session)
        shell.send(session.msg("execute_request", {"code": "panel"}))
        ident = kernel.recv_multipart()[0]
        waiting = asyncio.ensure_future(shell.get_msg(timeout=timeout))  # nbclient: wait for the reply
        await asyncio.sleep(0.2)                                           # ... registered on the socket's fd
        session.send(kernel, "execute_reply", {"status": "ok"}, ident=[ident])
        time.sleep(delay)                            # the reply reaches the client while the loop is busy,
        shell.send(session.msg("comm_msg", {"data": {"method": "update"}}))  # then this send takes its wake-up
        if not zmq.Socket.shadow(client.underlying).get(zmq.EVENTS) & zmq.POLLIN:
            waiting.cancel()
            return None                              # the reply was not there yet: try again, waiting longer
        start = time.monotonic()
        done, _ = await asyncio.wait([waiting], timeout=wait)
        seconds = time.monotonic() - start
        if not done:
            waiting.cancel()
            return None, seconds
        return waiting.result()["msg_type"], seconds
    finally:
        client.close(linger=0)
        kernel.close(linger=0)
        ctx.term()
        kernel_ctx.term()


@pytest.fixture
def unsliced(monkeypatch):
    """jupyter_client's own get_msg, even where the workbook's slicing was installed earlier in this process
    (helpers.workbook.notebooks.execute, or importing papermill, installs it); restored afterwards."""
    current = AsyncZMQSocketChannel.get_msg
    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", getattr(current, "_original", current))


def test_a_send_on_the_shell_channel_can_strand_the_reply_of_a_poll_without_timeout(unsliced):
    # jupyter_client alone, no timeout: the reply sits in the socket and nothing wakes the wait
    msg_type, _ = _run(_reply_after_swallowed_wakeup(timeout=None, wait=2.0))
    assert msg_type is None, ("the reply was read without a timeout: jupyter_client/pyzmq no longer lose the "
                              "wake-up, so the README's paragraph on --execution-timeout can be revisited")


def test_the_readme_timeout_reads_the_stranded_reply(unsliced):
    # --execution-timeout T: when T runs out the poll looks at the socket again and finds the reply
    msg_type, seconds = _run(_reply_after_swallowed_wakeup(timeout=1.0, wait=5.0))
    assert msg_type == "execute_reply" and seconds < 2.0, (msg_type, seconds)


def test_make_runs_polling_reads_the_stranded_reply(unsliced):
    notebooks._patch_kernel_channel_polling()      # on jupyter_client's own get_msg (restored afterwards)
    msg_type, seconds = _run(_reply_after_swallowed_wakeup(timeout=None, wait=5.0))
    assert msg_type == "execute_reply" and seconds <= notebooks._POLL_SLICE_S + 1.0, (msg_type, seconds)


def _run(coroutine):
    """asyncio.run in a thread of its own: earlier tests of the session may leave an event loop running in
    this one (asyncio.run refuses to start inside it)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _papermill_commands(text: str) -> list[str]:
    return [l.strip() for l in text.splitlines() if re.match(r"\s*(\.venv/bin/)?python -m papermill ", l)]


def test_the_papermill_commands_of_the_readme_and_notebook_00_carry_a_timeout():
    readme = _papermill_commands((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    nb = nbformat.read(REPO_ROOT / "notebooks" / "00_start_here.ipynb", as_version=4)
    start_here = _papermill_commands("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    assert readme and start_here
    missing = [c for c in readme + start_here if not re.search(r"--execution-timeout \d+", c)]
    assert not missing, f"papermill commands without --execution-timeout (a widget cell can stall): {missing}"
    assert set(start_here) <= set(readme), "notebook 00 prints a papermill command the README does not"


def test_plain_papermill_waits_for_replies_in_slices():
    """In a fresh interpreter, importing papermill (as `python -m papermill` does) loads the workbook's engine,
    which slices jupyter_client's waits: the stall above cannot last more than a slice."""
    import subprocess
    import sys
    code = ("import papermill.engines as e; from jupyter_client.channels import AsyncZMQSocketChannel as C; "
            "print(sorted(k for k in e.papermill_engines._engines if k), getattr(C.get_msg, '_sliced', False))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("] ")[-1].strip() == "True" and "'workbook'" in out.stdout, out.stdout
