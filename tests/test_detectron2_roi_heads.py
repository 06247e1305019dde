"""The ROI heads' own formulas on the tiny config's FPN heads, each against its computation written out from the
heads' parts: Detic's cascade inference (stage-averaged probabilities, the proposal-score product, one class per
proposal), the gradient scale of each stage, the classifier and the inference vocabulary in every stage, and the
image-label step of the standard heads. (tests/test_detic_parity.py compares whole models with Detic's own.)"""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from pomp_plugins.detectron2 import PompConfigError, add_pomp_config, fast_rcnn, roi_heads
from pomp_plugins.detectron2.vocabulary import training_class_embeddings

CONFIG = Path(__file__).resolve().parent.parent / "detectron2_configs" / "POMP-Tiny-CPU.yaml"
NUM_CLASSES, DIM, CHANNELS = 6, 64, 64
IMAGE = (96, 128)
SHAPES = {"p3": ShapeSpec(channels=CHANNELS, stride=8), "p4": ShapeSpec(channels=CHANNELS, stride=16)}
SHAPES["p5"] = ShapeSpec(channels=CHANNELS, stride=32)


@pytest.fixture(scope="module")
def embeddings_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("classifier") / "classes.npy"
    np.save(path, np.random.default_rng(0).standard_normal((NUM_CLASSES, DIM)).astype(np.float32))
    return path


def heads(embeddings_file, *opts):
    """The tiny config's ROI heads (cascade unless opts say otherwise) over a Detic .npy classifier."""
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        ["MODEL.POMP.VOCABULARY", "", "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH", str(embeddings_file)]
        + ["MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH", "", "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", False, *opts]
    )
    torch.manual_seed(0)
    return build_roi_heads(cfg, SHAPES)


def features(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(batch, CHANNELS, IMAGE[0] // s.stride, IMAGE[1] // s.stride, generator=g)
        for name, s in SHAPES.items()
    }


def proposals(seed=0, count=12):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * torch.tensor([100.0, 70.0])
    wh = 8 + torch.rand(count, 2, generator=g) * 40
    p = Instances(IMAGE)
    p.proposal_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))  # some reach past the image: clipped
    p.objectness_logits = torch.rand(count, generator=g) * 0.9 + 0.05  # CenterNet's scores are probabilities
    return p


@pytest.mark.parametrize("one_class_per_proposal", [False, True])
def test_cascade_inference_is_the_stage_average_times_the_proposal_score(embeddings_file, one_class_per_proposal):
    """Detic's: the sigmoid probabilities averaged over the 3 stages (each stage on the previous stage's boxes,
    clipped), sqrt(p x proposal score), with ONE_CLASS_PER_PROPOSAL only each box's best class kept; the last
    stage's boxes."""
    model = heads(embeddings_file, "MODEL.ROI_HEADS.ONE_CLASS_PER_PROPOSAL", one_class_per_proposal).eval()
    g = torch.Generator().manual_seed(1)
    # inference classes close to one direction: on the boxes facing away from it every class scores below the
    # background's sigmoid(0), so the best class is not the best output
    model.set_test_class_embeddings(torch.randn(DIM, generator=g) + 0.3 * torch.randn(4, DIM, generator=g))
    feats, props = features(), proposals()
    with torch.no_grad():
        (instances,), _ = model(None, feats, [props])
        levels = [feats[name] for name in ("p3", "p4", "p5")]
        boxes, probs = props.proposal_boxes.tensor, []
        for stage in range(3):
            if stage:
                boxes = boxes.clone()
                boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clamp(0, IMAGE[1]), boxes[:, 1::2].clamp(0, IMAGE[0])
            x = model.box_head[stage](model.box_pooler(levels, [Boxes(boxes)]))
            scores, deltas = model.box_predictor[stage](x)
            probs.append(scores.sigmoid())
            boxes = model.box_predictor[stage].box2box_transform.apply_deltas(deltas, boxes)
        score = ((probs[0] + probs[1] + probs[2]) / 3 * props.objectness_logits[:, None]).sqrt()
        assert (score[:, -1] > score[:, :-1].max(dim=1).values).any()
        if one_class_per_proposal:
            best = score[:, :-1].max(dim=1, keepdim=True).values
            score = torch.where(score == best, score, torch.zeros_like(score))
        (expected,), _ = fast_rcnn_inference([boxes], [score], [IMAGE], 0.0, 0.5, 100)
    assert len(instances) == len(expected) > 0
    torch.testing.assert_close(instances.pred_boxes.tensor, expected.pred_boxes.tensor)
    torch.testing.assert_close(instances.scores, expected.scores)
    assert torch.equal(instances.pred_classes, expected.pred_classes)
    if one_class_per_proposal:  # at most one class per box
        assert len({tuple(b.tolist()) for b in instances.pred_boxes.tensor}) == len(instances)


def test_each_stage_scales_its_gradient_by_one_over_the_stages(embeddings_file):
    model = heads(embeddings_file).train()
    levels = [f.requires_grad_() for f in features().values()]
    boxes = [proposals().proposal_boxes]
    model._run_stage(levels, [proposals()], 1)[0].sum().backward()
    scaled = [f.grad.clone() for f in levels]
    for f in levels:
        f.grad = None
    model.box_predictor[1](model.box_head[1](model.box_pooler(levels, boxes)))[0].sum().backward()
    for a, b in zip(scaled, levels):
        torch.testing.assert_close(a, b.grad / 3)


