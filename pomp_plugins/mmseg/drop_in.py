"""Drop-in text classifier: any mmseg decode head with a 1x1 ``conv_seg`` becomes open-vocabulary by config.

In a config, change the head's ``type`` to ``TextClassifierHead``, move the old type to ``head_type`` and add a
``text_classifier``; every other key is the stock head's::

    model = dict(decode_head=dict(type='TextClassifierHead', head_type='FCNHead',
                                  text_classifier=dict(classes='ade20k', prompt='prompts/pomp_vit_b16_ctx16.pt')))

``TextClassifierHead(head_type='FCNHead', ...)`` builds an instance of ``TextClassifierFCNHead``, a subclass of both
``TextClassifierHead`` and the stock ``FCNHead`` made once per stock class: the stock head is built as usual (same
class hierarchy, same state-dict keys for everything but ``conv_seg``), then its ``conv_seg`` is replaced by a 1x1
projection to the text space followed by cosine logits against the class embeddings, so
``out_channels == num_classes == len(classes)``.

Unseen classes in training: their logits are a finite constant far below any cosine logit (``UNTRAINED_LOGIT``),
not ``-inf``. mmseg's ``loss_by_feat`` upsamples the logits bilinearly before the loss, and an interpolation weight
of 0 times ``-inf`` is NaN; a constant channel stays constant under interpolation, and its softmax probability is
exactly 0 in float32, so the loss equals the loss over the seen classes alone (tested).
"""

from __future__ import annotations

import torch
from mmengine.logging import print_log
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn

from .classifier import VocabularyClassifier

# Cosine logits lie in [-temperature, temperature] (50 or 100 here); exp(UNTRAINED_LOGIT - logit) is 0 in float32,
# and the value is representable in float16 and bfloat16 (mixed precision).
UNTRAINED_LOGIT = -1.0e4


class TextConvSeg(nn.Module):
    """``[B, C_in, H, W]`` pixel features -> ``[B, C, H, W]`` logits: a 1x1 conv to the text space, then cosine.

    In training mode, the logits of classes the classifier does not train on are ``UNTRAINED_LOGIT``.
    """

    def __init__(self, in_channels: int, classifier: VocabularyClassifier):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, classifier.dim, kernel_size=1)
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embeddings = self.proj(features).permute(0, 2, 3, 1)
        logits = self.classifier.classifier(embeddings)  # every class, finite
        trained = self.classifier.trained
        if self.training and not bool(trained.all()):
            logits = logits.masked_fill(~trained, UNTRAINED_LOGIT)
        return logits.permute(0, 3, 1, 2)


def replace_conv_seg(head: BaseDecodeHead, classifier: VocabularyClassifier) -> BaseDecodeHead:
    """Swap ``head.conv_seg`` (a 1x1 ``Conv2d``) for a :class:`TextConvSeg` over ``classifier``; returns ``head``."""
    conv = getattr(head, "conv_seg", None)
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1):
        raise TypeError(f"{type(head).__name__} has no 1x1 Conv2d conv_seg to replace (found {conv!r})")
    head.conv_seg = TextConvSeg(conv.in_channels, classifier)
    head.num_classes = head.out_channels = classifier.num_classes
    return head


_HEAD_CLASSES: dict[type, type] = {}


def text_classifier_head_class(head_type: str | type) -> type:
    """The ``TextClassifierHead`` subclass of the stock decode head ``head_type`` (a registered name or a class).

    Made once per stock class and named ``TextClassifier<Stock>`` in this module, so its instances pickle.

    Raises:
        KeyError: ``head_type`` is not registered in mmseg's ``MODELS``.
        TypeError: it is not an mmseg ``BaseDecodeHead`` (or is already a ``TextClassifierHead``).
    """
    stock = MODELS.get(head_type) if isinstance(head_type, str) else head_type
    if stock is None:
        raise KeyError(f"TextClassifierHead: head_type {head_type!r} is not registered in mmseg's MODELS")
    if not (isinstance(stock, type) and issubclass(stock, BaseDecodeHead)) or issubclass(stock, TextClassifierHead):
        raise TypeError(
            f"TextClassifierHead: head_type {head_type!r} must be a stock mmseg decode head "
            f"(a BaseDecodeHead subclass with a conv_seg), got {stock!r}"
        )
    cls = _HEAD_CLASSES.get(stock)
    if cls is None:
        name = f"TextClassifier{stock.__name__}"
        cls = type(
            name,
            (TextClassifierHead, stock),
            {
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": f"mmseg's {stock.__name__} with a text classifier in place of its conv_seg.",
            },
        )
        globals().setdefault(name, cls)
        _HEAD_CLASSES[stock] = cls
    return cls


@MODELS.register_module()
class TextClassifierHead(BaseDecodeHead):
    """A stock mmseg decode head whose ``conv_seg`` is a :class:`TextConvSeg` over ``text_classifier``.

    Args:
        head_type: the stock head (``'FCNHead'``, ``'UPerHead'``, ``'PSPHead'``...): the built object is an
            instance of it (see :func:`text_classifier_head_class`).
        text_classifier: the :class:`VocabularyClassifier` arguments (``classes``, ``split``, ``prompt`` ...).
        **head_args: the stock head's arguments. ``num_classes`` is the number of classes in
            ``text_classifier['classes']`` (a differing value inherited from a stock config is replaced, and logged).

    Raises:
        ValueError: no ``text_classifier``, or ``out_channels`` set to anything but the number of classes.
    """

    def __new__(cls, head_type: str | type | None = None, text_classifier: dict | None = None, **head_args):
        if cls is TextClassifierHead:
            if head_type is None:
                raise ValueError("TextClassifierHead needs head_type: the stock decode head to build, e.g. 'FCNHead'")
            cls = text_classifier_head_class(head_type)
        return super().__new__(cls)

    def __init__(self, head_type: str | type | None = None, text_classifier: dict | None = None, **head_args):
        if not text_classifier:
            raise ValueError(
                "TextClassifierHead needs text_classifier=dict(classes=..., prompt=... | "
                "hard_prompt=... | embedding_file=...)"
            )
        classifier = VocabularyClassifier(**text_classifier)
        num_classes = classifier.num_classes
        if head_args.get("out_channels") not in (None, num_classes):
            raise ValueError(
                f"TextClassifierHead scores {num_classes} classes, so out_channels must be "
                f"{num_classes} (got {head_args['out_channels']}); binary out_channels=1 heads are "
                "not supported"
            )
        if head_args.get("num_classes", num_classes) != num_classes:
            print_log(
                f"TextClassifierHead: num_classes {head_args['num_classes']} -> {num_classes} "
                f"(the classes of {classifier.vocabulary.name!r})",
                logger="current",
            )
        super().__init__(**{**head_args, "num_classes": num_classes})  # the stock head's __init__ (MRO)
        replace_conv_seg(self, classifier)
