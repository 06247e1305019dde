"""ZeroShotIoUMetric against a hand-computed case, and its errors."""

import math

import pytest
import torch

from pomp_plugins.mmseg import ZeroShotIoUMetric
from pomp_plugins.mmseg import metric as metric_module
from pomp_plugins.mmseg.metric import harmonic_mean
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


def test_harmonic_mean_whichever_is_larger_below_one_and_at_zero():
    assert harmonic_mean(20.0, 80.0) == harmonic_mean(80.0, 20.0) == pytest.approx(2 * 20 * 80 / 100)
    assert harmonic_mean(0.5, 0.25) == pytest.approx(2 * 0.5 * 0.25 / 0.75)  # a sum below 1 is still a sum
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(0.0, 40.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 40.0)) and math.isnan(harmonic_mean(40.0, float("nan")))


def test_the_logged_table_and_per_class_values_with_unround_ious(monkeypatch):
    """IoU and Acc per class in percent, rounded to 2 decimals, and the split of each class, in the logged table;
    mAcc the mean of the per-class accuracies (written out from the pixel counts)."""
    logged = []
    monkeypatch.setattr(metric_module, "print_log", lambda message, logger=None: logged.append(message))
    # cat: pred 2, label 3, intersect 2 -> IoU 2/3, Acc 2/3; dog: pred 5, label 3, intersect 3 -> IoU 3/5, Acc 1
    # sheep: pred 0, label 0 -> absent (NaN); sofa: label 1 (ignored pixel 255 aside), pred 0 -> IoU 0, Acc 0
    m = metric(classwise=True)
    m.process({}, [sample([[0, 0, 1, 1], [1, 1, 1, 0]], [[0, 0, 0, 1], [1, 1, 3, 255]])])
    result = m.compute_metrics(m.results)
    assert result["IoU.cat"] == 66.67 and result["IoU.dog"] == 60.0 and result["IoU.sofa"] == 0.0
    assert math.isnan(result["IoU.sheep"])
    assert result["mAcc"] == round(100 * (2 / 3 + 1 + 0) / 3, 2)
    assert result["aAcc"] == round(100 * 5 / 7, 2)
    assert result["mIoU_seen"] == round(100 * (2 / 3 + 3 / 5) / 2, 2) and result["mIoU_unseen"] == 0.0
    assert len(logged) == 2 and logged[0] == "per class results:"
    table = logged[1].strip().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table if line.startswith("|")]
    assert rows == [
        ["Class", "IoU", "Acc", "Split"],
        ["cat", "66.67", "66.67", "seen"],
        ["dog", "60.0", "100.0", "seen"],
        ["sheep", "nan", "nan", "unseen"],
        ["sofa", "0.0", "0.0", "unseen"],
    ]
    logged.clear()
    plain = ZeroShotIoUMetric()
    plain.dataset_meta = dict(classes=CLASSES)
    plain.process({}, [sample([[0, 1]], [[0, 1]])])
    plain.compute_metrics(plain.results)
    assert "Split" not in logged[-1] and "cat" in logged[-1]


def test_a_binary_model_is_accepted_and_format_only_returns_no_metrics(tmp_path):
    m = metric()
    m.process({}, [sample([[0, 1]], [[0, 1]], num_classes=1)])  # one channel: a binary head, as mmseg allows
    with pytest.raises(ValueError, match="scores 2 classes but the dataset has 4"):
        m.process({}, [sample([[0]], [[0]], num_classes=2)])
    formatting = metric(format_only=True, output_dir=str(tmp_path))
    formatting.process({}, [dict(sample([[0, 1]], [[0, 1]]), img_path="a/b.jpg")])
    assert (tmp_path / "b.png").is_file() and formatting.compute_metrics(formatting.results) == {}
