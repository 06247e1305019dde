"""POMP for detectron2: Detic's open-vocabulary detector whose classifier is a POMP prompt's text embeddings.

Importing this package registers (under names of its own, Detic's being ``DETIC_NAMES``' keys) ``PompRCNN``
(META_ARCH_REGISTRY), ``PompCascadeROIHeads``, ``PompRes5ROIHeads`` and ``PompStandardROIHeads``
(ROI_HEADS_REGISTRY), ``build_pomp_p67_timm_fpn_backbone`` and ``build_pomp_swin_fpn_backbone``
(BACKBONE_REGISTRY); importing ``centernet`` (CenterNet2) registers the ``CenterNet`` proposal generator.
Imports the prompt core, detectron2, centernet and timm only.
"""

from .backbone import build_pomp_p67_timm_fpn_backbone, build_pomp_swin_fpn_backbone
from .config import DETIC_NAMES, PompConfigError, add_pomp_config, use_pomp_names
from .data import (
    DATASET_FORMATS,
    DatasetFormatError,
    class_metadata,
    load_class_freq,
    register_dataset,
    register_datasets_from_config,
)
from .evaluation import LVISEvaluatorNumpyCompat, build_evaluator, check_test_classes
from .fast_rcnn import ZeroShotFastRCNNOutputLayers
from .loader import DatasetRatioSampler, build_train_loader
from .rcnn import PompRCNN
from .roi_heads import PompCascadeROIHeads, PompRes5ROIHeads, PompStandardROIHeads
from .vocabulary import (
    config_metadata,
    inference_class_embeddings,
    parse_vocabulary,
    set_class_embeddings,
    set_test_classifier,
    set_vocabulary,
    training_class_embeddings,
    vocabulary_metadata,
)
from .zero_shot import ZeroShotBoxClassifier

__all__ = [
    "build_pomp_p67_timm_fpn_backbone",
    "build_pomp_swin_fpn_backbone",
    "DETIC_NAMES",
    "PompConfigError",
    "add_pomp_config",
    "use_pomp_names",
    "DATASET_FORMATS",
    "DatasetFormatError",
    "class_metadata",
    "register_dataset",
    "register_datasets_from_config",
    "LVISEvaluatorNumpyCompat",
    "build_evaluator",
    "check_test_classes",
    "ZeroShotFastRCNNOutputLayers",
    "load_class_freq",
    "DatasetRatioSampler",
    "build_train_loader",
    "PompRCNN",
    "PompCascadeROIHeads",
    "PompRes5ROIHeads",
    "PompStandardROIHeads",
    "training_class_embeddings",
    "config_metadata",
    "inference_class_embeddings",
    "parse_vocabulary",
    "set_class_embeddings",
    "set_test_classifier",
    "set_vocabulary",
    "vocabulary_metadata",
    "ZeroShotBoxClassifier",
]
