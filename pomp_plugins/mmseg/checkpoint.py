"""mmengine checkpoints under torch >= 2.6: let ``torch.load``'s default ``weights_only=True`` read them.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, and its checkpoints pickle more than tensors: the
message hub's ``HistoryBuffer`` (logged values as numpy arrays) and numpy scalars in the runtime info. torch then
refuses them ("Weights only load failed"), in mmseg's own ``tools/test.py``, ``--resume`` and ``load_from`` alike.

Importing this package (which every config of ours does through ``custom_imports``) adds exactly those types to
torch's allow-list (``torch.serialization.add_safe_globals``): ``HistoryBuffer``, what numpy needs to rebuild
numeric arrays and scalars, and, under the name ``builtins.getattr`` (a ``HistoryBuffer`` pickles its statistics
methods as ``getattr(HistoryBuffer, 'mean')``), a ``getattr`` that returns those methods and nothing else. The loader
stays ``weights_only``: anything else in a pickle is still refused.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_STATISTICS = ("min", "max", "current", "mean")


def history_buffer_statistic(owner: type, name: str):
    """``getattr`` for unpickling, limited to ``HistoryBuffer``'s statistics methods.

    Raises:
        pickle.UnpicklingError: any other attribute of any other object.
    """
    if owner is HistoryBuffer and (name in _STATISTICS or name in HistoryBuffer._statistics_methods):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"weights_only load: getattr({owner!r}, {name!r}) is not allowed (only "
        f"HistoryBuffer's statistics methods {_STATISTICS} are)"
    )


def _numpy_globals() -> list:
    """What unpickling a numeric numpy array or scalar calls: ``_reconstruct``, ``scalar``, ``ndarray``, ``dtype``
    and the dtype classes of booleans, integers and floats."""
    numpy_2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"
    multiarray = np._core.multiarray if numpy_2 else np.core.multiarray
    kinds = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *(type(np.dtype(k)) for k in kinds)]


CHECKPOINT_GLOBALS: tuple = (HistoryBuffer, *_numpy_globals(), (history_buffer_statistic, "builtins.getattr"))
torch.serialization.add_safe_globals(list(CHECKPOINT_GLOBALS))
