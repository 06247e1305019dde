"""On-disk cache of class embeddings, keyed by everything they depend on.

The key hashes, never file names: the prompt's exact ``ctx`` values; a fingerprint of the frozen text tower's
weights (values and dtype, so the model, its weights and its precision); the tower's architecture as its module
tree prints it (so the activation, QuickGELU or GELU, and any other structural choice); the token ids the prompt
template gives a probe name (so the template, ``n_ctx`` and the context length); and the class names in order.
Entries hold unnormalised float32 embeddings (normalising happens after reading), as ``.npy`` files written
atomically; the default folder is ``$POMP_CACHE_DIR`` or ``~/.cache/pomp_plugins/embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .text_encoder import PromptedTextEncoder

CACHE_FORMAT = 2  # 2: the key covers the architecture (activation) and the template


def default_cache_dir() -> Path:
    return Path(os.environ.get("POMP_CACHE_DIR", Path.home() / ".cache" / "pomp_plugins" / "embeddings"))


def tensor_fingerprint(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers that changes whenever the weights do in practice.

    Hashes every tensor's name, shape, dtype, sum and 1,024 evenly spaced values: cheap (milliseconds for a
    ViT-L text tower on any device) and different for any two trained or randomly initialised models.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        count = min(flat.numel(), 1024)
        picks = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{flat.double().sum().item():.12e}".encode())
        digest.update(flat[picks].double().cpu().numpy().tobytes())
    return digest.hexdigest()


def encoder_fingerprint(encoder: PromptedTextEncoder) -> str:
    """Content hash of a prompted encoder: its exact ``ctx`` values, its text tower's weights and architecture
    (``repr`` lists every module with its settings, e.g. ``QuickGELU()`` or ``GELU(approximate='none')``), and the
    token layout its template gives a probe name."""
    ctx = encoder.ctx.detach().float().cpu().contiguous().numpy()
    layout = encoder.tokenize(["{name}"], device="cpu").ids.tolist()
    parts = [ctx.tobytes(), str(ctx.shape), tensor_fingerprint(encoder.tower), repr(encoder.tower), str(layout)]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class EmbeddingCache:
    """A folder of ``<key>.npy`` files, each ``[C, D]`` float32 unnormalised class embeddings."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def key(self, encoder: PromptedTextEncoder, names: Sequence[str]) -> str:
        """The entry name for ``names`` through ``encoder`` (see the module docstring for what it covers)."""
        payload = {
            "format": CACHE_FORMAT,
            "stored": "unnormalised float32",
            "encoder": encoder_fingerprint(encoder),
            "names": list(names),
        }
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]

    def get_or_compute(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached ``[C, D]`` float32 tensor (on CPU) for ``key``, computed and stored on a miss."""
        path = self.root / f"{key}.npy"
        if path.is_file():
            try:
                return torch.from_numpy(np.load(path))
            except (ValueError, OSError):
                pass  # an unreadable entry is recomputed and overwritten
        features = compute().detach().float().cpu()
        atomic_write(path, lambda f: np.save(f, features.numpy()))
        return features

    def encode(
        self, encoder: PromptedTextEncoder, names: Sequence[str], batch_size: int = 4096, progress: bool = False
    ) -> torch.Tensor:
        """:func:`raw_embeddings` of ``names``, read from this cache when an entry exists, else computed and stored."""
        return self.get_or_compute(
            self.key(encoder, names), lambda: raw_embeddings(encoder, names, batch_size, progress)
        )


def raw_embeddings(
    encoder: PromptedTextEncoder, names: Sequence[str], batch_size: int = 4096, progress: bool = False
) -> torch.Tensor:
    """Unnormalised ``[len(names), D]`` float32 on CPU: ``encoder``'s embeddings of ``names``, without gradient."""
    with torch.no_grad():
        return encoder.encode_names(names, batch_size=batch_size, normalize=False, progress=progress).float().cpu()
