"""Detic's box predictor piece by piece, each against its formula written out here: the zero-shot classifier's
learned ("rand") weights, bias and class counts; the federated sigmoid and softmax losses, the ignored zero-count
classes, the box regression and the image-label loss; the probabilities and the proposal-score product at
inference. (tests/test_detic_parity.py compares whole models with Detic's own; these are the fast, local checks.)"""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from pomp_plugins.detectron2 import (
    PompConfigError,
    ZeroShotBoxClassifier,
    ZeroShotFastRCNNOutputLayers,
    add_pomp_config,
)
from pomp_plugins.detectron2.fast_rcnn import fed_loss_classes
from pomp_plugins.prompt import EmbeddingFileError

IN_FEATURES, DIM, NUM_CLASSES = 12, 8, 6
WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Elementwise sigmoid cross-entropy, -t log s(x) - (1 - t) log(1 - s(x)), written out."""
    return torch.log1p(torch.exp(-logits.abs())) + logits.clamp(min=0) - logits * targets


def predictor(zero_shot: bool = True, **kwargs) -> ZeroShotFastRCNNOutputLayers:
    torch.manual_seed(0)
    cls_score = ZeroShotBoxClassifier(IN_FEATURES, torch.randn(NUM_CLASSES, DIM), dim=DIM) if zero_shot else None
    args = dict(
        box2box_transform=Box2BoxTransform(weights=WEIGHTS),
        num_classes=NUM_CLASSES,
        cls_agnostic_bbox_reg=True,
        cls_score=cls_score,
        test_score_thresh=0.0,
        test_topk_per_image=100,
    )
    return ZeroShotFastRCNNOutputLayers(ShapeSpec(channels=IN_FEATURES), **{**args, **kwargs})


# --- the zero-shot classifier ----------------------------------------------------------------------------------------
def test_class_counts_bias_and_dimension_checks():
    classifier = ZeroShotBoxClassifier(32, torch.randn(5, 16), dim=16)
    assert (classifier.num_classes, classifier.num_test_classes, classifier.dim) == (5, 5, 16)
    classifier.set_test_class_embeddings(torch.randn(3, 16))
    assert (classifier.num_classes, classifier.num_test_classes) == (5, 3)
    assert classifier.cls_bias is None
    biased = ZeroShotBoxClassifier(32, torch.randn(5, 16), dim=16, use_bias=-0.5)  # any value below 0: a bias
    assert isinstance(biased.cls_bias, torch.nn.Parameter) and biased.cls_bias.tolist() == [-0.5]
    with pytest.raises(EmbeddingFileError, match="class embeddings are 8-d, the classifier expects 16"):
        ZeroShotBoxClassifier(32, torch.randn(5, 8), dim=16)
    with pytest.raises(ValueError, match="needs num_classes"):
        ZeroShotBoxClassifier(32, None, dim=16)


def test_learned_rand_classifier_is_detics_n0_001_with_a_zero_background_column():
    """Detic's "rand": a learned [D, C + 1] N(0, 0.01) zs_weight, zero background column, normalised columns
    with NORM_WEIGHT; the logits use it as it is (not normalised again)."""
    torch.manual_seed(0)
    raw = ZeroShotBoxClassifier(32, None, dim=64, num_classes=400, norm_weight=False)
    weight = raw.zs_weight.detach()
    assert weight.shape == (64, 401) and (weight[:, -1] == 0).all()
    assert weight[:, :-1].std().item() == pytest.approx(0.01, rel=0.03)
    assert weight[:, :-1].mean().abs().item() < 0.0005
    learned = ZeroShotBoxClassifier(32, None, dim=64, num_classes=400)
    torch.testing.assert_close(learned.zs_weight[:, :-1].norm(dim=0), torch.ones(400))
    with torch.no_grad():
        learned.zs_weight.mul_(torch.rand(1, 401) + 0.5)  # a trained classifier: columns of other norms
        learned.zs_weight[:, -1] = torch.randn(64)  # and a learned background column
        x = torch.randn(3, 32)
        features = x @ learned.linear.weight.t() + learned.linear.bias
        expected = 50.0 * features / features.norm(dim=1, keepdim=True) @ learned.zs_weight
        torch.testing.assert_close(learned(x), expected, atol=1e-4, rtol=1e-5)
        raw_expected = (x @ raw.linear.weight.t() + raw.linear.bias) @ raw.zs_weight  # no NORM_WEIGHT: plain product
        torch.testing.assert_close(raw(x), raw_expected, atol=1e-6, rtol=1e-5)


def test_the_learned_bias_is_added_to_every_logit_after_the_temperature():
    """USE_BIAS: logits = T * cos(x, w_c) + b for every class and the background (0 + b), b learned."""
    embeddings = torch.randn(4, 16)
    classifier = ZeroShotBoxClassifier(32, embeddings, dim=16, norm_temperature=20.0, use_bias=-2.0)
    with torch.no_grad():
        classifier.cls_bias.fill_(-3.25)
        x = torch.randn(5, 32)
        features = x @ classifier.linear.weight.t() + classifier.linear.bias
        cos = F.cosine_similarity(features[:, None], embeddings[None], dim=-1)
        expected = torch.cat([20.0 * cos, torch.zeros(5, 1)], dim=1) - 3.25
        torch.testing.assert_close(classifier(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(classifier(x, classifier=embeddings[[2, 0]] * 7.0), expected[:, [2, 0]])


# --- the federated loss's classes ------------------------------------------------------------------------------------
def test_fed_loss_classes_are_the_ground_truth_and_draws_weighted_by_frequency():
    weight = torch.tensor([0.0, 0.0, 3.0, 0.0, 2.0, 0.0])
    gt = torch.tensor([1, 1, 6, 5])  # 6: background
    for seed in range(3):  # two more classes drawn, and only 2 and 4 have weight: always {2, 4}
        torch.manual_seed(seed)
        assert sorted(fed_loss_classes(gt, 5, 6, weight).tolist()) == [1, 2, 4, 5, 6]
    assert sorted(fed_loss_classes(gt, 3, 6, weight).tolist()) == [1, 5, 6]  # enough classes already: no draw
    # a draw without replacement in proportion to the weights: P(class 1 first) = 3 / 4
    torch.manual_seed(0)
    draws = [fed_loss_classes(torch.tensor([0]), 2, 3, torch.tensor([5.0, 3.0, 1.0])).tolist() for _ in range(600)]
    assert all(len(d) == 2 and d[0] == 0 for d in draws)
    assert sum(d[1] == 1 for d in draws) / 600 == pytest.approx(0.75, abs=0.06)


# --- the losses ------------------------------------------------------------------------------------------------------
def test_sigmoid_ce_with_the_federated_loss_is_detics_formula():
    """sum over boxes and the federated classes of BCE(logit, one-hot without background) / boxes."""
    model = predictor(
        use_sigmoid_ce=True,
        use_fed_loss=True,
        fed_loss_num_cat=5,
        freq_weight=torch.tensor([0.0, 0.0, 3.0, 0.0, 2.0, 0.0]),
    )
    logits = torch.randn(4, NUM_CLASSES + 1) * 3
    gt = torch.tensor([1, 1, 6, 5])
    targets = torch.zeros(4, NUM_CLASSES)
    targets[[0, 1, 3], [1, 1, 5]] = 1
    classes = [1, 2, 4, 5]  # the ground truth's and the two with weight
    expected = bce(logits[:, classes], targets[:, classes]).sum() / 4
    torch.testing.assert_close(model.sigmoid_cross_entropy_loss(logits, gt), expected)
    assert model.sigmoid_cross_entropy_loss(logits[:0], gt[:0]).item() == 0.0


def test_sigmoid_ce_ignores_the_classes_without_training_images():
    """IGNORE_ZERO_CATS: classes of weight <= 1e-4 take no part; every other class does (no federated loss)."""
    freq = torch.tensor([1e-5, 2e-4, 1.0, 0.0, 0.5])  # shorter than the classes: zero-padded (ignored)
    model = predictor(use_sigmoid_ce=True, ignore_zero_cats=True, freq_weight=freq)
    assert model.freq_weight.tolist() == pytest.approx([1e-5, 2e-4, 1.0, 0.0, 0.5, 0.0])
    logits, gt = torch.randn(5, NUM_CLASSES + 1) * 3, torch.tensor([2, 0, 6, 4, 1])
    targets = F.one_hot(gt, NUM_CLASSES + 1)[:, :NUM_CLASSES].float()
    kept = [1, 2, 4]
    expected = bce(logits[:, kept], targets[:, kept]).sum() / 5
    torch.testing.assert_close(model.sigmoid_cross_entropy_loss(logits, gt), expected)


def test_softmax_ce_weights_ignored_classes_zero_and_the_federated_classes_one():
    logits, gt = torch.randn(5, NUM_CLASSES + 1) * 3, torch.tensor([2, 0, 6, 4, 1])
    nll = -logits.log_softmax(-1)[range(5), gt]
    plain = predictor()
    torch.testing.assert_close(plain.softmax_cross_entropy_loss(logits, gt), nll.mean())
    assert plain.softmax_cross_entropy_loss(logits[:0], gt[:0]).item() == 0.0

    ignoring = predictor(ignore_zero_cats=True, freq_weight=torch.tensor([1e-5, 2e-4, 1.0, 0.0, 0.5, 3.0]))
    w = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])[gt]  # background: 1
    torch.testing.assert_close(ignoring.softmax_cross_entropy_loss(logits, gt), (w * nll).sum() / w.sum())

    # the federated classes hold every target class, so their weights (1) leave the softmax CE as it is (in
    # Detic too); the drawn classes need weights (all zero fails)
    federated = predictor(use_fed_loss=True, fed_loss_num_cat=6, freq_weight=torch.tensor([0, 0, 0, 1.0, 0, 0]))
    torch.testing.assert_close(federated.softmax_cross_entropy_loss(logits, gt), nll.mean())
    federated.freq_weight.zero_()
    with pytest.raises(PompConfigError, match="all zero"):
        federated.softmax_cross_entropy_loss(logits, gt)


def test_losses_are_the_classification_loss_and_the_l1_box_loss_over_all_boxes():
    model = predictor(use_sigmoid_ce=True)
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 20, 20], [10, 10, 40, 30], [5, 5, 60, 60]]))
    proposals.gt_boxes = Boxes(torch.tensor([[2.0, 1, 22, 18], [12, 8, 44, 33], [0, 0, 1, 1]]))
    proposals.gt_classes = torch.tensor([3, 0, NUM_CLASSES])  # the last one background: no box loss
    scores, deltas = torch.randn(3, NUM_CLASSES + 1), torch.randn(3, 4)
    with EventStorage():
        losses = model.losses((scores, deltas), [proposals])
    targets = F.one_hot(proposals.gt_classes, NUM_CLASSES + 1)[:, :NUM_CLASSES].float()
    torch.testing.assert_close(losses["loss_cls"], bce(scores[:, :-1], targets).sum() / 3)
    box_targets = Box2BoxTransform(WEIGHTS).get_deltas(proposals.proposal_boxes.tensor, proposals.gt_boxes.tensor)
    torch.testing.assert_close(losses["loss_box_reg"], (deltas[:2] - box_targets[:2]).abs().sum() / 3)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    with EventStorage():  # a batch without proposals: zero losses
        empty = model.losses((scores[:0], deltas[:0]), [])
    assert {k: v.item() for k, v in empty.items()} == {"loss_cls": 0.0, "loss_box_reg": 0.0}


def test_federated_loss_needs_class_weights():
    with pytest.raises(PompConfigError, match="CAT_FREQ_PATH"):
        predictor(use_fed_loss=True)
    with pytest.raises(PompConfigError, match="CAT_FREQ_PATH"):
        predictor(ignore_zero_cats=True)
    model = predictor(use_sigmoid_ce=True, use_fed_loss=True, freq_weight=torch.zeros(NUM_CLASSES))
    with pytest.raises(PompConfigError, match="all zero"):
        model.sigmoid_cross_entropy_loss(torch.randn(2, NUM_CLASSES + 1), torch.tensor([0, 1]))


def test_the_image_label_loss_as_softmax_and_with_an_image_without_proposals():
    """SOFTMAX_WEAK_LOSS: softmax CE of the largest proposal (the last left out) per label; an image without
    proposals adds 0 but still counts in the mean over images."""
    model = predictor(softmax_weak_loss=True, image_loss_weight=0.25)
    proposals = []
    for boxes in ([[0, 0, 10, 10], [0, 0, 50, 40], [0, 0, 64, 64]], [], [[1, 1, 9, 9]]):
        p = Instances((64, 64))
        p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float).reshape(-1, 4))
        proposals.append(p)
    scores, deltas = torch.randn(4, NUM_CLASSES + 1) * 3, torch.randn(4, 4)
    losses = model.image_label_losses((scores, deltas), proposals, [[2, 5], [3], [0]])
    nll = -scores.log_softmax(-1)
    expected = ((nll[1, 2] + nll[1, 5]) / 2 + 0.0 + nll[3, 0]) / 3  # a single proposal is its own largest
    torch.testing.assert_close(losses["image_loss"], 0.25 * expected)
    assert losses["loss_cls"].item() == 0 and losses["loss_box_reg"].item() == 0


# --- inference -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigmoid", [True, False])
def test_inference_scores_are_the_probabilities_times_the_proposal_score_square_rooted(sigmoid):
    """MULT_PROPOSAL_SCORE: sqrt(p(c | box) * objectness) per box and class (the objectness a probability)."""
    model = predictor(use_sigmoid_ce=sigmoid, mult_proposal_score=True)
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 20, 20], [30, 30, 60, 50]]))
    proposals.objectness_logits = torch.tensor([0.9, 0.25])
    scores, deltas = torch.randn(2, NUM_CLASSES + 1) * 2, torch.zeros(2, 4)  # zero deltas: the boxes stay
    probs = scores.sigmoid() if sigmoid else scores.softmax(-1)
    torch.testing.assert_close(model.predict_probs((scores, deltas), [proposals])[0], probs)
    (instances,), _ = model.inference((scores, deltas), [proposals])
    expected = (probs[:, :-1] * proposals.objectness_logits[:, None]).sqrt()
    assert len(instances) == 2 * NUM_CLASSES
    for box, cls, score in zip(instances.pred_boxes.tensor, instances.pred_classes, instances.scores):
        row = 0 if box[0] < 10 else 1
        torch.testing.assert_close(box, proposals.proposal_boxes.tensor[row])
        torch.testing.assert_close(score, expected[row, cls])
    plain = predictor(use_sigmoid_ce=sigmoid)
    (instances,), _ = plain.inference((scores, deltas), [proposals])
    torch.testing.assert_close(instances.scores.sort().values, probs[:, :-1].flatten().sort().values)


def test_sigmoid_ce_starts_the_linear_classifier_at_the_prior_and_the_regression_kinds():
    linear = predictor(zero_shot=False, use_sigmoid_ce=True, cls_agnostic_bbox_reg=False)  # PRIOR_PROB 0.01
    assert not linear.zero_shot and linear.class_specific_regression
    torch.testing.assert_close(linear.cls_score.bias, torch.full((NUM_CLASSES + 1,), -math.log(0.99 / 0.01)))
    zero_shot = predictor(use_sigmoid_ce=True)
    assert zero_shot.zero_shot and not zero_shot.class_specific_regression
    assert zero_shot.bbox_pred[0].in_features == IN_FEATURES and zero_shot.bbox_pred[-1].out_features == 4
    assert (zero_shot.bbox_pred[-1].bias == 0).all() and zero_shot.bbox_pred[-1].weight.std() < 0.003
    x = torch.randn(3, IN_FEATURES)
    scores, deltas = zero_shot(x[:, :, None, None])  # region features are flattened
    torch.testing.assert_close(scores, zero_shot.cls_score(x))
    torch.testing.assert_close(deltas, zero_shot.bbox_pred[2](zero_shot.bbox_pred[0](x).relu()))


def test_the_config_keys_reach_the_predictor(tmp_path):
    """Each Detic key to its argument; the classifier from the .npy (normalised columns and a zero background),
    the federated-loss weights the cat-info image counts to the power FED_LOSS_FREQ_WEIGHT, zero-padded."""
    embeddings = np.random.default_rng(0).standard_normal((NUM_CLASSES, DIM)).astype(np.float32)
    np.save(tmp_path / "classes.npy", embeddings)
    counts = [4, 9, 0, 16, 1]  # one class fewer than the model's
    (tmp_path / "cat_info.json").write_text(json.dumps([{"id": i + 1, "image_count": c} for i, c in enumerate(counts)]))
    cfg = get_cfg()
    add_pomp_config(cfg)
    box = cfg.MODEL.ROI_BOX_HEAD
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    box.USE_ZEROSHOT_CLS, box.ZEROSHOT_WEIGHT_PATH, box.ZEROSHOT_WEIGHT_DIM = True, str(tmp_path / "classes.npy"), DIM
    box.CAT_FREQ_PATH, box.FED_LOSS_FREQ_WEIGHT, box.USE_FED_LOSS, box.FED_LOSS_NUM_CAT = (
        str(tmp_path / "cat_info.json"),
        0.5,
        True,
        3,
    )
    box.USE_SIGMOID_CE, box.MULT_PROPOSAL_SCORE, box.IGNORE_ZERO_CATS, box.SOFTMAX_WEAK_LOSS = True, True, True, True
    box.IMAGE_LOSS_WEIGHT, box.PRIOR_PROB, box.NORM_TEMP, box.USE_BIAS = 0.3, 0.05, 20.0, -1.5
    box.CLS_AGNOSTIC_BBOX_REG = True
    model = ZeroShotFastRCNNOutputLayers(cfg, ShapeSpec(channels=IN_FEATURES))
    assert (model.use_sigmoid_ce, model.mult_proposal_score, model.use_fed_loss, model.ignore_zero_cats) == (True,) * 4
    assert (model.softmax_weak_loss, model.fed_loss_num_cat, model.image_loss_weight) == (True, 3, 0.3)
    torch.testing.assert_close(model.freq_weight, torch.tensor([2.0, 3.0, 0.0, 4.0, 1.0, 0.0]))
    classifier = model.cls_score
    assert not isinstance(classifier.zs_weight, torch.nn.Parameter) and classifier.cls_bias.item() == -1.5
    assert classifier.norm_temperature == 20.0 and classifier.linear.in_features == IN_FEATURES
    columns = torch.from_numpy(embeddings).t()
    expected = torch.cat([columns / columns.norm(dim=0, keepdim=True), torch.zeros(DIM, 1)], dim=1)
    torch.testing.assert_close(classifier.zs_weight, expected)
