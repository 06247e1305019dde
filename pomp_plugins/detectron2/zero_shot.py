"""Detic's zero-shot box classifier, built on the core's ``TextEmbeddingClassifier``.

``logits = [T * cos(Linear(x), w_c) for each class c] ++ [background]  (+ bias)``, where the background logit is
0 (Detic) or ``T * cos(Linear(x), b)`` with a learned ``b``. The module replaces ``FastRCNNOutputLayers.cls_score``
and holds two sets of classes: the training vocabulary (used while ``self.training``) and the inference
vocabulary (used otherwise), which ``set_test_class_embeddings`` swaps without touching any trained weight.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pomp_plugins.prompt import TextEmbeddingClassifier

BACKGROUNDS = ("zero", "learned")


class ZeroShotBoxClassifier(nn.Module):
    """Region features ``[R, in_features]`` -> logits ``[R, C + 1]`` (last column: background)."""

    def __init__(
        self,
        in_features: int,
        class_embeddings: torch.Tensor,
        test_class_embeddings: Optional[torch.Tensor] = None,
        temperature: float = 50.0,
        background: str = "zero",
        bias: float = 0.0,
    ):
        """
        Args:
            in_features: size of a (flattened) region feature.
            class_embeddings: ``[C, D]`` text embeddings of the training classes, any norm.
            test_class_embeddings: ``[C', D]`` for inference; ``None`` = the training classes.
            temperature: multiplies the cosine similarities (Detic: 50).
            background: ``"zero"`` or ``"learned"``.
            bias: Detic's ``use_bias``: a value < 0 adds a learned scalar to every logit, initialised to it.
        """
        super().__init__()
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        dim = class_embeddings.shape[1]
        self.temperature = temperature
        self.linear = nn.Linear(in_features, dim)
        self.train_classes = TextEmbeddingClassifier(class_embeddings, temperature)
        self.test_classes = TextEmbeddingClassifier(class_embeddings, temperature)
        if test_class_embeddings is not None:
            self.set_test_class_embeddings(test_class_embeddings)  # checks D against the training classes
        self.background = nn.Parameter(torch.randn(dim) * dim**-0.5) if background == "learned" else None
        self.cls_bias = nn.Parameter(torch.full((1,), float(bias))) if bias < 0 else None

    @property
    def num_classes(self) -> int:
        """Number of training classes."""
        return self.train_classes.num_classes

    @property
    def num_test_classes(self) -> int:
        return self.test_classes.num_classes

    @property
    def dim(self) -> int:
        return self.train_classes.dim

    def set_test_class_embeddings(self, class_embeddings: torch.Tensor) -> None:
        """Use ``class_embeddings`` ``[C', D]`` as the inference classes (any ``C'``, the same ``D``)."""
        self.test_classes.set_class_embeddings(class_embeddings.to(self.linear.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[R, ...]`` region features -> ``[R, C + 1]`` logits in ``x``'s dtype."""
        x = self.linear(x.flatten(1))
        classes = self.train_classes if self.training else self.test_classes
        logits = classes(x)
        if self.background is None:
            background = logits.new_zeros(len(logits), 1)
        else:
            background = self.temperature * F.normalize(x, dim=1) @ F.normalize(self.background, dim=0).to(x.dtype)
            background = background[:, None]
        logits = torch.cat([logits, background], dim=1)
        return logits + self.cls_bias if self.cls_bias is not None else logits
