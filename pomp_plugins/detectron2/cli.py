"""What the detectron2 tools report as a user's mistake (one ``error:`` line, exit status 2) instead of a trace."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from pomp_plugins.prompt import EmbeddingFileError
from pomp_plugins.prompt.cli import USER_ERRORS as CORE_USER_ERRORS

from .config import PompConfigError
from .data import DatasetFormatError

USER_ERRORS = CORE_USER_ERRORS + (PompConfigError, EmbeddingFileError, DatasetFormatError)


def run_tool(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """The core's ``run_tool`` with the detectron2 plugin's errors added."""
    try:
        return main(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
