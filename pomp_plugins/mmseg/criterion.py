"""MaskFormer's set loss for semantic segmentation: Hungarian matching of queries to the classes present, then
class cross-entropy (void for unmatched queries) and mask BCE + dice on the matched pairs.

Ignored pixels (``ignore_index``, which includes unseen classes in zero-shot training) are left out of every
mask term, in matching and in the loss, so they contribute nothing at all.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


class SemanticTargets(NamedTuple):
    """One image's targets at mask resolution: ``classes`` ``[K]`` int64, ``masks`` ``[K, N]`` float over the
    ``N`` valid pixels, ``valid`` ``[H*W]`` bool."""

    classes: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor


def semantic_targets(label: torch.Tensor, ignore_index: int) -> SemanticTargets:
    """Split a label map ``[H, W]`` into one binary mask per class present (ignored pixels dropped)."""
    flat = label.reshape(-1)
    valid = flat != ignore_index
    flat = flat[valid]
    classes = flat.unique()
    return SemanticTargets(classes, (flat[None, :] == classes[:, None]).float(), valid)


def pairwise_mask_costs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean pixel BCE and dice loss of every prediction ``[Q, N]`` (logits) against every target ``[K, N]``."""
    n = max(logits.shape[1], 1)
    bce = (F.softplus(-logits) @ targets.t() + F.softplus(logits) @ (1 - targets).t()) / n
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.t() + 1) / (probs.sum(1)[:, None] + targets.sum(1)[None, :] + 1)
    return bce, dice


class MaskSetCriterion:
    """Matching costs and loss weights (MaskFormer's defaults: class 1, mask BCE 20, dice 1, void 0.1)."""

    def __init__(self, class_weight: float = 1.0, mask_weight: float = 20.0, dice_weight: float = 1.0,
                 void_weight: float = 0.1, ignore_index: int = 255):
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.void_weight, self.ignore_index = void_weight, ignore_index

    @torch.no_grad()
    def match(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
              targets: SemanticTargets) -> tuple[torch.Tensor, torch.Tensor]:
        """Query and target indices ``([K], [K])`` of the minimum-cost one-to-one assignment."""
        probs = class_logits.float().softmax(-1)[:, targets.classes]
        bce, dice = pairwise_mask_costs(mask_logits.float(), targets.masks)
        cost = -self.class_weight * probs + self.mask_weight * bce + self.dice_weight * dice
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        device = class_logits.device
        return torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)

    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                 labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of one decoder layer's predictions.

        Args:
            class_logits: ``[B, Q, C + 1]``, the last column is void; classes not trained on are ``-inf``.
            mask_logits: ``[B, Q, H, W]``.
            labels: ``[B, H, W]`` int64 class indices at mask resolution, ``ignore_index`` where ignored.

        Returns:
            ``loss_cls``, ``loss_mask`` and ``loss_dice`` (scalars).
        """
        batch, queries, num_outputs = class_logits.shape
        void = num_outputs - 1
        class_targets = torch.full((batch, queries), void, dtype=torch.long, device=class_logits.device)
        bce_sum = dice_sum = mask_logits.sum() * 0.0
        num_masks = 0
        for b in range(batch):
            targets = semantic_targets(labels[b], self.ignore_index)
            if len(targets.classes) == 0:
                continue
            logits = mask_logits[b].reshape(queries, -1)[:, targets.valid]
            query_idx, target_idx = self.match(class_logits[b], logits, targets)
            class_targets[b, query_idx] = targets.classes[target_idx]
            bce, dice = pairwise_mask_costs(logits[query_idx], targets.masks[target_idx])
            bce_sum, dice_sum = bce_sum + bce.diagonal().sum(), dice_sum + dice.diagonal().sum()
            num_masks += len(query_idx)
        weight = class_logits.new_ones(num_outputs, dtype=torch.float32)
        weight[void] = self.void_weight
        loss_cls = F.cross_entropy(class_logits.float().transpose(1, 2), class_targets, weight=weight)
        num_masks = max(num_masks, 1)
        return dict(loss_cls=self.class_weight * loss_cls, loss_mask=self.mask_weight * bce_sum / num_masks,
                    loss_dice=self.dice_weight * dice_sum / num_masks)
