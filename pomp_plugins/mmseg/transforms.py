"""Data transforms for zero-shot training."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from pomp_plugins.prompt import get_vocabulary

from .vocabulary import ClassesSpec, SplitSpec, load_split, resolve_classes


@TRANSFORMS.register_module()
class IgnoreUnseenClasses(BaseTransform):
    """Set the pixels of every class outside the split's seen set to ``ignore_index`` in ``gt_seg_map``, so
    training never sees them as targets. Put it right after ``LoadAnnotations`` in the train pipeline.

    Args:
        split: a zero-shot split (see :func:`load_split`).
        classes: the dataset's class list, in label order (see :func:`resolve_classes`); default: the vocabulary
            the split names (``coco-stuff`` for ``coco-stuff-156-15``).
        ignore_index: the label of ignored pixels.
    """

    def __init__(self, split: SplitSpec, classes: ClassesSpec | None = None, ignore_index: int = 255):
        self.split = load_split(split)
        if classes is None:
            vocabulary = self.split.vocabulary
            if vocabulary is None:
                raise ValueError(f"IgnoreUnseenClasses: split {self.split.name!r} names no vocabulary: give classes=")
            classes = get_vocabulary(vocabulary)
        seen, _ = self.split.masks(resolve_classes(classes))
        self.ignore_index = ignore_index
        self.untrained = np.flatnonzero(~seen.numpy())

    def transform(self, results: dict) -> dict:
        labels = results["gt_seg_map"].copy()
        labels[np.isin(labels, self.untrained)] = self.ignore_index
        results["gt_seg_map"] = labels
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split.name!r}, ignore_index={self.ignore_index})"
