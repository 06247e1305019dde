"""Training checkpoints: ``ctx``, optimiser and schedule state, position in the run, and every RNG state.

Written with the core's ``atomic_save`` (temporary file + fsync + rename), so a crash while writing leaves the
previous checkpoint whole. Only ``ctx`` and small state are stored, never the frozen CLIP (a few KB at n_ctx 4).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..prompt.atomic import atomic_save
from .config import PretrainError

FORMAT = "pomp-pretrain-checkpoint"
VERSION = 1


class CheckpointError(PretrainError):
    """A file that is not a pre-training checkpoint."""


def rng_state() -> dict:
    """The states of Python's, numpy's and torch's global generators (CPU and CUDA), as plain data and tensors."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically, tagged with the format."""
    atomic_save({"format": FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by ``save_checkpoint`` (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a POMP pre-training checkpoint (format {FORMAT!r}, as written to "
            "OUTPUT/checkpoints/last.pt)"
        )
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than {VERSION}")
    return state
