"""Images for both pre-training and zero-shot classification: ImageFolder-style trees and the datasets reading them
(unreadable images skipped, not fatal), features of CLIP's frozen image tower, and zero-shot accuracy. Imports the
prompt core only; ``pretrain`` and ``classification`` both build on it and never import each other."""

from .accuracy import AccuracyCounts, evaluate
from .features import compiled_image_encoder, image_features
from .folder import (
    Batch,
    ImageFolderIndex,
    ImageListDataset,
    Sample,
    Skipped,
    class_names,
    collate_skipping,
    load_rgb,
    read_class_mapping,
)

__all__ = [
    "AccuracyCounts",
    "evaluate",
    "compiled_image_encoder",
    "image_features",
    "Batch",
    "ImageFolderIndex",
    "ImageListDataset",
    "Sample",
    "Skipped",
    "class_names",
    "collate_skipping",
    "load_rgb",
    "read_class_mapping",
]
