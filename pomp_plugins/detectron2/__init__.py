"""POMP for detectron2: a Detic-style open-vocabulary detector whose classifier is a POMP prompt's text embeddings.

Importing this package registers ``PompRCNN`` (META_ARCH_REGISTRY), ``PompCascadeROIHeads`` and
``PompStandardROIHeads`` (ROI_HEADS_REGISTRY). Imports the prompt core and detectron2 only.
"""
from .config import PompConfigError, add_pomp_config, without_federated_loss
from .data import DATASET_FORMATS, DatasetFormatError, class_metadata, register_dataset, register_datasets_from_config
from .evaluation import LVISEvaluatorNumpyCompat, build_evaluator, check_test_classes
from .fast_rcnn import ZeroShotFastRCNNOutputLayers
from .loader import DatasetRatioSampler, build_train_loader
from .rcnn import PompRCNN
from .roi_heads import PompCascadeROIHeads, PompStandardROIHeads
from .vocabulary import (
    config_class_embeddings,
    config_metadata,
    parse_vocabulary,
    set_class_embeddings,
    set_vocabulary,
    vocabulary_metadata,
)
from .zero_shot import ZeroShotBoxClassifier

__all__ = [
    "PompConfigError", "add_pomp_config", "without_federated_loss", "DATASET_FORMATS", "DatasetFormatError",
    "class_metadata", "register_dataset", "register_datasets_from_config", "LVISEvaluatorNumpyCompat",
    "build_evaluator", "check_test_classes", "ZeroShotFastRCNNOutputLayers", "DatasetRatioSampler",
    "build_train_loader", "PompRCNN", "PompCascadeROIHeads", "PompStandardROIHeads", "config_class_embeddings",
    "config_metadata", "parse_vocabulary", "set_class_embeddings", "set_vocabulary", "vocabulary_metadata",
    "ZeroShotBoxClassifier",
]
