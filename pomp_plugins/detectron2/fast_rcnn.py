"""The box predictor of Detic (``DeticFastRCNNOutputLayers``): same state-dict keys, same losses, same inference.

With ``USE_ZEROSHOT_CLS`` its ``cls_score`` is the zero-shot classifier (``cls_score.linear``, ``cls_score.zs_weight``)
and ``bbox_pred`` a class-agnostic MLP (``bbox_pred.0``: Linear(d, d), ReLU, ``bbox_pred.2``: Linear(d, 4)).
With ``USE_FED_LOSS`` or ``IGNORE_ZERO_CATS`` it holds ``freq_weight`` ``[C]``: per-class image counts of the full
training set (``CAT_FREQ_PATH``) to the power ``FED_LOSS_FREQ_WEIGHT``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    _log_classification_stats,
    fast_rcnn_inference,
)
from detectron2.structures import Instances
from torch import nn

from .config import PompConfigError
from .data import load_class_freq
from .vocabulary import training_class_embeddings
from .zero_shot import ZeroShotBoxClassifier

logger = logging.getLogger("detectron2.pomp_plugins")  # shown by detectron2's tools


def fed_loss_classes(
    gt_classes: torch.Tensor, num_sample_cats: int, num_classes: int, weight: torch.Tensor
) -> torch.Tensor:
    """The classes of the federated loss: those in ``gt_classes`` plus negatives drawn without replacement with
    probability ``weight`` until ``num_sample_cats`` (Detic's ``get_fed_loss_inds``; draws from torch's RNG)."""
    appeared = torch.unique(gt_classes)
    prob = appeared.new_ones(num_classes + 1).float()
    prob[-1] = 0
    if len(appeared) < num_sample_cats:
        prob[:num_classes] = weight.float().clone()
        prob[appeared] = 0
        more = torch.multinomial(prob, num_sample_cats - len(appeared), replacement=False)
        appeared = torch.cat([appeared, more])
    return appeared


class ZeroShotFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``forward(x)`` returns ``(scores [R, C + 1], deltas [R, 4 or C * 4])``; ``C`` is the number of training
    classes in training mode and of the inference classes otherwise."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        cls_score: ZeroShotBoxClassifier | None = None,
        mult_proposal_score: bool = False,
        use_sigmoid_ce: bool = False,
        use_fed_loss: bool = False,
        ignore_zero_cats: bool = False,
        fed_loss_num_cat: int = 50,
        freq_weight: torch.Tensor | None = None,
        image_loss_weight: float = 0.1,
        softmax_weak_loss: bool = False,
        prior_prob: float = 0.01,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: those of ``FastRCNNOutputLayers`` (its own ``use_fed_loss``/``use_sigmoid_ce``
                are not used: the federated loss is Detic's, with ``freq_weight``).
            cls_score: the zero-shot classifier (Detic's ``USE_ZEROSHOT_CLS``); ``None`` keeps the linear one.
            freq_weight: ``[C']`` federated-loss class weights (``load_class_freq``), needed by ``use_fed_loss`` and
                ``ignore_zero_cats``; zero-padded to ``num_classes``.
        """
        super().__init__(input_shape=input_shape, **kwargs)
        self.mult_proposal_score = mult_proposal_score
        self.use_sigmoid_ce = use_sigmoid_ce
        self.use_fed_loss = use_fed_loss
        self.ignore_zero_cats = ignore_zero_cats
        self.fed_loss_num_cat = fed_loss_num_cat
        self.image_loss_weight = image_loss_weight
        self.softmax_weak_loss = softmax_weak_loss
        if use_sigmoid_ce:
            nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        if use_fed_loss or ignore_zero_cats:
            if freq_weight is None:
                raise PompConfigError(
                    "USE_FED_LOSS / IGNORE_ZERO_CATS need the class weights of MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH"
                )
            if len(freq_weight) < self.num_classes:
                freq_weight = torch.cat([freq_weight, freq_weight.new_zeros(self.num_classes - len(freq_weight))])
            self.register_buffer("freq_weight", freq_weight)
        else:
            self.freq_weight = None
        if cls_score is not None:
            input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
            self.cls_score = cls_score
            self.bbox_pred = nn.Sequential(
                nn.Linear(input_size, input_size), nn.ReLU(inplace=True), nn.Linear(input_size, 4)
            )
            weight_init.c2_xavier_fill(self.bbox_pred[0])
            nn.init.normal_(self.bbox_pred[-1].weight, std=0.001)
            nn.init.constant_(self.bbox_pred[-1].bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape, class_embeddings: torch.Tensor | None = None):
        """``class_embeddings``: ``[C, D]`` training-class embeddings (``vocabulary.training_class_embeddings``);
        ``None`` reads them from ``cfg`` (only with ``USE_ZEROSHOT_CLS``; ``None`` there too means Detic's learned
        "rand" classifier)."""
        box = cfg.MODEL.ROI_BOX_HEAD
        _check_supported(cfg)
        ret = super().from_config(cfg, input_shape)
        ret.update(  # use_sigmoid_ce and use_fed_loss are ours (the parent's stay off: no fed_loss_cls_weights)
            mult_proposal_score=box.MULT_PROPOSAL_SCORE,
            use_sigmoid_ce=box.USE_SIGMOID_CE,
            use_fed_loss=box.USE_FED_LOSS,
            ignore_zero_cats=box.IGNORE_ZERO_CATS,
            fed_loss_num_cat=box.FED_LOSS_NUM_CAT,
            image_loss_weight=box.IMAGE_LOSS_WEIGHT,
            softmax_weak_loss=box.SOFTMAX_WEAK_LOSS,
            prior_prob=box.PRIOR_PROB,
        )
        if box.USE_FED_LOSS or box.IGNORE_ZERO_CATS:
            if os.path.isfile(box.CAT_FREQ_PATH):
                ret["freq_weight"] = load_class_freq(box.CAT_FREQ_PATH, box.FED_LOSS_FREQ_WEIGHT)
            else:  # inference needs no weights (a checkpoint brings Detic's); training raises in the loss
                logger.warning(
                    f"MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH {box.CAT_FREQ_PATH!r} does not exist: the "
                    "federated-loss weights are zeros until a checkpoint brings them"
                )
                ret["freq_weight"] = torch.zeros(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        if box.USE_ZEROSHOT_CLS:
            if class_embeddings is None:
                class_embeddings = training_class_embeddings(cfg)
            ret["cls_score"] = ZeroShotBoxClassifier(
                input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1),
                class_embeddings,
                dim=box.ZEROSHOT_WEIGHT_DIM,
                num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                norm_weight=box.NORM_WEIGHT,
                norm_temperature=box.NORM_TEMP,
                use_bias=box.USE_BIAS,
            )
        return ret

    @property
    def zero_shot(self) -> bool:
        return isinstance(self.cls_score, ZeroShotBoxClassifier)

    @property
    def class_specific_regression(self) -> bool:
        return self.bbox_pred[-1].out_features != 4 if self.zero_shot else self.bbox_pred.out_features != 4

    def forward(self, x: torch.Tensor):
        """``x``: region features ``[R, ...]`` -> ``(scores [R, C + 1], deltas [R, 4 or 4C])``."""
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)

    # --- training ------------------------------------------------------------------------------------------------
    def losses(self, predictions, proposals: list[Instances]) -> dict[str, torch.Tensor]:
        """``loss_cls`` (sigmoid CE with the federated loss, or softmax CE) and ``loss_box_reg``, as Detic (no
        ``BBOX_REG_LOSS_WEIGHT``: Detic ignores it)."""
        scores, proposal_deltas = predictions[0], predictions[1]
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if len(proposals) else torch.empty(0)
        _log_classification_stats(scores, gt_classes)
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)
        if self.use_sigmoid_ce:
            loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
        else:
            loss_cls = self.softmax_cross_entropy_loss(scores, gt_classes)
        return {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes),
        }

    def _check_freq_weight(self) -> None:
        if float(self.freq_weight.sum()) <= 0:
            raise PompConfigError(
                "the federated-loss weights (freq_weight) are all zero: set "
                "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH to the training set's cat-info json"
            )

    def _fed_loss_classes(self, gt_classes: torch.Tensor, num_classes: int) -> torch.Tensor:
        self._check_freq_weight()
        return fed_loss_classes(gt_classes, self.fed_loss_num_cat, num_classes, self.freq_weight)

    def sigmoid_cross_entropy_loss(self, pred_class_logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        if pred_class_logits.numel() == 0:
            return pred_class_logits.new_zeros([1])[0]
        num_boxes, num_classes = pred_class_logits.shape[0], pred_class_logits.shape[1] - 1
        target = pred_class_logits.new_zeros(num_boxes, num_classes + 1)
        target[range(len(gt_classes)), gt_classes] = 1
        target = target[:, :num_classes]
        weight = pred_class_logits.new_ones(1, num_classes)
        if self.use_fed_loss:
            mask = pred_class_logits.new_zeros(num_classes + 1)
            mask[self._fed_loss_classes(gt_classes, num_classes)] = 1
            weight = weight * mask[:num_classes]
        if self.ignore_zero_cats:
            self._check_freq_weight()
            weight = weight * (self.freq_weight.view(1, -1) > 1e-4).float()
        loss = F.binary_cross_entropy_with_logits(pred_class_logits[:, :-1], target, reduction="none")
        return torch.sum(loss * weight) / num_boxes

    def softmax_cross_entropy_loss(self, pred_class_logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        if pred_class_logits.numel() == 0:
            return pred_class_logits.new_zeros([1])[0]
        weight = None
        if self.ignore_zero_cats:
            self._check_freq_weight()
            weight = torch.cat([(self.freq_weight.view(-1) > 1e-4).float(), self.freq_weight.new_ones(1)])
        elif self.use_fed_loss:
            num_classes = pred_class_logits.shape[1] - 1
            weight = pred_class_logits.new_zeros(num_classes + 1)
            weight[self._fed_loss_classes(gt_classes, num_classes)] = 1.0
            weight[num_classes] = 1.0
        return F.cross_entropy(pred_class_logits, gt_classes, weight=weight, reduction="mean")

    def image_label_losses(
        self, predictions, proposals: list[Instances], image_labels: Sequence[Sequence[int]]
    ) -> dict[str, torch.Tensor]:
        """Detic's max-size loss: for each label of an image, sigmoid BCE (over all ``C + 1`` outputs) of the
        image's largest proposal (the last proposal excluded, as Detic) against that label; averaged over the
        image's labels, then over the images, times ``IMAGE_LOSS_WEIGHT``.

        Returns ``image_loss`` plus zero ``loss_cls`` and ``loss_box_reg`` (connected to the predictor's outputs,
        so every parameter takes part in the step).
        """
        scores, deltas = predictions[0], predictions[1]
        per_image = scores.split([len(p) for p in proposals], dim=0)
        loss = scores.new_zeros([1])[0]
        for score, labels, p in zip(per_image, image_labels, proposals):
            if score.shape[0] == 0:
                continue
            sizes = p.proposal_boxes.area()
            ind = sizes[:-1].argmax().item() if len(sizes) > 1 else 0
            for label in labels:
                if self.softmax_weak_loss:
                    loss_i = F.cross_entropy(
                        score[ind : ind + 1], score.new_tensor([label], dtype=torch.long), reduction="sum"
                    )
                else:
                    target = score.new_zeros(score.shape[1])
                    target[label] = 1.0
                    loss_i = F.binary_cross_entropy_with_logits(score[ind], target, reduction="sum")
                loss = loss + loss_i / len(labels)
        loss = loss / len(per_image)
        return {
            "image_loss": loss * self.image_loss_weight,
            "loss_cls": scores.sum() * 0.0,
            "loss_box_reg": deltas.sum() * 0.0,
        }

    # --- inference -----------------------------------------------------------------------------------------------
    def predict_probs(self, predictions, proposals: list[Instances]):
        scores = predictions[0]
        probs = scores.sigmoid() if self.use_sigmoid_ce else F.softmax(scores, dim=-1)
        return probs.split([len(p) for p in proposals], dim=0)

    def inference(self, predictions, proposals: list[Instances]):
        """detectron2's inference with sigmoid scores and, with ``MULT_PROPOSAL_SCORE``,
        ``sqrt(score x proposal score)`` (the proposals' ``objectness_logits`` are CenterNet's probabilities)."""
        predictions = (predictions[0], predictions[1])
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        if self.mult_proposal_score:
            scores = [(s * p.objectness_logits[:, None]) ** 0.5 for s, p in zip(scores, proposals)]
        return fast_rcnn_inference(
            boxes,
            scores,
            [p.image_size for p in proposals],
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )


def _check_supported(cfg) -> None:
    """Raise ``PompConfigError`` for Detic options this plugin does not implement."""
    box = cfg.MODEL.ROI_BOX_HEAD
    unsupported = {
        "MODEL.ROI_BOX_HEAD.IMAGE_LABEL_LOSS": box.IMAGE_LABEL_LOSS != "max_size",
        "MODEL.ROI_BOX_HEAD.WITH_SOFTMAX_PROP": box.WITH_SOFTMAX_PROP,
        "MODEL.ROI_BOX_HEAD.ADD_IMAGE_BOX": box.ADD_IMAGE_BOX,
        "MODEL.ROI_BOX_HEAD.ADD_FEATURE_TO_PROP": box.ADD_FEATURE_TO_PROP,
        "MODEL.WITH_CAPTION": cfg.MODEL.WITH_CAPTION,
        "MODEL.SYNC_CAPTION_BATCH": cfg.MODEL.SYNC_CAPTION_BATCH,
        "MODEL.DYNAMIC_CLASSIFIER": cfg.MODEL.DYNAMIC_CLASSIFIER,
    }
    bad = [key for key, on in unsupported.items() if on]
    if bad:
        raise PompConfigError(
            f"not implemented by pomp_plugins (Detic's caption, WSDDN and 21K-class options): "
            f"{', '.join(bad)}; only IMAGE_LABEL_LOSS 'max_size' is"
        )
