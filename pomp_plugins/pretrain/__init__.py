"""POMP prompt pre-training: few-shot ImageNet-21K-style data, the local-contrast step, the training loop
(one process or torchrun), checkpoints and the feature cache."""

from .config import PretrainConfig
from .objective import PompStep, group_negatives, image_feature_function
from .split import FewShotSplit, draw_split
from .trainer import pretrain

__all__ = [
    "PretrainConfig",
    "PompStep",
    "image_feature_function",
    "group_negatives",
    "FewShotSplit",
    "draw_split",
    "pretrain",
]
