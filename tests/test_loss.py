"""POMP's loss against a case computed by hand."""

import math

import pytest
import torch

from pomp_plugins.prompt import correction_margin, plan_local_contrast, pomp_loss, sample_negatives


def test_margin_matches_the_paper_number():
    # m = log10((N-1)/(K-1)) = 1.02 at K = 1000, N = 10,450 (log10 as in the released code).
    m = correction_margin(10_450, 1000, torch.tensor([0, 1]))
    assert m[0].item() == pytest.approx(math.log10(10_449 / 999))
    assert round(m[0].item(), 2) == 1.02
    assert m[1].item() == pytest.approx(math.log10(10_449 / 998))
    assert correction_margin(10_450, 1000, torch.tensor([0]), log_base=math.e).item() == pytest.approx(
        math.log(10_449 / 999)
    )


def test_loss_equals_hand_computation_with_a_masked_positive():
    # N = 6 classes, K = 3 (2 sampled negatives: classes 2 and 4); image 0 is class 2 (sampled), image 1 class 0.
    text = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 1.0], [-1.0, 0.2], [0.3, -1.0]]), dim=-1
    )
    images = torch.nn.functional.normalize(torch.tensor([[0.5, 1.0], [1.0, -0.3]]), dim=-1)
    labels, negatives = torch.tensor([2, 0]), torch.tensor([2, 4])
    plan = plan_local_contrast(labels, negatives)
    assert plan.classes.tolist() == [0, 2, 4]
    scale, n, k = 10.0, 6, 3

    loss = pomp_loss(images, text[plan.classes], plan, scale, n, log_base=10)

    def cos(i, c):
        return float(images[i] @ text[c])

    # image 0: its own class 2 was sampled -> masked, r=1, margin log10(5/1); only negative 4 remains
    m0 = math.log10((n - 1) / (k - 1 - 1))
    logits0 = [scale * cos(0, 2), scale * cos(0, 4) + m0]
    # image 1: r=0, margin log10(5/2), negatives 2 and 4
    m1 = math.log10((n - 1) / (k - 1))
    logits1 = [scale * cos(1, 0), scale * cos(1, 2) + m1, scale * cos(1, 4) + m1]
    expected = sum(-l[0] + math.log(sum(math.exp(v) for v in l)) for l in (logits0, logits1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    no_correction = pomp_loss(images, text[plan.classes], plan, scale, n, log_base=None)
    plain0 = [logits0[0], logits0[1] - m0]
    plain1 = [logits1[0], logits1[1] - m1, logits1[2] - m1]
    expected_plain = sum(-l[0] + math.log(sum(math.exp(v) for v in l)) for l in (plain0, plain1)) / 2
    assert no_correction.item() == pytest.approx(expected_plain, rel=1e-5)


def test_negatives_are_distinct_uniform_and_seeded():
    a = sample_negatives(100, 11, torch.Generator().manual_seed(3))
    b = sample_negatives(100, 11, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(a) == 10 and len(set(a.tolist())) == 10
    counts = torch.zeros(20)
    g = torch.Generator().manual_seed(0)
    for _ in range(2000):
        counts[sample_negatives(20, 6, g)] += 1
    assert (counts / 2000).sub(5 / 20).abs().max() < 0.04
    with pytest.raises(ValueError, match="between 2 and the number of classes 20"):
        sample_negatives(20, 21)


def test_each_distinct_class_is_encoded_once():
    plan = plan_local_contrast(torch.tensor([3, 3, 7, 1]), torch.tensor([7, 9, 0]))
    assert plan.classes.tolist() == [0, 1, 3, 7, 9]
    assert plan.classes[plan.positive_index].tolist() == [3, 3, 7, 1]
    assert plan.classes[plan.negative_index].tolist() == [7, 9, 0]


def test_sample_sizes_at_the_bounds_and_the_margin_without_any_real_negative():
    everything_but_one = sample_negatives(20, 20).tolist()
    assert len(sample_negatives(20, 2)) == 1 and len(set(everything_but_one)) == 19 and max(everything_but_one) < 20
    with pytest.raises(ValueError, match="between 2 and the number of classes 20, got 1"):
        sample_negatives(20, 1)
    # K = 2 and the one negative is the row's own class: K-1-r = 0 is clamped to 1 (the row has no real negative)
    assert correction_margin(10, 2, torch.tensor([1, 0])).tolist() == pytest.approx([math.log10(9)] * 2)
    assert correction_margin(10, 5, torch.tensor([1])).dtype == torch.float32


def test_margins_are_per_row_with_more_rows_than_negatives_and_base_10_by_default():
    # 3 images, K-1 = 2 negatives (classes 1 and 4); only image 1 (class 4) has its class sampled
    text = torch.nn.functional.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    labels, negatives = torch.tensor([0, 4, 2]), torch.tensor([1, 4])
    plan = plan_local_contrast(labels, negatives)
    n, k, scale = 5, 3, 20.0
    rows = []
    for i, label in enumerate(labels.tolist()):
        hit = label in negatives.tolist()
        margin = math.log10((n - 1) / (k - 1 - hit))
        logits = [scale * float(images[i] @ text[label])]
        logits += [scale * float(images[i] @ text[c]) + margin for c in negatives.tolist() if c != label]
        rows.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
    loss = pomp_loss(images, text[plan.classes], plan, scale, n)  # the default base: 10
    assert loss.item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    moved = plan.to("cpu")
    assert all(
        torch.equal(getattr(moved, f), getattr(plan, f))
        for f in ("classes", "labels", "negatives", "positive_index", "negative_index")
    )
