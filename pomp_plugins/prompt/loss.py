"""POMP's loss: local contrast over K sampled classes with the local correction margin.

Per step (and per process), K-1 negative classes are drawn uniformly without replacement from all N classes and
shared by the batch. Image i is scored against its own class and those negatives::

    logits_i = [s * cos(x_i, t_{y_i}),  s * cos(x_i, t_j) + m_i  for each sampled negative j]

where ``s`` is CLIP's frozen logit scale, a negative equal to ``y_i`` is masked out, and
``m_i = log_b((N - 1) / (K - 1 - r_i))`` with ``r_i`` the number of sampled negatives equal to ``y_i`` (0 or 1).
The paper writes the natural log; the reference code, and the released numbers, use base 10 (m = 1.02 at
K = 1000, N = 10,450), hence ``log_base=10`` by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .device import to_device


@dataclass
class LocalContrastPlan:
    """Which class prompts one step encodes and how logits index into them.

    ``classes``: ``[U]`` distinct class ids to encode (the batch's labels and the sampled negatives), sorted.
    ``labels``: ``[B]`` class id of each image. ``negatives``: ``[K-1]`` sampled class ids.
    ``positive_index``: ``[B]`` and ``negative_index``: ``[K-1]`` positions of those ids within ``classes``.
    """

    classes: torch.Tensor
    labels: torch.Tensor
    negatives: torch.Tensor
    positive_index: torch.Tensor
    negative_index: torch.Tensor

    def to(self, device: torch.device | str) -> LocalContrastPlan:
        """The plan on ``device`` (from the CPU to CUDA without waiting for the GPU)."""
        return LocalContrastPlan(*(to_device(getattr(self, f.name), device) for f in fields(self)))


def sample_negatives(num_classes: int, num_sampled: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[K-1]`` int64 class ids drawn uniformly without replacement from ``range(num_classes)``,
    ``K = num_sampled``."""
    if not 2 <= num_sampled <= num_classes:
        raise ValueError(
            f"num_sampled (K) must be between 2 and the number of classes {num_classes}, got {num_sampled}"
        )
    return torch.randperm(num_classes, generator=generator)[: num_sampled - 1]


def plan_local_contrast(labels: torch.Tensor, negatives: torch.Tensor) -> LocalContrastPlan:
    """Group the batch's labels ``[B]`` and the negatives ``[K-1]`` so each distinct class is encoded once."""
    classes, inverse = torch.unique(torch.cat([labels, negatives]), return_inverse=True)
    return LocalContrastPlan(classes, labels, negatives, inverse[: len(labels)], inverse[len(labels) :])


def correction_margin(
    num_classes: int, num_sampled: int, positive_hits: torch.Tensor, log_base: float = 10.0
) -> torch.Tensor:
    """``m_i = log_b((N-1) / (K-1-r_i))`` for ``r_i`` = ``positive_hits`` ``[B]``; float32 ``[B]``."""
    remaining = (num_sampled - 1 - positive_hits).clamp(min=1).float()
    return torch.log((num_classes - 1) / remaining) / math.log(log_base)


def pomp_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    plan: LocalContrastPlan,
    logit_scale: float,
    num_classes: int,
    log_base: float | None = 10.0,
) -> torch.Tensor:
    """Mean cross-entropy of the local-contrast logits (scalar float32).

    Args:
        image_features: ``[B, D]`` L2-normalised image features.
        text_features: ``[U, D]`` L2-normalised features of ``plan.classes``.
        plan: from ``plan_local_contrast``.
        logit_scale: CLIP's temperature (exp'ed, about 100).
        num_classes: N, the size of the whole vocabulary.
        log_base: base of the correction margin's log; ``None`` turns the correction off.
    """
    similarity = logit_scale * image_features.float() @ text_features.float().t()  # [B, U]
    positive = similarity.gather(1, plan.positive_index[:, None])  # [B, 1]
    negative = similarity.index_select(1, plan.negative_index)  # [B, K-1]
    is_own_class = plan.negatives[None, :] == plan.labels[:, None]  # [B, K-1]
    if log_base is not None:
        num_sampled = len(plan.negatives) + 1
        negative = negative + correction_margin(num_classes, num_sampled, is_own_class.sum(1), log_base)[:, None]
    negative = negative.masked_fill(is_own_class, float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
