"""What the detectron2 tools report as a user's mistake (one ``error:`` line, exit status 2) instead of a trace."""

from __future__ import annotations

from functools import partial

from pomp_plugins.prompt.cli import run_tool as run_core_tool

from .config import PompConfigError
from .data import DatasetFormatError

#: The core's ``run_tool`` with the detectron2 plugin's configuration and dataset errors added.
run_tool = partial(run_core_tool, extra_errors=(PompConfigError, DatasetFormatError))