def test_every_stage_gets_the_classifier_and_the_inference_vocabulary(embeddings_file, monkeypatch):
    calls = []

    def counted(cfg):
        calls.append(cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH)
        return training_class_embeddings(cfg)

    for module in (roi_heads, fast_rcnn):
        monkeypatch.setattr(module, "training_class_embeddings", counted)
    model = heads(embeddings_file)
    assert calls == [str(embeddings_file)]  # read (or encoded) once for the three stages
    predictors = model.box_predictors
    assert len(predictors) == 3 and model.num_test_classes == NUM_CLASSES and model.embedding_dim == DIM
    columns = torch.from_numpy(np.load(embeddings_file)).t()
    expected = torch.cat([columns / columns.norm(dim=0, keepdim=True), torch.zeros(DIM, 1)], dim=1)
    for p in predictors:
        assert not isinstance(p.cls_score.zs_weight, torch.nn.Parameter)  # the configured classifier, not "rand"
        torch.testing.assert_close(p.cls_score.zs_weight, expected)
    model.set_test_class_embeddings(torch.randn(3, DIM))
    assert model.num_test_classes == 3 and [p.cls_score.num_test_classes for p in predictors] == [3, 3, 3]
    model.set_test_class_embeddings(None)
    assert model.num_test_classes == NUM_CLASSES
    linear = heads(embeddings_file, "MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS", False)
    with pytest.raises(PompConfigError, match="no zero-shot classifier"):
        linear.set_test_class_embeddings(torch.randn(3, DIM))


def test_image_labelled_images_train_the_standard_heads_on_their_top_proposals(embeddings_file):
    """The first WS_NUM_PROPS proposals, clipped and detached; the max-size loss of the largest (the last left out);
    zero box and mask losses connected to their heads."""
    model = heads(embeddings_file, "MODEL.ROI_HEADS.NAME", "PompStandardROIHeads", "WITH_IMAGE_LABELS", True).train()
    props = proposals(count=24)
    props.proposal_boxes.tensor.requires_grad_()
    target = Instances(IMAGE)
    target._pos_category_ids = [2, 4]
    with EventStorage():
        (top,), losses = model(None, features(), [props], [target], ann_type="image")
    assert len(top) == 16 and not top.proposal_boxes.tensor.requires_grad
    clipped = props.proposal_boxes.tensor.detach()[:16].clone()
    clipped[:, 0::2], clipped[:, 1::2] = clipped[:, 0::2].clamp(0, IMAGE[1]), clipped[:, 1::2].clamp(0, IMAGE[0])
    torch.testing.assert_close(top.proposal_boxes.tensor, clipped)
    assert set(losses) == {"image_loss", "loss_cls", "loss_box_reg", "loss_mask"}
    with torch.no_grad():
        x = model.box_head(model.box_pooler([features()[n] for n in ("p3", "p4", "p5")], [Boxes(clipped)]))
        scores = model.box_predictor(x)[0]
    largest = int(Boxes(clipped[:-1]).area().argmax())
    targets = torch.zeros(2, NUM_CLASSES + 1)
    targets[[0, 1], [2, 4]] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(scores[largest].expand(2, -1), targets, reduction="none")
    torch.testing.assert_close(losses["image_loss"], 0.1 * bce.sum(1).mean())
    assert all(losses[k].item() == 0 and losses[k].requires_grad for k in ("loss_cls", "loss_box_reg", "loss_mask"))


def test_a_box_batch_trains_masks_when_its_first_image_has_them_as_detics(embeddings_file):
    """Detic reads gt_masks from the batch's first image (an image without annotations has none): masks are trained
    when it has them, else the mask loss is a zero connected to the mask head; every stage has its losses."""
    model = heads(embeddings_file).train()
    empty = Instances(IMAGE)
    empty.gt_boxes, empty.gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
    annotated = Instances(IMAGE)
    boxes = torch.tensor([[10.0, 10, 50, 40], [60, 30, 110, 90]])
    annotated.gt_boxes, annotated.gt_classes = Boxes(boxes), torch.tensor([1, 4])
    annotated.gt_masks = PolygonMasks([[b[[0, 1, 2, 1, 2, 3, 0, 3]].numpy()] for b in boxes])
    losses = {}
    for name, targets in (("masks", [annotated, empty]), ("no masks", [empty, annotated])):
        torch.manual_seed(0)
        with EventStorage():
            _, losses[name] = model(None, features(batch=2), [proposals(1), proposals(2)], targets, ann_type="box")
    stages = {f"{k}_stage{i}" for k in ("loss_cls", "loss_box_reg") for i in range(3)}
    assert set(losses["masks"]) == set(losses["no masks"]) == stages | {"loss_mask"}
    assert losses["masks"]["loss_mask"] > 0.1
    assert losses["no masks"]["loss_mask"].item() == 0 and losses["no masks"]["loss_mask"].requires_grad
