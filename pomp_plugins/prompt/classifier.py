"""The toolkit-agnostic zero-shot classifier: cosine logits against class text embeddings.

The mmseg adapter puts a projection in front (1x1 conv on pixel features, ZSSeg's MLP on queries) and uses
``TextEmbeddingClassifier`` for the rest; Detic's box classifier keeps Detic's own parameter layout (``zs_weight``
with a zero background column) and shares the formula, :func:`cosine_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embedder import EmbeddingFileError


def cosine_logits(features: torch.Tensor, unit_embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """``temperature * cos``: features ``[..., D]`` against L2-normalised rows ``[C, D]`` -> ``[..., C]`` in the
    features' dtype. The one formula of every text classifier here (a void/background row is just another row)."""
    return temperature * F.normalize(features, dim=-1) @ unit_embeddings.to(features.dtype).t()


class TextEmbeddingClassifier(nn.Module):
    """Cosine-similarity logits against fixed class text embeddings.

    ``logits = temperature * normalize(features) @ normalize(class_embeddings).T`` (:func:`cosine_logits`).

    The class embeddings are a non-persistent buffer: checkpoints do not pin a vocabulary, and
    ``set_class_embeddings`` swaps it at test time.
    """

    def __init__(self, class_embeddings: torch.Tensor, temperature: float = 50.0):
        """``class_embeddings``: ``[C, D]``, any norm."""
        super().__init__()
        self.temperature = temperature
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self.set_class_embeddings(class_embeddings, check_dim=False)

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
        return cosine_logits(features, self.class_embeddings, self.temperature)
