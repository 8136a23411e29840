"""A papermill engine that cannot wait forever on a widget cell, and the reason it is loaded everywhere.

`python -m papermill` can, now and then, wait forever after a cell with widgets, both processes idle:
papermill answers each output of a widget panel with a message on the shell channel, jupyter_client
sends it past the socket's event handling, and when that send falls just as the cell's reply arrives the
wake-up for the reply is lost (nbclient#312; with ipykernel 7.4 and 6.31 alike: tests/unit/test_kernel_pin.py).
helpers.workbook.notebooks.execute, and so `make run`, the sweep and the tests, waits for replies in
one-second slices, which finds a stranded reply within a second.

This module brings the same slicing to plain `python -m papermill`: the package registers it as the
papermill engine "workbook" (pyproject.toml, entry point group papermill.engine), and papermill imports
every registered engine when it starts, so importing this module patches the channel for the default
engine too. `--engine workbook` names it explicitly.
"""
from __future__ import annotations

from papermill.engines import NBClientEngine

from .notebooks import _patch_kernel_channel_polling

_patch_kernel_channel_polling()


class PollingEngine(NBClientEngine):
    """papermill's nbclient engine, with jupyter_client's shell replies awaited in one-second slices."""
