"""``torch.load`` for checkpoints from elsewhere, without ever running code from the file.

A pickle names the functions and classes that rebuild its objects, and a plain unpickler calls them: a
checkpoint can run any code. ``torch.load(weights_only=True)`` refuses such files outright, which also refuses
the reference POMP checkpoints: Dassl saves ``scheduler.state_dict()``, and its ``ConstantWarmupScheduler`` keeps
its ``successor`` (a ``CosineAnnealingLR`` *object*, with the optimizer inside) in that dict.

``safe_torch_load`` reads such files with an unpickler whose only callables are an explicit allow-list (tensor
rebuilding, containers, primitive types, dtypes). Every other global becomes an :class:`Opaque` placeholder
class: "calling" it (pickle's REDUCE/NEWOBJ) or restoring its state only records the arguments, so nothing named
by the file ever runs, and the parts we need (tensors, dicts) load as usual.
"""

from __future__ import annotations

import builtins
import collections
import os
import pickle
from typing import Any

import torch

# (module, name) -> the object pickle may use. Each is a type or function that only builds data from data.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    **{
        ("builtins", name): getattr(builtins, name)
        for name in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "int",
            "float",
            "complex",
            "bool",
            "str",
            "bytes",
            "bytearray",
            "slice",
            "range",
        )
    },
}


class Opaque:
    """An object of a class the safe loader does not run: what the file held, kept as inert data.

    ``args`` (constructor arguments), ``state`` (``__setstate__``/``__dict__`` data), ``items`` (appended or
    set entries). ``global_name`` says which class or function the file named.
    """

    global_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


def _placeholder(module: str, name: str) -> type:
    return type(name, (Opaque,), {"global_name": f"{module}.{name}", "__module__": __name__})


def _dtype(module: str, name: str) -> Any:
    """``torch.float16`` and friends are pickled as globals of the ``torch`` module."""
    if module == "torch":
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            return value
    return None


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals from ``_ALLOWED`` (or torch dtypes) and stubs everything else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        dtype = _dtype(module, name)
        return dtype if dtype is not None else _placeholder(module, name)


class _SafePickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and a ``load`` function."""

    Unpickler = SafeUnpickler
    __name__ = "pomp_plugins.prompt.safe_load"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return SafeUnpickler(file, **kwargs).load()


def safe_torch_load(path: str | os.PathLike) -> Any:
    """The object in a ``torch.save`` file, on the CPU, with unknown classes replaced by :class:`Opaque` data.

    Tensors come back as tensors (detach and clone any you keep: a file may attach hooks to them). Errors of a
    corrupt or truncated file propagate as they are raised by ``torch.load`` and ``pickle``.
    """
    return torch.load(path, map_location="cpu", pickle_module=_SafePickleModule, weights_only=False)
