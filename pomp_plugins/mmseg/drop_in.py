"""Drop-in text classifier: any mmseg decode head with a 1x1 ``conv_seg`` becomes open-vocabulary by config.

In a config, change the head's ``type`` to ``TextClassifierHead``, move the old type to ``head_type`` and add a
``text_classifier``; every other key is the stock head's::

    model = dict(decode_head=dict(type='TextClassifierHead', head_type='FCNHead',
                                  text_classifier=dict(classes='ade20k', prompt='pomp.pt')))

The stock head is built as usual (same class, same state-dict keys for everything but ``conv_seg``), then its
``conv_seg`` is replaced by a 1x1 projection to the text space followed by cosine logits against the class
embeddings, so ``out_channels == num_classes == len(classes)``.
"""
from __future__ import annotations

from typing import Optional

import torch
from mmengine.logging import print_log
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn

from .classifier import VocabularyClassifier


class TextConvSeg(nn.Module):
    """``[B, C_in, H, W]`` pixel features -> ``[B, C, H, W]`` logits: a 1x1 conv to the text space, then cosine."""

    def __init__(self, in_channels: int, classifier: VocabularyClassifier):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, classifier.dim, kernel_size=1)
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embeddings = self.proj(features).permute(0, 2, 3, 1)
        return self.classifier(embeddings).permute(0, 3, 1, 2)


def replace_conv_seg(head: BaseDecodeHead, classifier: VocabularyClassifier) -> BaseDecodeHead:
    """Swap ``head.conv_seg`` (a 1x1 ``Conv2d``) for a :class:`TextConvSeg` over ``classifier``; returns ``head``."""
    conv = getattr(head, "conv_seg", None)
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1):
        raise TypeError(f"{type(head).__name__} has no 1x1 Conv2d conv_seg to replace (found {conv!r})")
    head.conv_seg = TextConvSeg(conv.in_channels, classifier)
    head.num_classes = head.out_channels = classifier.num_classes
    return head


def build_text_classifier_head(head_type: str, text_classifier: Optional[dict] = None, **head_args) -> BaseDecodeHead:
    """Build the stock ``head_type`` head with ``head_args`` and an open-vocabulary ``conv_seg``.

    ``num_classes`` is the number of classes in ``text_classifier['classes']`` (a differing value inherited from a
    stock config is replaced, and logged).

    Raises:
        ValueError: no ``text_classifier``, or ``out_channels`` set to anything but the number of classes.
    """
    if not text_classifier:
        raise ValueError("TextClassifierHead needs text_classifier=dict(classes=..., prompt=... | hard_prompt=... "
                         "| embedding_file=...)")
    classifier = VocabularyClassifier(**text_classifier)
    num_classes = classifier.num_classes
    if head_args.get("out_channels") not in (None, num_classes):
        raise ValueError(f"TextClassifierHead scores {num_classes} classes, so out_channels must be {num_classes} "
                         f"(got {head_args['out_channels']}); binary out_channels=1 heads are not supported")
    if head_args.get("num_classes", num_classes) != num_classes:
        print_log(f"TextClassifierHead: num_classes {head_args['num_classes']} -> {num_classes} "
                  f"(the classes of {classifier.vocabulary.name!r})", logger="current")
    head = MODELS.build(dict(type=head_type, **{**head_args, "num_classes": num_classes}))
    if not isinstance(head, BaseDecodeHead):
        raise TypeError(f"head_type {head_type!r} builds a {type(head).__name__}, not an mmseg BaseDecodeHead")
    return replace_conv_seg(head, classifier)


MODELS.register_module(name="TextClassifierHead", module=build_text_classifier_head)
