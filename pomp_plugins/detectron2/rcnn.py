"""``PompRCNN``: Detic's ``CustomRCNN`` (image-labelled training, FP16 backbone, per-dataset loss weights).

Training inputs are Detic's: every dict has ``instances`` (empty for an image-labelled image); with
``WITH_IMAGE_LABELS`` also ``ann_type`` (``"box"`` or ``"image"``, one kind per batch) and ``pos_category_ids``
(contiguous class indices of the image's labels); with ``MODEL.DATASET_LOSS_WEIGHT``, ``dataset_source``.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from .config import PompConfigError


@META_ARCH_REGISTRY.register()
class PompRCNN(GeneralizedRCNN):
    """Inference is ``GeneralizedRCNN``'s. In training, an image-labelled batch gets the ROI heads' image-label
    losses and the proposal losses times 0 (Detic's ``ignore proposal loss for non-bbox data``)."""

    @configurable
    def __init__(self, *, with_image_labels: bool = False, dataset_loss_weight=(), fp16: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.with_image_labels = with_image_labels
        self.dataset_loss_weight = list(dataset_loss_weight)
        self.fp16 = fp16
        if self.proposal_generator is None:
            raise PompConfigError("PompRCNN needs a proposal generator (MODEL.PROPOSAL_GENERATOR.NAME)")
        if with_image_labels and not hasattr(self.roi_heads, "get_top_proposals"):
            raise PompConfigError(
                "WITH_IMAGE_LABELS needs MODEL.ROI_HEADS.NAME PompCascadeROIHeads, "
                f"PompRes5ROIHeads or PompStandardROIHeads, not {type(self.roi_heads).__name__}"
            )

    @classmethod
    def from_config(cls, cfg):
        return {
            **super().from_config(cfg),
            "with_image_labels": cfg.WITH_IMAGE_LABELS,
            "dataset_loss_weight": cfg.MODEL.DATASET_LOSS_WEIGHT,
            "fp16": cfg.FP16,
        }

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        ann_type = "box"
        if self.with_image_labels:
            for inst, x in zip(gt_instances, batched_inputs):
                inst._ann_type = x["ann_type"]
                inst._pos_category_ids = x["pos_category_ids"]
            ann_types = {x["ann_type"] for x in batched_inputs}
            if len(ann_types) != 1:
                raise ValueError(
                    f"a training batch mixes annotation types {sorted(ann_types)}; Detic's loader "
                    "groups images by dataset (DATALOADER.MULTI_DATASET_GROUPING)"
                )
            ann_type = ann_types.pop()
            if ann_type not in ("box", "image"):
                raise PompConfigError(f"ann_type {ann_type!r} is not implemented (only 'box' and 'image')")
        if self.fp16 and images.tensor.is_cuda:
            with torch.autocast("cuda"):
                features = self.backbone(images.tensor.half())
            features = {k: v.float() for k, v in features.items()}
        else:
            features = self.backbone(images.tensor)

        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        if hasattr(self.roi_heads, "get_top_proposals"):
            _, detector_losses = self.roi_heads(images, features, proposals, gt_instances, ann_type=ann_type)
        else:
            _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0:
            if get_event_storage().iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, proposals)

        losses = dict(detector_losses)
        if ann_type == "box":
            losses.update(proposal_losses)
        else:
            losses.update({k: v * 0 for k, v in proposal_losses.items()})
        if self.dataset_loss_weight:
            sources = {x["dataset_source"] for x in batched_inputs}
            if len(sources) != 1:
                raise ValueError("MODEL.DATASET_LOSS_WEIGHT needs every batch from one dataset")
            weight = self.dataset_loss_weight[sources.pop()]
            losses = {k: v * weight for k, v in losses.items()}
        return losses
