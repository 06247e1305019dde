"""Zero-shot accuracy of image batches against class embeddings: top-1, top-5 and mean per-class accuracy."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from ..prompt.clip import LoadedClip
from .features import image_features
from .folder import Batch


class AccuracyCounts:
    """Per-class counts of top-1 hits, top-5 hits and images, as int64 ``[C]`` tensors (summable across ranks)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.counts = torch.zeros(3, num_classes, dtype=torch.long, device=device)  # top-1, top-5, total

    @property
    def num_classes(self) -> int:
        return self.counts.shape[1]

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``logits``: ``[N, C]``; ``labels``: ``[N]`` int64, on the counts' device."""
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        self.counts[0].index_add_(0, labels, hits[:, 0].long())
        self.counts[1].index_add_(0, labels, hits.any(dim=1).long())
        self.counts[2].index_add_(0, labels, torch.ones_like(labels))

    @property
    def images(self) -> int:
        return int(self.counts[2].sum())

    def per_class(self) -> torch.Tensor:
        """Top-1 accuracy of each class ``[C]`` float64, NaN for a class without images."""
        return self.counts[0].double() / self.counts[2].double()

    def summary(self) -> dict:
        """Top-1, top-5 and mean per-class accuracy in percent, and the counts behind them."""
        total = max(self.images, 1)
        per_class = self.per_class()
        evaluated = ~per_class.isnan()
        return {
            "top1": 100.0 * int(self.counts[0].sum()) / total,
            "top5": 100.0 * int(self.counts[1].sum()) / total,
            "mean_per_class": 100.0 * float(per_class[evaluated].mean()) if evaluated.any() else 0.0,
            "images": self.images,
            "classes": self.num_classes,
            "classes_with_images": int(evaluated.sum()),
        }


def evaluate(
    clip: LoadedClip,
    text_features: torch.Tensor,
    batches: Iterable[Batch],
    progress: bool = False,
    total: int | None = None,
) -> tuple[AccuracyCounts, list[str]]:
    """Classify every image of ``batches`` (CLIP-preprocessed) against ``text_features`` ``[C, D]`` (normalised).

    Returns the accuracy counts and the paths of the images that could not be read.
    """
    device = text_features.device
    counts, skipped = AccuracyCounts(len(text_features), device), []
    for batch in tqdm(batches, desc="evaluating", unit="batch", total=total, disable=not progress):
        skipped += batch.skipped
        if len(batch):
            features = image_features(clip.model, batch.data.to(device, non_blocking=True))
            counts.update(features @ text_features.t(), batch.labels.to(device))
    return counts, skipped
