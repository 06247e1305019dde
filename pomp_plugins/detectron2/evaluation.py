"""Evaluators: detectron2's ``LVISEvaluator`` (AP, APr/APc/APf) and ``COCOEvaluator``, chosen by dataset."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, LVISEvaluator

from .config import PompConfigError
from .vocabulary import config_num_classes


@contextlib.contextmanager
def numpy_float_alias() -> Iterator[None]:
    """``np.float`` (removed in numpy 1.24, still used by ``lvis`` 0.5.3's evaluation) as ``float``, only inside."""
    added = not hasattr(np, "float")
    if added:
        np.float = float
    try:
        yield
    finally:
        if added:
            del np.float


class LVISEvaluatorNumpyCompat(LVISEvaluator):
    """detectron2's ``LVISEvaluator``, runnable with numpy >= 1.24."""

    def evaluate(self):
        with numpy_float_alias():
            return super().evaluate()


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """LVIS evaluation for LVIS-format datasets, COCO evaluation for COCO ones (by ``evaluator_type``)."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind == "lvis":
        return LVISEvaluatorNumpyCompat(dataset_name, output_dir=output_folder,
                                        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
    if kind == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)  # COCO's own 100 detections per image
    raise PompConfigError(f"no evaluator for dataset {dataset_name!r} (evaluator_type {kind!r}); register it with "
                          "format lvis or coco")


def check_test_classes(cfg: CfgNode, dataset_name: str) -> None:
    """Raise ``PompConfigError`` unless the inference vocabulary has as many classes as the (loaded) dataset."""
    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    index = list(cfg.DATASETS.TEST).index(dataset_name) if dataset_name in cfg.DATASETS.TEST else None
    expected = config_num_classes(cfg, test=True, dataset_index=index)
    if classes is not None and len(classes) != expected:
        raise PompConfigError(f"dataset {dataset_name!r} has {len(classes)} classes but the inference vocabulary "
                              f"has {expected}; set MODEL.POMP.TEST_VOCABULARY (or, per test set with MODEL.RESET_CLS_TESTS, "
                              "MODEL.POMP.TEST_VOCABULARIES) to the dataset's classes in its order, e.g. "
                              "train_net.py --test-vocabulary coco")
