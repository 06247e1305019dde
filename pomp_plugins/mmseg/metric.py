"""mIoU of seen classes, of unseen classes and their harmonic mean (hIoU), on top of mmseg's ``IoUMetric``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

from .vocabulary import SplitSpec, load_split, vocabulary_for_keys


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``; 0 when both are 0, NaN when either is NaN."""
    return 2 * a * b / (a + b) if a + b > 0 else (float("nan") if np.isnan(a + b) else 0.0)


def split_mious(iou: np.ndarray, seen: np.ndarray, unseen: np.ndarray) -> dict[str, float]:
    """``mIoU``, ``mIoU_seen``, ``mIoU_unseen`` and ``hIoU`` (percent) from per-class IoU (NaN: class absent)."""

    def mean(values: np.ndarray) -> float:
        values = values[~np.isnan(values)]
        return float(values.mean() * 100) if len(values) else float("nan")

    seen_miou, unseen_miou = mean(iou[seen]), mean(iou[unseen])
    return dict(
        mIoU=mean(iou), mIoU_seen=seen_miou, mIoU_unseen=unseen_miou, hIoU=harmonic_mean(seen_miou, unseen_miou)
    )


@METRICS.register_module()
class ZeroShotIoUMetric(IoUMetric):
    """``IoUMetric`` that also reports seen mIoU, unseen mIoU and hIoU for a zero-shot split.

    Returns ``aAcc``, ``mIoU``, ``mAcc`` and, with a split, ``mIoU_seen``, ``mIoU_unseen`` and ``hIoU`` (all in
    percent); with ``classwise=True`` also ``IoU.<class>`` per class. The per-class table (IoU, Acc, seen/unseen)
    is always logged.

    Args:
        split: the zero-shot split (see :func:`load_split`), or ``None`` for plain mIoU (cross-dataset tests).
        classwise: add every class's IoU to the returned metrics.
        Other arguments as ``IoUMetric`` (only ``iou_metrics=['mIoU']`` is supported).

    Raises:
        VocabularyError: when the dataset's classes become known (the test loop is built), a split class that is
            not one of them.
    """

    def __init__(self, split: SplitSpec | None = None, classwise: bool = False, **kwargs):
        if kwargs.get("iou_metrics", ["mIoU"]) != ["mIoU"]:
            raise ValueError(f"ZeroShotIoUMetric computes mIoU only, got iou_metrics={kwargs['iou_metrics']}")
        super().__init__(**kwargs)
        self.split = load_split(split) if split is not None else None
        self.classwise = classwise

    @IoUMetric.dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        self._dataset_meta = dataset_meta
        if self.split is not None and dataset_meta is not None:
            self._masks = tuple(m.numpy() for m in self.split.masks(vocabulary_for_keys(dataset_meta["classes"])))

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta["classes"])
        for data_sample in data_samples:
            predicted = data_sample.get("seg_logits", {}).get("data")
            if predicted is not None and predicted.shape[0] not in (1, num_classes):
                raise ValueError(
                    f"the model scores {predicted.shape[0]} classes but the dataset has {num_classes}: "
                    "give the head the dataset's classes (text_classifier.classes)"
                )
        super().process(data_batch, data_samples)

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only:
            return super().compute_metrics(results)
        intersect, union, _, label = (sum(r) for r in zip(*results))
        iou = (intersect / union).double().numpy()
        acc = (intersect / label).double().numpy()
        classes = self.dataset_meta["classes"]
        seen, unseen = self._masks if self.split is not None else (np.zeros(len(iou), bool),) * 2

        metrics = OrderedDict(aAcc=float(intersect.sum() / label.sum()) * 100)
        scores = split_mious(iou, seen, unseen)
        metrics["mIoU"] = scores["mIoU"]
        metrics["mAcc"] = float(np.nanmean(acc) * 100)
        if self.split is not None:
            metrics.update((k, scores[k]) for k in ("mIoU_seen", "mIoU_unseen", "hIoU"))
        if self.classwise:
            metrics.update((f"IoU.{name}", float(v * 100)) for name, v in zip(classes, iou))
        metrics = OrderedDict((k, round(v, 2)) for k, v in metrics.items())

        table = PrettyTable()
        table.add_column("Class", list(classes))
        table.add_column("IoU", np.round(iou * 100, 2).tolist())
        table.add_column("Acc", np.round(acc * 100, 2).tolist())
        if self.split is not None:
            table.add_column("Split", ["seen" if s else "unseen" if u else "-" for s, u in zip(seen, unseen)])
        logger: MMLogger = MMLogger.get_current_instance()
        print_log("per class results:", logger)
        print_log("\n" + table.get_string(), logger=logger)
        return metrics
