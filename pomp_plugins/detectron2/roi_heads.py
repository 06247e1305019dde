"""ROI heads with the zero-shot box predictor: a Detic-style cascade and a standard one.

Both are detectron2's own heads (``CascadeROIHeads``, ``StandardROIHeads``) whose box predictors are replaced by
``ZeroShotFastRCNNOutputLayers`` (Detic's way: override ``_init_box_head``). They add what Detic needs on top:
the inference-vocabulary swap over every stage, and the image-label losses of image-labelled images.
"""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads, StandardROIHeads
from detectron2.structures import Instances
from torch import nn

from .config import PompConfigError, without_federated_loss
from .fast_rcnn import ZeroShotFastRCNNOutputLayers
from .vocabulary import config_embeddings


def zero_loss(module: nn.Module) -> torch.Tensor:
    """0 connected to every trainable parameter of ``module``, so DDP sees them used in a batch that skips it."""
    params = [p.sum() for p in module.parameters() if p.requires_grad]
    return torch.stack(params).sum() * 0.0 if params else torch.zeros(())


class ZeroShotROIHeadsMixin:
    """The vocabulary swap and the image-label losses, over one box predictor or a cascade of them."""

    @configurable
    def __init__(self, *, image_label_num_proposals: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.image_label_num_proposals = image_label_num_proposals
        if self.num_test_classes != self.num_classes:
            self._check_class_agnostic(self.num_test_classes)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["image_label_num_proposals"] = cfg.MODEL.POMP.IMAGE_LABEL_NUM_PROPOSALS
        return ret

    @property
    def box_predictors(self) -> list[ZeroShotFastRCNNOutputLayers]:
        """The box predictor of every stage."""
        predictors = self.box_predictor
        return list(predictors) if isinstance(predictors, nn.ModuleList) else [predictors]

    @property
    def num_test_classes(self) -> int:
        return self.box_predictors[0].cls_score.num_test_classes

    @property
    def embedding_dim(self) -> int:
        return self.box_predictors[0].cls_score.dim

    def set_test_class_embeddings(self, class_embeddings: torch.Tensor) -> None:
        """Predict the classes of ``class_embeddings`` ``[C', D]`` at inference, in every stage.

        Raises:
            PompConfigError: ``C'`` differs from the training classes while box regression or masks are
                class-specific.
            EmbeddingFileError: ``D`` differs from the classifier's.
        """
        if len(class_embeddings) != self.num_classes:
            self._check_class_agnostic(len(class_embeddings))
        for predictor in self.box_predictors:
            predictor.cls_score.set_test_class_embeddings(class_embeddings)

    def _check_class_agnostic(self, num_test: int) -> None:
        if any(p.class_specific_regression for p in self.box_predictors):
            raise PompConfigError(f"the inference vocabulary has {num_test} classes but the box regression is "
                                  f"class-specific for {self.num_classes} classes; train with "
                                  "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True to change the number of classes")
        if self.mask_on and getattr(getattr(self.mask_head, "predictor", None), "out_channels", 1) != 1:
            raise PompConfigError(f"the inference vocabulary has {num_test} classes but the mask head is "
                                  f"class-specific for {self.num_classes} classes; train with "
                                  "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True to change the number of classes")

    def image_label_losses(self, features: dict[str, torch.Tensor], proposals: list[Instances],
                           image_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of image-labelled images (Detic's max-size loss on each image's largest top-scoring proposal).

        Args:
            features: the backbone features of these images.
            proposals: their RPN proposals, sorted by objectness (as the RPN returns them).
            image_labels: per image, a long tensor of its class indices.

        Returns:
            the keys of a box batch's losses: the image-label loss, zero box losses and a zero mask loss.
        """
        proposals = [p[: self.image_label_num_proposals] for p in proposals]
        losses = self._image_label_box_losses([features[f] for f in self.box_in_features], proposals, image_labels)
        if self.mask_on:
            losses["loss_mask"] = zero_loss(self.mask_head).to(features[self.box_in_features[0]].device)
        return losses


@ROI_HEADS_REGISTRY.register()
class PompCascadeROIHeads(ZeroShotROIHeadsMixin, CascadeROIHeads):
    """Detic's head: a 3-stage (``ROI_BOX_CASCADE_HEAD.IOUS``) cascade, each stage with the zero-shot classifier;
    class-agnostic box regression (as every ``CascadeROIHeads``), scores averaged over the stages at inference."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # The parent's stock predictors are replaced at once: they need no federated-loss weights.
        ret = super()._init_box_head(without_federated_loss(cfg), input_shape)
        train, test = config_embeddings(cfg)
        ret["box_predictors"] = [
            ZeroShotFastRCNNOutputLayers(cfg, head.output_shape, class_embeddings=train, test_class_embeddings=test,
                                         box2box_transform=stock.box2box_transform)
            for head, stock in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret

    def _image_label_box_losses(self, features, proposals, image_labels):
        image_sizes = [p.image_size for p in proposals]
        losses = {}
        for stage in range(self.num_cascade_stages):
            if stage > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(features, proposals, stage)
            boxes = self.box_predictor[stage].predict_boxes(predictions, proposals)
            stage_losses = self.box_predictor[stage].image_label_losses(predictions, proposals, image_labels)
            losses.update({f"{name}_stage{stage}": value for name, value in stage_losses.items()})
        return losses


@ROI_HEADS_REGISTRY.register()
class PompStandardROIHeads(ZeroShotROIHeadsMixin, StandardROIHeads):
    """detectron2's standard ROI heads with the zero-shot classifier: setting ``ROI_HEADS.NAME`` to this turns a
    stock Faster/Mask R-CNN config into a zero-shot one."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(without_federated_loss(cfg), input_shape)
        train, test = config_embeddings(cfg)
        ret["box_predictor"] = ZeroShotFastRCNNOutputLayers(cfg, ret["box_head"].output_shape,
                                                            class_embeddings=train, test_class_embeddings=test)
        return ret

    def _image_label_box_losses(self, features, proposals, image_labels):
        box_features = self.box_head(self.box_pooler(features, [p.proposal_boxes for p in proposals]))
        return self.box_predictor.image_label_losses(self.box_predictor(box_features), proposals, image_labels)
