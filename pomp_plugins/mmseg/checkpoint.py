"""Loading mmengine checkpoints under torch >= 2.6.

``torch.load`` now defaults to ``weights_only=True``, and mmengine 0.10.7 calls it without the argument, so its
own checkpoints (which pickle the message hub's ``HistoryBuffer`` and numpy values) fail to load with an
``UnpicklingError``. Inside :func:`trusted_local_checkpoints`, mmengine's loader for local files (the ``''``
scheme of ``CheckpointLoader``) unpickles fully instead. Only this repo's entry points (``tools/train.py``,
``tools/test.py``, ``tools/segment_demo.py``) enter it, around the runner: use them with checkpoints you trust,
i.e. your own, as with any pickle. Nothing changes at import time.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from typing import Iterator

import torch
from mmengine.runner.checkpoint import CheckpointLoader


def load_from_local_trusted(filename: str, map_location=None) -> dict:
    """mmengine's local-file loader with ``weights_only=False``."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(filename, map_location=map_location, weights_only=False)


@contextlib.contextmanager
def trusted_local_checkpoints() -> Iterator[None]:
    """Within the block, mmengine loads local checkpoint files with full unpickling; restored on exit."""
    previous = CheckpointLoader._schemes[""]
    CheckpointLoader.register_scheme("", load_from_local_trusted, force=True)
    try:
        yield
    finally:
        CheckpointLoader.register_scheme("", previous, force=True)
