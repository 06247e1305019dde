"""``PompRCNN``: detectron2's ``GeneralizedRCNN`` that also trains on image-labelled images (Detic)."""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes, ImageList, Instances

from .config import PompConfigError


def _subset(images: ImageList, features: dict[str, torch.Tensor], index: list[int]):
    """The images ``index`` of a batch and their features."""
    if len(index) == len(images):
        return images, features
    rows = torch.as_tensor(index, device=images.tensor.device)
    return (ImageList(images.tensor[rows], [images.image_sizes[i] for i in index]),
            {name: feature[rows] for name, feature in features.items()})


@META_ARCH_REGISTRY.register()
class PompRCNN(GeneralizedRCNN):
    """Inference is ``GeneralizedRCNN``'s. In training with ``MODEL.POMP.WITH_IMAGE_LABELS``, a batch may hold
    box-annotated images and image-labelled ones (Detic's inputs: ``ann_type`` "image", ``pos_category_ids`` a list
    of class indices): each kind gets its own losses, normalised over the images of that kind, and the result has
    the same keys whatever the batch holds (the losses a kind does not have are zeros that still reach every
    parameter, so DDP needs no ``find_unused_parameters``)."""

    @configurable
    def __init__(self, *, with_image_labels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.with_image_labels = with_image_labels
        if with_image_labels:
            if not hasattr(self.roi_heads, "image_label_losses"):
                raise PompConfigError("MODEL.POMP.WITH_IMAGE_LABELS needs MODEL.ROI_HEADS.NAME PompCascadeROIHeads "
                                      f"or PompStandardROIHeads, not {type(self.roi_heads).__name__}")
            if self.proposal_generator is None or self.roi_heads.keypoint_on:
                raise PompConfigError("MODEL.POMP.WITH_IMAGE_LABELS needs an RPN and no keypoint head")

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["with_image_labels"] = cfg.MODEL.POMP.WITH_IMAGE_LABELS
        return ret

    def forward(self, batched_inputs: list[dict]):
        labelled = [x.get("ann_type", "box") != "box" for x in batched_inputs]
        if not self.training or not any(labelled):
            return super().forward(batched_inputs)
        if not self.with_image_labels:
            raise PompConfigError("a training batch holds image-labelled images but MODEL.POMP.WITH_IMAGE_LABELS "
                                  "is False")

        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        losses: dict[str, torch.Tensor] = {}
        for kind, kind_losses in ((False, self._box_losses), (True, self._image_label_losses)):
            index = [i for i, is_labelled in enumerate(labelled) if is_labelled == kind]
            if index:
                for name, value in kind_losses(batched_inputs, images, features, index).items():
                    losses[name] = losses[name] + value if name in losses else value
        return losses

    def _box_losses(self, batched_inputs, images, features, index):
        images, features = _subset(images, features, index)
        targets = [batched_inputs[i]["instances"].to(self.device) for i in index]
        proposals, proposal_losses = self.proposal_generator(images, features, targets)
        _, detector_losses = self.roi_heads(images, features, proposals, targets)
        return {**detector_losses, **proposal_losses}

    def _image_label_losses(self, batched_inputs, images, features, index):
        images, features = _subset(images, features, index)
        # The RPN runs as in training (training proposal counts); its losses against "no objects" are zeroed.
        no_boxes = [Instances(size, gt_boxes=Boxes(torch.zeros(0, 4, device=self.device)),
                              gt_classes=torch.zeros(0, dtype=torch.long, device=self.device))
                    for size in images.image_sizes]
        proposals, proposal_losses = self.proposal_generator(images, features, no_boxes)
        labels = [torch.as_tensor(batched_inputs[i]["pos_category_ids"], dtype=torch.long, device=self.device)
                  for i in index]
        losses = self.roi_heads.image_label_losses(features, proposals, labels)
        losses.update({name: value * 0.0 for name, value in proposal_losses.items()})
        return losses
