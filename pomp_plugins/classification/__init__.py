"""Zero-shot image classification with POMP prompts: image-folder datasets, image features, accuracy."""

from .image_folder import ImageFolder, ImageListDataset, class_names, collate_skipping, load_rgb
from .zeroshot import AccuracyCounts, evaluate, image_features

__all__ = [
    "ImageFolder",
    "ImageListDataset",
    "class_names",
    "collate_skipping",
    "load_rgb",
    "AccuracyCounts",
    "evaluate",
    "image_features",
]
