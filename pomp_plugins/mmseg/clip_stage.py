"""ZSSeg's optional second stage: classify each mask proposal's region with the CLIP image encoder, then ensemble
with the head's class probabilities geometrically.

Regions are taken as ZSSeg's ``MaskFormerClipAdapter`` takes them: the proposal's mask probabilities at the image's
resolution are thresholded (``> mask_threshold``); the image is cropped to the mask's tight box, pixels outside the
mask are set to CLIP's mean colour (0 after CLIP's normalisation), and the normalised crop is resized bicubically to
CLIP's input size. CLIP's logits are ``temperature * cos(region, text)`` with ZSSeg's fixed temperature 100.

For class ``c`` with CLIP weight ``w_c``: ``p = p_head ** (1 - w_c) * p_clip ** w_c``, where ``w_c = weight`` for
classes not trained on and ``1 - weight`` for seen ones, as in ZSSeg. Without a split every class counts as unseen.
Proposals whose mask is empty keep ``p_clip = 1``.

The CLIP is frozen and loaded from its weights when the head is built; it is kept out of the module tree, so it
never enters a checkpoint, and it follows the images to their device on first use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pomp_plugins.prompt import LoadedClip, cosine_logits


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``[Q, 4]`` int64 (x0, y0, x1, y1; x1/y1 exclusive) of boolean masks ``[Q, H, W]``.

    An empty mask gets the box ``(0, 0, W, H)``.
    """
    height, width = masks.shape[-2:]
    rows, cols = masks.any(2), masks.any(1)
    y0 = rows.float().argmax(1)
    y1 = height - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = width - cols.flip(1).float().argmax(1)
    empty = ~rows.any(1)
    boxes = torch.stack((x0, y0, x1, y1), dim=1).long()
    boxes[empty] = torch.tensor([0, 0, width, height], device=masks.device)
    return boxes


def geometric_ensemble(
    head_probs: torch.Tensor, clip_probs: torch.Tensor, valid: torch.Tensor, seen: torch.Tensor, weight: float
) -> torch.Tensor:
    """``head_probs``, ``clip_probs``: ``[..., Q, C]``; ``valid``: ``[..., Q]``; ``seen``: ``[C]`` bool."""
    clip_probs = torch.where(valid[..., None], clip_probs, torch.ones_like(clip_probs))
    clip_weight = torch.where(seen, 1.0 - weight, weight).to(head_probs.dtype)
    return head_probs.pow(1 - clip_weight) * clip_probs.pow(clip_weight)


class CLIPProposalClassifier:
    """Scores masked image regions against class text embeddings with CLIP's image tower.

    Args:
        clip: the CLIP whose text tower made the class embeddings.
        weight: ZSSeg's ensemble weight (CLIP's exponent for unseen classes): 0.8 COCO-Stuff, 0.7 VOC, 0.5 ADE-150...
        mask_threshold: a proposal's region is where its mask probability exceeds this (ZSSeg's ``MASK_THR``).
        temperature: the cosine logit scale of the regions (ZSSeg: 100).
    """

    def __init__(self, clip: LoadedClip, weight: float = 0.8, mask_threshold: float = 0.5, temperature: float = 100.0):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"clip_stage weight must be in [0, 1], got {weight}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"clip_stage mask_threshold must be in (0, 1), got {mask_threshold}")
        self.clip, self.weight, self.mask_threshold, self.temperature = clip, weight, mask_threshold, temperature

    @property
    def embed_dim(self) -> int:
        return self.clip.model.visual.output_dim

    def _follow(self, device: torch.device) -> None:
        if next(self.clip.model.parameters()).device != device:
            self.clip.model.to(device)

    def regions(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """CLIP inputs ``[K, 3, S, S]`` of the ``K`` non-empty boolean ``masks`` ``[K, H, W]`` in ``image``
        ``[3, H, W]`` (RGB 0..255): crop to the mask's box, normalise, zero outside the mask, bicubic resize."""
        size = self.clip.image_size
        normalized = self.clip.normalize_pixels(image)
        crops = []
        for (x0, y0, x1, y1), mask in zip(mask_boxes(masks).tolist(), masks):
            region = normalized[:, y0:y1, x0:x1] * mask[y0:y1, x0:x1]
            crops.append(F.interpolate(region[None], size=(size, size), mode="bicubic", align_corners=False))
        return torch.cat(crops)

    @torch.no_grad()
    def region_probs(
        self, image: torch.Tensor, mask_probs: torch.Tensor, class_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's class probabilities of each proposal's region in one image.

        Args:
            image: ``[3, H, W]`` RGB in 0..255, as the network saw it (resized, unpadded).
            mask_probs: ``[Q, H, W]`` proposal mask probabilities at the image's resolution.
            class_embeddings: ``[C, D]`` L2-normalised text embeddings from this CLIP.

        Returns:
            ``probs`` ``[Q, C]`` float32 (softmax over classes; rows of empty proposals are 1) and ``valid`` ``[Q]``
            bool (the proposal's thresholded mask is not empty).
        """
        self._follow(image.device)
        masks = mask_probs > self.mask_threshold
        valid = masks.flatten(1).any(1)
        probs = torch.ones(len(masks), len(class_embeddings), device=image.device)
        if valid.any():
            dtype = next(self.clip.model.parameters()).dtype
            features = self.clip.model.encode_image(self.regions(image, masks[valid]).to(dtype)).float()
            logits = cosine_logits(features, class_embeddings.float(), self.temperature)
            probs[valid] = logits.softmax(-1)
        return probs, valid

    def ensemble(
        self,
        head_probs: torch.Tensor,
        image: torch.Tensor,
        mask_probs: torch.Tensor,
        class_embeddings: torch.Tensor,
        seen: torch.Tensor,
    ) -> torch.Tensor:
        """One image's ``[Q, C]`` head probabilities ensembled with CLIP's; ``seen``: ``[C]`` bool (see the module
        docstring)."""
        clip_probs, valid = self.region_probs(image, mask_probs, class_embeddings)
        return geometric_ensemble(head_probs, clip_probs.to(head_probs.dtype), valid, seen, self.weight)
