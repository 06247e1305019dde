"""POMP for MMSegmentation: importing this package registers into mmseg's registries

- ``MODELS``: ``ZSSegHead`` (mask proposals classified against text embeddings), ``ZSSegEncoderDecoder`` (hands
  the images to the head for the CLIP stage) and ``TextClassifierHead`` (any stock head with a text classifier
  in place of ``conv_seg``);
- ``METRICS``: ``ZeroShotIoUMetric`` (seen / unseen mIoU and hIoU);
- ``TRANSFORMS``: ``IgnoreUnseenClasses`` (unseen pixels become ``ignore_index`` in training).

Configs load it with ``custom_imports = dict(imports=['pomp_plugins.mmseg'], allow_failed_imports=False)``.
Importing it also lets ``torch.load``'s default ``weights_only=True`` read mmengine's checkpoints (see ``checkpoint``),
so mmseg's own ``tools/train.py`` / ``tools/test.py`` run our configs unchanged.
Imports the prompt core and mmseg / mmengine / mmcv, never detectron2.
"""

from .checkpoint import CHECKPOINT_GLOBALS
from .classifier import VocabularyClassifier
from .drop_in import TextClassifierHead, TextConvSeg, replace_conv_seg, text_classifier_head_class
from .metric import ZeroShotIoUMetric, split_mious
from .segmentor import ZSSegEncoderDecoder, set_vocabulary, text_classifier_of
from .transforms import IgnoreUnseenClasses
from .vocabulary import ZeroShotSplit, available_splits, load_split, resolve_classes, vocabulary_for_keys
from .zsseg_head import ZSSegHead

__all__ = [
    "CHECKPOINT_GLOBALS",
    "VocabularyClassifier",
    "TextClassifierHead",
    "TextConvSeg",
    "replace_conv_seg",
    "text_classifier_head_class",
    "ZeroShotIoUMetric",
    "split_mious",
    "ZSSegEncoderDecoder",
    "set_vocabulary",
    "text_classifier_of",
    "IgnoreUnseenClasses",
    "ZeroShotSplit",
    "available_splits",
    "load_split",
    "resolve_classes",
    "vocabulary_for_keys",
    "ZSSegHead",
]
