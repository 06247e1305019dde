"""Toolkit-agnostic pieces of a zero-shot classifier: embedding files and cosine logits against class texts.

The detectron2 and mmseg adapters put a projection in front (Linear on region features, 1x1 conv on pixel
features) and use ``TextEmbeddingClassifier`` for the rest, so the logic lives here once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .embedder import DEFAULT_PRETRAINED, vocabulary_embeddings
from .vocabularies import Vocabulary


class EmbeddingFileError(ValueError):
    """An embedding file of the wrong shape or dimension, or one that disagrees with its vocabulary."""


def load_embedding_file(path: str | os.PathLike, dim: int | None = None) -> torch.Tensor:
    """Read a ``.npy`` (Detic's format: ``[C, D]``, usually float16, unnormalised) or a torch ``[C, D]`` tensor.

    Returns ``[C, D]`` float32 exactly as stored. Raises ``EmbeddingFileError`` if it is not 2-D or if ``dim`` is
    given and differs from ``D`` (both are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        weights = torch.from_numpy(np.load(path).astype(np.float32))
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True).float()
    if weights.ndim != 2:
        raise EmbeddingFileError(f"{path}: expected class embeddings of shape [C, D], found {tuple(weights.shape)}")
    if dim is not None and weights.shape[1] != dim:
        raise EmbeddingFileError(
            f"{path}: embeddings have dimension {weights.shape[1]}, but the classifier expects dimension {dim}"
        )
    return weights


def classifier_weights(
    vocabulary: Vocabulary | Sequence[str] | None = None,
    embedding_file: str | os.PathLike | None = None,
    prompt: str | os.PathLike | None = None,
    hard_prompt: str | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    dim: int | None = None,
    templates: str | Sequence[str] | None = None,
) -> torch.Tensor:
    """Class embeddings ``[C, D]`` float32 from an embedding file, or from a prompt (learned, hard or a template
    ensemble) over ``vocabulary``.

    An embedding file wins when given; if a vocabulary is given too, their class counts must agree.
    Raises ``EmbeddingFileError`` on a class-count or dimension mismatch, naming both numbers.
    """
    if embedding_file:
        weights = load_embedding_file(embedding_file, dim)
        if vocabulary is not None and len(vocabulary) != len(weights):
            raise EmbeddingFileError(
                f"{embedding_file} holds {len(weights)} classes but the vocabulary has {len(vocabulary)}"
            )
        return weights
    if vocabulary is None:
        raise ValueError("class embeddings need either an embedding file or a vocabulary")
    weights = vocabulary_embeddings(
        vocabulary,
        prompt=prompt,
        hard_prompt=hard_prompt,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        device=device,
        normalize=False,
        templates=templates,
    )
    if dim is not None and weights.shape[1] != dim:
        raise EmbeddingFileError(
            f"CLIP {clip_model} gives {weights.shape[1]}-d text embeddings, but the classifier expects dimension {dim}"
        )
    return weights


class TextEmbeddingClassifier(nn.Module):
    """Cosine-similarity logits against fixed class text embeddings.

    ``logits = temperature * normalize(features) @ normalize(class_embeddings).T (+ bias)``.

    The class embeddings are a non-persistent buffer: checkpoints do not pin a vocabulary, and
    ``set_class_embeddings`` swaps it at test time.
    """

    def __init__(self, class_embeddings: torch.Tensor, temperature: float = 50.0, bias: float | None = None):
        """``class_embeddings``: ``[C, D]``; ``bias``: initial value of a learned scalar logit bias, or ``None``."""
        super().__init__()
        self.temperature = temperature
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self.set_class_embeddings(class_embeddings, check_dim=False)
        self.bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    @property
    def num_classes(self) -> int:
        return self.class_embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.class_embeddings.shape[1]

    def set_class_embeddings(self, class_embeddings: torch.Tensor, check_dim: bool = True) -> None:
        """Replace the classes with ``class_embeddings`` ``[C', D]`` (any number of classes, same ``D``)."""
        if class_embeddings.ndim != 2:
            raise EmbeddingFileError(f"class embeddings must be [C, D], got {tuple(class_embeddings.shape)}")
        if check_dim and class_embeddings.shape[1] != self.dim:
            raise EmbeddingFileError(
                f"new class embeddings have dimension {class_embeddings.shape[1]}, the classifier has {self.dim}"
            )
        device = self.class_embeddings.device
        self.class_embeddings = F.normalize(class_embeddings.detach().float(), dim=-1).to(device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features``: ``[..., D]`` -> logits ``[..., C]`` in the features' dtype."""
        weights = self.class_embeddings.to(features.dtype)
        logits = self.temperature * F.normalize(features, dim=-1) @ weights.t()
        return logits + self.bias if self.bias is not None else logits
