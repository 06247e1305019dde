"""ZeroShotIoUMetric against a hand-computed case, and its errors."""

import math

import pytest
import torch

from pomp_plugins.mmseg import ZeroShotIoUMetric
from pomp_plugins.prompt import VocabularyError

CLASSES = ("cat", "dog", "sheep", "sofa")


def sample(pred, label, num_classes=4):
    return dict(
        pred_sem_seg=dict(data=torch.tensor([pred])),
        gt_sem_seg=dict(data=torch.tensor([label])),
        seg_logits=dict(data=torch.zeros(num_classes, len(pred), len(pred[0]))),
    )


def metric(**kwargs) -> ZeroShotIoUMetric:
    m = ZeroShotIoUMetric(split=dict(unseen=["sheep", "sofa"]), **kwargs)
    m.dataset_meta = dict(classes=CLASSES)
    return m


def test_metric_equals_hand_computed_values():
    # class ids: 0 cat, 1 dog (seen); 2 sheep, 3 sofa (unseen); 255 ignored
    label = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255], [2, 2, 255, 255]]
    pred = [[0, 0, 0, 1], [0, 1, 1, 1], [2, 2, 3, 3], [3, 2, 0, 0]]
    # cat: pred at (0,0)(0,1)(0,2)(1,0) -> 4 valid; label 4; intersect 3 -> IoU 3 / 5
    # dog: pred (0,3)(1,1)(1,2)(1,3) -> 4; label 4; intersect 3 -> 3 / 5
    # sheep: pred (2,0)(2,1)(3,1) -> 3; label 5; intersect 3 -> 3 / 5
    # sofa: pred (2,2)(3,0) valid -> 2 ((2,3) ignored); label 0 -> IoU 0 / 2 = 0
    m = metric(classwise=True)
    m.process({}, [sample(pred, label)])
    result = m.compute_metrics(m.results)
    seen, unseen = 60.0, (60.0 + 0.0) / 2
    assert result["IoU.cat"] == result["IoU.dog"] == result["IoU.sheep"] == 60.0 and result["IoU.sofa"] == 0.0
    assert result["mIoU_seen"] == seen and result["mIoU_unseen"] == unseen
    assert result["mIoU"] == 45.0
    assert result["hIoU"] == round(2 * seen * unseen / (seen + unseen), 2) == 40.0
    assert result["aAcc"] == round(100 * 9 / 13, 2)


def test_absent_class_is_left_out_of_means_and_plain_miou_without_split():
    m = ZeroShotIoUMetric(split=None)
    m.dataset_meta = dict(classes=CLASSES)
    m.process({}, [sample([[0, 1]], [[0, 1]])])
    result = m.compute_metrics(m.results)
    assert result["mIoU"] == 100.0 and "hIoU" not in result


def test_unseen_classes_never_present_give_nan_hiou():
    m = metric()
    m.process({}, [sample([[0, 1]], [[0, 1]])])
    result = m.compute_metrics(m.results)
    assert result["mIoU_seen"] == 100.0 and math.isnan(result["mIoU_unseen"]) and math.isnan(result["hIoU"])


def test_split_class_missing_from_dataset_fails_when_classes_are_known():
    m = ZeroShotIoUMetric(split=dict(unseen=["unicorn"]))
    with pytest.raises(VocabularyError, match="unicorn"):
        m.dataset_meta = dict(classes=CLASSES)


def test_model_scoring_other_classes_than_the_dataset_is_an_error():
    m = metric()
    with pytest.raises(ValueError, match="scores 6 classes but the dataset has 4"):
        m.process({}, [sample([[0]], [[0]], num_classes=6)])
