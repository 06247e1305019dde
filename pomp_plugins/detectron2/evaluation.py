"""Evaluators: detectron2's ``LVISEvaluator`` (AP, APr/APc/APf) and ``COCOEvaluator``, chosen by dataset, and
Detic's open-vocabulary COCO one (AP50 of the 48 seen and the 17 unseen classes as well)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


#: The open-vocabulary COCO split (Bansal et al. 2018, Detic's ``coco_zeroshot``): the 17 unseen classes; the
#: 48 seen ones are ``OV_COCO_SEEN``; the other 15 COCO classes are in neither.
OV_COCO_UNSEEN = (
    "airplane",
    "bus",
    "cat",
    "dog",
    "cow",
    "elephant",
    "umbrella",
    "tie",
    "snowboard",
    "skateboard",
    "cup",
    "knife",
    "cake",
    "couch",
    "keyboard",
    "sink",
    "scissors",
)
OV_COCO_SEEN = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "train",
    "truck",
    "boat",
    "bench",
    "bird",
    "horse",
    "sheep",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "handbag",
    "suitcase",
    "frisbee",
    "skis",
    "kite",
    "surfboard",
    "bottle",
    "fork",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "pizza",
    "donut",
    "chair",
    "bed",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "microwave",
    "oven",
    "toaster",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "toothbrush",
)
#: Detic evaluates this dataset (the generalized zero-shot COCO val) with the seen/unseen AP50.
OV_COCO_TEST = "coco_generalized_zeroshot_val"


class OpenVocabularyCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` that also reports ``AP50-seen`` and ``AP50-unseen``: the mean AP at IoU 0.5 over the
    classes of ``OV_COCO_SEEN`` / ``OV_COCO_UNSEEN`` found in the dataset (Detic's ``CustomCOCOEvaluator``)."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None or not class_names or len(class_names) <= 1:
            return results
        precisions = coco_eval.eval["precision"]  # [IoU, recall, class, area, max dets]
        for split, names in (("seen", OV_COCO_SEEN), ("unseen", OV_COCO_UNSEEN)):
            ap50 = []
            for idx, name in enumerate(class_names):
                if name in names:
                    precision = precisions[0, :, idx, 0, -1]
                    precision = precision[precision > -1]
                    ap50.append(float(np.mean(precision)) * 100 if precision.size else float("nan"))
            results[f"AP50-{split}"] = sum(ap50) / len(ap50) if ap50 else float("nan")
            self._logger.info(f"{split.capitalize()} {iou_type} AP50: {results[f'AP50-{split}']:.3f}")
        return results


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
    """LVIS evaluation for LVIS-format datasets, COCO evaluation for COCO ones (by ``evaluator_type``)."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind == "lvis":
        return LVISEvaluatorNumpyCompat(
            dataset_name, output_dir=output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
        )
    if kind == "coco":
        evaluator = OpenVocabularyCOCOEvaluator if dataset_name == OV_COCO_TEST else COCOEvaluator
        return evaluator(dataset_name, output_dir=output_folder)  # COCO's own 100 detections per image
    raise PompConfigError(
        f"no evaluator for dataset {dataset_name!r} (evaluator_type {kind!r}); register it with format lvis or coco"
    )


def check_test_classes(cfg: CfgNode, dataset_name: str) -> None:
    """Raise ``PompConfigError`` unless the inference vocabulary has as many classes as the (loaded) dataset."""
    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    index = list(cfg.DATASETS.TEST).index(dataset_name) if dataset_name in cfg.DATASETS.TEST else None
    expected = config_num_classes(cfg, test=True, dataset_index=index)
    if classes is not None and len(classes) != expected:
        raise PompConfigError(
            f"dataset {dataset_name!r} has {len(classes)} classes but the inference vocabulary "
            f"has {expected}; set MODEL.POMP.TEST_VOCABULARY (or, per test set with "
            "MODEL.RESET_CLS_TESTS, MODEL.POMP.TEST_VOCABULARIES) to the dataset's classes in its "
            "order, e.g. train_net.py --test-vocabulary coco"
        )
