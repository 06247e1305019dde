"""ROI heads with Detic's box predictor: Detic's cascade (``DeticCascadeROIHeads``) and C4 heads
(``CustomRes5ROIHeads``) with the same state-dict keys and computations, and the standard heads (drop-in).

All take ``ann_type`` (``"box"`` or ``"image"``) in training, as Detic's: image-labelled images are trained on their
top ``WS_NUM_PROPS`` proposals with the max-size loss; their targets carry ``_pos_category_ids``.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads, Res5ROIHeads, StandardROIHeads
from detectron2.modeling.roi_heads.cascade_rcnn import _ScaleGradient
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from .config import PompConfigError
from .fast_rcnn import ZeroShotFastRCNNOutputLayers
from .vocabulary import inference_class_embeddings, training_class_embeddings


def _without_fed_loss(cfg):
    """``cfg`` for building the parent's stock predictors, which are replaced at once (they need no weights)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
    return cfg


def _class_embeddings(cfg) -> torch.Tensor | None:
    return training_class_embeddings(cfg) if cfg.MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS else None


def zero_loss(module: nn.Module, device: torch.device) -> torch.Tensor:
    """0 connected to every trainable parameter of ``module``, so that DDP sees them used in a batch that skips
    them (Detic returns an unconnected 0 and needs ``find_unused_parameters``)."""
    params = [p.sum() for p in module.parameters() if p.requires_grad]
    return torch.stack(params).sum() * 0.0 if params else torch.zeros((), device=device)


class ZeroShotROIHeadsMixin:
    """Settings and helpers shared by the three heads: the inference-vocabulary swap over every stage and the
    top proposals of image-labelled images."""

    @configurable
    def __init__(self, *, cfg, **kwargs):
        super().__init__(**kwargs)  # the detectron2 heads' own arguments
        self._init_zero_shot(cfg)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "cfg": cfg}

    def _init_zero_shot(self, cfg) -> None:
        box = cfg.MODEL.ROI_BOX_HEAD
        self.with_image_labels = cfg.WITH_IMAGE_LABELS
        self.ws_num_props = box.WS_NUM_PROPS
        self.mult_proposal_score = box.MULT_PROPOSAL_SCORE
        self.mask_weight = cfg.MODEL.ROI_HEADS.MASK_WEIGHT
        self.one_class_per_proposal = cfg.MODEL.ROI_HEADS.ONE_CLASS_PER_PROPOSAL
        if box.USE_ZEROSHOT_CLS and cfg.MODEL.POMP.TEST_VOCABULARY:
            self.set_test_class_embeddings(inference_class_embeddings(cfg))

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

    def set_test_class_embeddings(self, class_embeddings: torch.Tensor | None) -> None:
        """Predict the classes of ``class_embeddings`` ``[C', D]`` at inference in every stage (``None``: the
        training classes).

        Raises:
            PompConfigError: the predictor is not zero-shot, or ``C'`` differs from the training classes while box
                regression or masks are class-specific.
        """
        if not all(p.zero_shot for p in self.box_predictors):
            raise PompConfigError(
                "the box predictor has no zero-shot classifier: set MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS True"
            )
        if class_embeddings is not None and len(class_embeddings) != self.num_classes:
            self._check_class_agnostic(len(class_embeddings))
        for predictor in self.box_predictors:
            predictor.cls_score.set_test_class_embeddings(class_embeddings)

    def _check_class_agnostic(self, num_test: int) -> None:
        if any(p.class_specific_regression for p in self.box_predictors):
            raise PompConfigError(
                f"the inference vocabulary has {num_test} classes but the box regression is "
                f"class-specific for {self.num_classes} classes"
            )
        if self.mask_on and getattr(getattr(self.mask_head, "predictor", None), "out_channels", 1) != 1:
            raise PompConfigError(
                f"the inference vocabulary has {num_test} classes but the mask head is "
                f"class-specific for {self.num_classes} classes; train with "
                "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True to change the number of classes"
            )

    def get_top_proposals(self, proposals: list[Instances]) -> list[Instances]:
        """The first ``WS_NUM_PROPS`` proposals of each image-labelled image, clipped, without gradient."""
        for p in proposals:
            p.proposal_boxes.clip(p.image_size)
        proposals = [p[: self.ws_num_props] for p in proposals]
        for p in proposals:
            p.proposal_boxes.tensor = p.proposal_boxes.tensor.detach()
        return proposals

    def _empty_mask_loss(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"loss_mask": zero_loss(self.mask_head, device)} if self.mask_on else {}


