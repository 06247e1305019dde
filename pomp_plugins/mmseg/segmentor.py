"""The segmentor for the ZSSeg head's CLIP stage, and a test-time vocabulary swap for any of our segmentors."""

from __future__ import annotations

import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import nn

from .classifier import VocabularyClassifier
from .vocabulary import ClassesSpec, SplitSpec


@MODELS.register_module()
class ZSSegEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` that also hands the input images (RGB, 0..255) to the decode head at test time,
    for ZSSeg's CLIP region classification. Training is unchanged.

    The data preprocessor must normalise with ``mean``/``std`` and convert BGR to RGB (``bgr_to_rgb=True``),
    as mmseg's configs do; the images are recovered from its output.
    """

    def __init__(self, *args, data_preprocessor: dict | None = None, **kwargs):
        if not data_preprocessor or data_preprocessor.get("mean") is None or not data_preprocessor.get("bgr_to_rgb"):
            raise ValueError("ZSSegEncoderDecoder needs a data_preprocessor with mean, std and bgr_to_rgb=True")
        super().__init__(*args, data_preprocessor=data_preprocessor, **kwargs)

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        images = inputs * self.data_preprocessor.std + self.data_preprocessor.mean
        return self.decode_head.predict(self.extract_feat(inputs), batch_img_metas, self.test_cfg, images=images)


def text_classifier_of(head: nn.Module) -> VocabularyClassifier | None:
    """The text classifier inside a decode head of this package (``ZSSegHead``, ``TextClassifierHead``), or None."""
    return next((m for m in head.modules() if isinstance(m, VocabularyClassifier)), None)


def set_vocabulary(segmentor: EncoderDecoder, classes: ClassesSpec, split: SplitSpec | None = None) -> None:
    """Make a built segmentor score ``classes`` (any number): its decode head and any auxiliary head whose
    classifier is text-based get the new class embeddings, and the segmentor's ``num_classes``/``out_channels``
    (used by slide inference) follow.

    Raises:
        TypeError: the decode head has no text classifier (it is not one of this package's heads).
    """
    heads = [segmentor.decode_head]
    auxiliary = getattr(segmentor, "auxiliary_head", None)
    heads += list(auxiliary) if isinstance(auxiliary, nn.ModuleList) else [auxiliary] if auxiliary else []
    swapped = False
    for head in heads:
        if hasattr(head, "set_vocabulary"):  # ZSSegHead: its CLIP stage and class weights follow
            head.set_vocabulary(classes, split)
        else:
            classifier = text_classifier_of(head)
            if classifier is None:
                continue
            classifier.set_vocabulary(classes, split)
            head.num_classes = head.out_channels = classifier.num_classes
        swapped |= head is segmentor.decode_head
    if not swapped:
        raise TypeError(
            f"{type(segmentor.decode_head).__name__} has no text classifier: use ZSSegHead or "
            "TextClassifierHead to change the vocabulary"
        )
    segmentor.num_classes = segmentor.out_channels = segmentor.decode_head.num_classes
