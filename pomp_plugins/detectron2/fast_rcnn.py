"""The box predictor: detectron2's ``FastRCNNOutputLayers`` with the zero-shot classifier and Detic's image-label
loss. Box regression, sigmoid CE, the federated loss and inference are detectron2's own."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Instances

from .data import federated_loss_weights
from .vocabulary import config_embeddings
from .zero_shot import ZeroShotBoxClassifier


class ZeroShotFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose ``cls_score`` is a ``ZeroShotBoxClassifier``.

    ``forward`` returns ``(scores [R, C + 1], deltas [R, 4 or C * 4])`` as its parent does; ``C`` is the number of
    training classes in training mode and of inference classes otherwise.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        class_embeddings: torch.Tensor,
        test_class_embeddings: Optional[torch.Tensor] = None,
        temperature: float = 50.0,
        background: str = "zero",
        use_bias: float = 0.0,
        with_image_labels: bool = False,
        image_label_loss_weight: float = 0.1,
        **kwargs,
    ):
        """Arguments of ``FastRCNNOutputLayers`` plus those of ``ZeroShotBoxClassifier`` and the image-label loss
        settings; ``num_classes`` must equal ``len(class_embeddings)``."""
        super().__init__(input_shape, **kwargs)
        if len(class_embeddings) != self.num_classes:
            raise ValueError(f"{len(class_embeddings)} class embeddings for a predictor of {self.num_classes} "
                             "classes")
        self.cls_score = ZeroShotBoxClassifier(self.cls_score.in_features, class_embeddings, test_class_embeddings,
                                               temperature, background, use_bias)
        self.with_image_labels = with_image_labels
        self.image_label_loss_weight = image_label_loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape, class_embeddings=None, test_class_embeddings=None):
        ret = super().from_config(cfg, input_shape)
        if class_embeddings is None:
            class_embeddings, test_class_embeddings = config_embeddings(cfg)
        pomp = cfg.MODEL.POMP
        ret.update(
            get_fed_loss_cls_weights=lambda: federated_loss_weights(cfg),
            class_embeddings=class_embeddings,
            test_class_embeddings=test_class_embeddings,
            temperature=pomp.TEMPERATURE,
            background=pomp.BACKGROUND,
            use_bias=pomp.USE_BIAS,
            with_image_labels=pomp.WITH_IMAGE_LABELS,
            image_label_loss_weight=pomp.IMAGE_LABEL_LOSS_WEIGHT,
        )
        return ret

    @property
    def class_specific_regression(self) -> bool:
        return self.bbox_pred.out_features != len(self.box2box_transform.weights)

    def losses(self, predictions, proposals):
        """detectron2's losses, plus a zero ``loss_image_label`` when image labels are in use (same keys in every
        batch, as distributed training's metric gathering needs)."""
        losses = super().losses(predictions, proposals)
        if self.with_image_labels:
            losses["loss_image_label"] = predictions[0].sum() * 0.0
        return losses

    def image_label_losses(self, predictions, proposals: list[Instances],
                           image_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detic's max-size loss: each image's largest proposal is classified as the image's labels.

        Args:
            predictions: ``forward``'s output for the proposals of image-labelled images.
            proposals: per image, the proposals those predictions belong to.
            image_labels: per image, a long tensor of its class indices.

        Returns:
            ``loss_image_label`` = weight x mean over images of sigmoid BCE summed over classes (multi-hot
            target; softmax CE averaged over the labels without ``USE_SIGMOID_CE``), and zero ``loss_cls`` and
            ``loss_box_reg`` so the keys are those of a box batch.
        """
        scores, deltas = predictions
        num_classes = scores.shape[1] - 1
        per_image = []
        for image_scores, image_proposals, labels in zip(scores.split([len(p) for p in proposals]), proposals,
                                                         image_labels):
            if len(image_proposals) == 0 or len(labels) == 0:
                continue
            logits = image_scores[image_proposals.proposal_boxes.area().argmax()]
            if self.use_sigmoid_ce:
                target = logits.new_zeros(num_classes)
                target[labels] = 1.0
                per_image.append(F.binary_cross_entropy_with_logits(logits[:num_classes], target, reduction="sum"))
            else:
                per_image.append(F.cross_entropy(logits.expand(len(labels), -1), labels))
        loss = torch.stack(per_image).mean() if per_image else scores.sum() * 0.0
        return {
            "loss_cls": scores.sum() * 0.0,
            "loss_box_reg": deltas.sum() * 0.0,
            "loss_image_label": self.image_label_loss_weight * loss,
        }