@ROI_HEADS_REGISTRY.register()
class PompCascadeROIHeads(ZeroShotROIHeadsMixin, CascadeROIHeads):
    """Detic's ``DeticCascadeROIHeads``: a cascade (``ROI_BOX_CASCADE_HEAD.IOUS``) of Detic box predictors; at
    inference the stage-averaged scores are multiplied by the proposal score (``MULT_PROPOSAL_SCORE``, square root)
    and optionally kept for the top class only (``ONE_CLASS_PER_PROPOSAL``)."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(_without_fed_loss(cfg), input_shape)
        embeddings = _class_embeddings(cfg)
        ret["box_predictors"] = [
            ZeroShotFastRCNNOutputLayers(
                cfg, head.output_shape, class_embeddings=embeddings, box2box_transform=Box2BoxTransform(weights=weights)
            )
            for head, weights in zip(ret["box_heads"], cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS)
        ]
        return ret

    def forward(self, images, features, proposals, targets=None, ann_type: str = "box"):
        del images
        if not self.training:
            pred_instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        if ann_type == "box":
            proposals = self.label_and_sample_proposals(proposals, targets)
        else:
            proposals = self.get_top_proposals(proposals)
        losses = self._forward_box(features, proposals, targets, ann_type=ann_type)
        if ann_type == "box" and targets[0].has("gt_masks"):
            mask_losses = self._forward_mask(features, proposals)
            losses.update({k: v * self.mask_weight for k, v in mask_losses.items()})
            losses.update(self._forward_keypoint(features, proposals))
        else:
            losses.update(self._empty_mask_loss(proposals[0].objectness_logits.device))
        return proposals, losses

    def _forward_box(self, features, proposals, targets=None, ann_type: str = "box"):
        if not self.training and self.mult_proposal_score:
            if len(proposals) > 0 and proposals[0].has("scores"):
                proposal_scores = [p.get("scores") for p in proposals]
            else:
                proposal_scores = [p.get("objectness_logits") for p in proposals]
        features = [features[f] for f in self.box_in_features]
        head_outputs = []  # (predictor, predictions, proposals)
        prev_pred_boxes = None
        image_sizes = [x.image_size for x in proposals]
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(
                    prev_pred_boxes, image_sizes, [p.objectness_logits for p in proposals]
                )
                if self.training and ann_type == "box":
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(features, proposals, k)
            prev_pred_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            head_outputs.append((self.box_predictor[k], predictions, proposals))

        if self.training:
            losses = {}
            storage = get_event_storage()
            for stage, (predictor, predictions, stage_proposals) in enumerate(head_outputs):
                with storage.name_scope(f"stage{stage}"):
                    if ann_type == "box":
                        stage_losses = predictor.losses(predictions, stage_proposals)
                        if self.with_image_labels:
                            stage_losses["image_loss"] = predictions[0].sum() * 0.0
                    else:
                        image_labels = [t._pos_category_ids for t in targets]
                        stage_losses = predictor.image_label_losses(predictions, stage_proposals, image_labels)
                losses.update({f"{name}_stage{stage}": value for name, value in stage_losses.items()})
            return losses

        scores_per_stage = [h[0].predict_probs(h[1], h[2]) for h in head_outputs]
        scores = [sum(list(per_image)) * (1.0 / self.num_cascade_stages) for per_image in zip(*scores_per_stage)]
        if self.mult_proposal_score:
            scores = [(s * ps[:, None]) ** 0.5 for s, ps in zip(scores, proposal_scores)]
        if self.one_class_per_proposal:
            scores = [s * (s == s[:, :-1].max(dim=1)[0][:, None]).float() for s in scores]
        predictor, predictions, proposals = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, proposals)
        pred_instances, _ = fast_rcnn_inference(
            boxes,
            scores,
            image_sizes,
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        return pred_instances

    def _create_proposals_from_boxes(self, boxes, image_sizes, logits):
        """The parent's, carrying each proposal's ``objectness_logits`` to the next stage (as Detic)."""
        proposals = []
        for boxes_per_image, image_size, logit in zip([Boxes(b.detach()) for b in boxes], image_sizes, logits):
            boxes_per_image.clip(image_size)
            if self.training:
                keep = boxes_per_image.nonempty()
                boxes_per_image, logit = boxes_per_image[keep], logit[keep]
            prop = Instances(image_size)
            prop.proposal_boxes = boxes_per_image
            prop.objectness_logits = logit
            proposals.append(prop)
        return proposals

    def _run_stage(self, features, proposals, stage):
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        box_features = _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)
        box_features = self.box_head[stage](box_features)
        return self.box_predictor[stage](box_features)


@ROI_HEADS_REGISTRY.register()
class PompRes5ROIHeads(ZeroShotROIHeadsMixin, Res5ROIHeads):
    """Detic's ``CustomRes5ROIHeads`` (the C4 heads of its OV-COCO models): res5 on pooled regions, the Detic box
    predictor on their spatial mean."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(_without_fed_loss(cfg), input_shape)
        out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 2**3
        ret["box_predictor"] = ZeroShotFastRCNNOutputLayers(
            cfg, ShapeSpec(channels=out_channels, height=1, width=1), class_embeddings=_class_embeddings(cfg)
        )
        ret["cfg"] = cfg  # the full config (the federated loss included) for the predictor's settings
        return ret

    def forward(self, images, features, proposals, targets=None, ann_type: str = "box"):
        del images
        if self.training:
            if ann_type == "box":
                proposals = self.label_and_sample_proposals(proposals, targets)
            else:
                proposals = self.get_top_proposals(proposals)
        box_features = self._shared_roi_transform(
            [features[f] for f in self.in_features], [x.proposal_boxes for x in proposals]
        )
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))
        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return self.forward_with_given_boxes(features, pred_instances), {}
        if ann_type == "box":
            losses = self.box_predictor.losses(predictions, proposals)
            if self.with_image_labels:
                losses["image_loss"] = predictions[0].sum() * 0.0
            if self.mask_on:
                # as detectron2's Res5ROIHeads: masks of the foreground proposals from the shared res5 features
                losses.update(self._res5_mask_losses(box_features, proposals))
        else:
            image_labels = [t._pos_category_ids for t in targets]
            losses = self.box_predictor.image_label_losses(predictions, proposals, image_labels)
            losses.update(self._empty_mask_loss(predictions[0].device))
        return proposals, losses

    def _res5_mask_losses(self, box_features, proposals):
        proposals, fg_selection_masks = select_foreground_proposals(proposals, self.num_classes)
        mask_features = box_features[torch.cat(fg_selection_masks, dim=0)]
        return self.mask_head(mask_features, proposals)


@ROI_HEADS_REGISTRY.register()
class PompStandardROIHeads(ZeroShotROIHeadsMixin, StandardROIHeads):
    """detectron2's standard ROI heads with Detic's box predictor (drop-in for a stock Faster/Mask R-CNN)."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(_without_fed_loss(cfg), input_shape)
        ret["box_predictor"] = ZeroShotFastRCNNOutputLayers(
            cfg, ret["box_head"].output_shape, class_embeddings=_class_embeddings(cfg)
        )
        return ret

    def forward(self, images, features, proposals, targets=None, ann_type: str = "box"):
        if not self.training or ann_type == "box":
            proposals, losses = super().forward(images, features, proposals, targets)
            if self.training and self.with_image_labels:
                losses["image_loss"] = sum(p.sum() for p in self.box_predictor.parameters()) * 0.0
            return proposals, losses
        proposals = self.get_top_proposals(proposals)
        box_features = self.box_head(
            self.box_pooler([features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals])
        )
        predictions = self.box_predictor(box_features)
        losses = self.box_predictor.image_label_losses(predictions, proposals, [t._pos_category_ids for t in targets])
        losses.update(self._empty_mask_loss(predictions[0].device))
        return proposals, losses
