"""The POMP detector built from configs: build-time errors, the vocabulary swap (also through DDP), the drop-in
config, the image-label loss, and training on a fixed batch (the tiny CPU config on the generated toy data).
Its equality with Detic's own model is tests/test_detic_parity.py's."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from pomp_plugins.detectron2 import (
    PompConfigError,
    ZeroShotBoxClassifier,
    add_pomp_config,
    register_datasets_from_config,
    set_class_embeddings,
    set_vocabulary,
    use_pomp_names,
)
from pomp_plugins.detectron2.toy_data import NAMES, write_toy_dataset
from pomp_plugins.prompt import EmbeddingFileError, VocabularyError

CONFIGS = Path(__file__).resolve().parent.parent / "detectron2_configs"
TINY_CLIP = [
    "MODEL.POMP.PROMPT",
    "",
    "MODEL.POMP.CLIP_MODEL",
    "pomp-tiny",
    "MODEL.POMP.CLIP_PRETRAINED",
    "none",
    "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM",
    64,
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, train_images=8, val_images=4)
    if not (root / "train_cat_info.json").is_file():  # Detic's cat-info file of the training json
        categories = json.loads((root / "train.json").read_text())["categories"]
        (root / "train_cat_info.json").write_text(
            json.dumps([{"id": c["id"], "image_count": c["image_count"]} for c in categories])
        )
    return root


def tiny_cfg(toy_root, *opts, config="POMP-Tiny-CPU.yaml"):
    """The tiny CPU config with its datasets and class frequencies pointed at ``toy_root``."""
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    for entry in cfg.DATASETS.REGISTER.values():
        entry.JSON = str(toy_root / Path(entry.JSON).name)
        entry.IMAGE_ROOT = str(toy_root / "images")
    cfg.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH = str(toy_root / "train_cat_info.json")
    cfg.merge_from_list(list(opts))
    register_datasets_from_config(cfg)
    return cfg


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, for wrapping models in DistributedDataParallel on the CPU."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def mapped(cfg, name, is_train, count):
    mapper = DatasetMapper(cfg, is_train=is_train)
    return [dict(mapper(d), ann_type="box", pos_category_ids=[]) for d in DatasetCatalog.get(name)[:count]]


def image_labelled(box_inputs):
    """Detic's form of image-labelled inputs: empty instances, ann_type "image", the image's classes as labels."""
    out = []
    for x in box_inputs:
        empty = Instances(x["instances"].image_size)
        empty.gt_boxes, empty.gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
        labels = sorted({int(c) for c in x["instances"].gt_classes})
        out.append(dict(x, instances=empty, ann_type="image", pos_category_ids=labels))
    return out


@pytest.mark.parametrize(
    "opts, error, message",
    [
        (("MODEL.ROI_HEADS.NUM_CLASSES", 7), PompConfigError, "has 6 classes but MODEL.ROI_HEADS.NUM_CLASSES is 7"),
        (("MODEL.POMP.VOCABULARY", "squares"), VocabularyError, "unknown vocabulary 'squares'"),
        (("MODEL.POMP.PROMPT", "missing_prompt.pt"), FileNotFoundError, "prompt file 'missing_prompt.pt' does not"),
        (
            ("MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM", 512),
            EmbeddingFileError,
            "gives 64-d text embeddings.*dimension 512",
        ),
        (
            ("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False, "MODEL.POMP.TEST_VOCABULARY", "cat,dog"),
            PompConfigError,
            "has 2 classes but the mask head is class-specific for 6",
        ),
        (("MODEL.ROI_BOX_HEAD.IMAGE_LABEL_LOSS", "wsddn"), PompConfigError, "IMAGE_LABEL_LOSS"),
        (("MODEL.WITH_CAPTION", True), PompConfigError, "MODEL.WITH_CAPTION"),
    ],
)
def test_bad_input_fails_at_build_time(toy, opts, error, message):
    with pytest.raises(error, match=message):
        build_model(tiny_cfg(toy, *opts))


def test_training_without_class_frequencies_fails_clearly(toy):
    """Inference needs no CAT_FREQ_PATH (a checkpoint brings the weights); the federated loss does."""
    cfg = tiny_cfg(toy, "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH", "missing.json")
    model = build_model(cfg).train()
    with EventStorage(), pytest.raises(PompConfigError, match="set MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH"):
        model(mapped(cfg, "pomp_toy_train", True, 2))


def test_vocabulary_swap_through_ddp_keeps_common_class_predictions(toy, process_group):
    cfg = tiny_cfg(toy, "TEST.DETECTIONS_PER_IMAGE", 1000)  # no top-k cut: each class's detections stand alone
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    inputs = mapped(cfg, "pomp_toy_val", False, 2)
    with torch.no_grad():
        before = [x["instances"] for x in model(inputs)]

    wrapped = torch.nn.parallel.DistributedDataParallel(model)
    metadata = set_vocabulary(wrapped, cfg, [NAMES[4], "traffic light", NAMES[1], "kite", "zebra"])
    with torch.no_grad():
        after = [x["instances"] for x in wrapped(inputs)]

    assert metadata.thing_classes[:3] == [NAMES[4], "traffic light", NAMES[1]]
    assert model.roi_heads.num_test_classes == 5 and model.roi_heads.num_classes == 6
    assert [p.cls_score.num_test_classes for p in model.roi_heads.box_predictors] == [5, 5, 5]
    for old, new in zip(before, after):
        assert new.pred_classes.max() < 5
        for new_class, old_class in ((0, 4), (2, 1)):  # classes kept: same boxes, scores and masks
            o, n = old[old.pred_classes == old_class], new[new.pred_classes == new_class]
            assert len(o) > 0
            torch.testing.assert_close(n.pred_boxes.tensor, o.pred_boxes.tensor)
            torch.testing.assert_close(n.scores, o.scores)
            torch.testing.assert_close(n.pred_masks, o.pred_masks)
    model.train()  # training still sees the training classes
    assert model.roi_heads.box_predictors[0].cls_score(torch.randn(3, 64)).shape == (3, 7)
    with pytest.raises(EmbeddingFileError, match="32-d, the classifier's 64"):
        set_class_embeddings(model, torch.randn(4, 32))


def test_swapping_in_precomputed_embeddings_from_an_array_or_a_npy_file(toy, tmp_path):
    """Detic's format (float16 numpy, unnormalised) swaps in as it is: as an array or a file, with or without names;
    the returned metadata names every class the model can now predict, so Visualizer can draw them."""
    from detectron2.utils.visualizer import Visualizer

    cfg = tiny_cfg(toy)
    model = build_model(cfg).eval()
    inputs = mapped(cfg, "pomp_toy_val", False, 1)
    embeddings = (10 * F.normalize(torch.randn(3, 64), dim=1)).numpy().astype(np.float16)
    np.save(tmp_path / "three.npy", embeddings)

    metadata = set_class_embeddings(model, embeddings)
    assert metadata.thing_classes == ["class 0", "class 1", "class 2"]
    assert model.roi_heads.num_test_classes == 3
    with torch.no_grad():
        from_array = model(inputs)[0]["instances"]
    assert len(from_array) and from_array.pred_classes.max() < 3

    metadata = set_vocabulary(model, cfg, "zebra,kite,cat", embeddings=tmp_path / "three.npy")
    assert metadata.thing_classes == ["zebra", "kite", "cat"]
    with torch.no_grad():
        from_file = model(inputs)[0]["instances"]
    torch.testing.assert_close(from_file.scores, from_array.scores)
    image = inputs[0]["image"].permute(1, 2, 0).numpy()[:, :, ::-1]
    Visualizer(image, metadata).draw_instance_predictions(from_file)  # every class has a name

    with pytest.raises(EmbeddingFileError, match="3 classes but there are 2 names"):
        set_class_embeddings(model, embeddings, names=["zebra", "kite"])
    with pytest.raises(EmbeddingFileError, match=r"shape \[C, D\], found \(64,\)"):
        set_class_embeddings(model, embeddings[0])


@pytest.mark.parametrize(
    "zoo_config, heads",
    [
        ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "PompStandardROIHeads"),
        ("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "PompCascadeROIHeads"),
        ("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml", "PompRes5ROIHeads"),
    ],
)
def test_drop_in_config_keeps_the_stock_heads_kind(zoo_config, heads):
    def stock_cfg():
        cfg = get_cfg()
        add_pomp_config(cfg)
        cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
        cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
        return cfg

    stock = build_model(stock_cfg())
    cfg = stock_cfg()
    cfg.merge_from_file(str(CONFIGS / "DropIn-POMP-Classifier.yaml"))
    cfg.merge_from_list(TINY_CLIP)
    cfg = use_pomp_names(cfg)
    assert cfg.MODEL.ROI_HEADS.NAME == heads
    zero_shot = build_model(cfg)
    predictors = zero_shot.roi_heads.box_predictors
    assert all(isinstance(p.cls_score, ZeroShotBoxClassifier) and p.cls_score.num_classes == 80 for p in predictors)

    # Detic's predictor: the zero-shot classifier and a class-agnostic MLP box regression; the rest is stock
    def shapes(model):
        return {k: v.shape for k, v in model.state_dict().items() if ".cls_score." not in k and ".bbox_pred." not in k}

    assert shapes(zero_shot) == shapes(stock)
    assert all(p.bbox_pred[-1].out_features == 4 for p in predictors)
    with pytest.raises(PompConfigError, match="no zero-shot classifier"):
        set_class_embeddings(stock, torch.randn(5, 64))
    zero_shot.eval()
    with torch.no_grad():
        out = zero_shot([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}])
    assert out[0]["instances"].image_size == (64, 96)


def test_image_label_loss_is_detics_max_size_loss(toy):
    """Per label: sigmoid BCE over all C + 1 outputs of the largest proposal (the last one left out), averaged over
    the image's labels, then over the images, times IMAGE_LOSS_WEIGHT (written out here)."""
    predictor = build_model(tiny_cfg(toy, "WITH_IMAGE_LABELS", True)).roi_heads.box_predictors[0]
    proposals = []
    for boxes in ([[0, 0, 10, 10], [0, 0, 50, 40], [5, 5, 30, 30], [0, 0, 64, 64]], [[0, 0, 8, 8], [1, 1, 60, 60]]):
        p = Instances((64, 64))
        p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float))
        proposals.append(p)
    scores, deltas = torch.randn(6, 7) * 5, torch.randn(6, 4)
    losses = predictor.image_label_losses((scores, deltas), proposals, [[2, 4], [0]])

    def bce(row, label):
        return F.binary_cross_entropy_with_logits(
            scores[row], F.one_hot(torch.tensor(label), 7).float(), reduction="sum"
        )

    expected = ((bce(1, 2) + bce(1, 4)) / 2 + bce(4, 0)) / 2
    torch.testing.assert_close(losses["image_loss"], 0.1 * expected)
    assert losses["loss_cls"] == 0 and losses["loss_box_reg"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["BoxSup", "Detic"])
def test_training_lowers_the_loss_on_a_fixed_batch(toy, variant):
    cfg = tiny_cfg(toy, "WITH_IMAGE_LABELS", variant != "BoxSup")
    torch.manual_seed(0)
    np.random.seed(0)  # detectron2's random flips
    model = build_model(cfg).train()
    boxes = mapped(cfg, "pomp_toy_train", True, 4)
    batches = [boxes] if variant == "BoxSup" else [boxes[:2], image_labelled(boxes[2:4])]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    history = []
    with EventStorage():
        for step in range(8):  # most of the fall is in the first steps (to about 0.35-0.4 of the first loss)
            losses = model(batches[step % len(batches)])
            history.append(sum(losses.values()).item())
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    first, last = history[: len(batches)], history[-len(batches) :]
    assert sum(last) < 0.8 * sum(first), history


@pytest.mark.slow
def test_ddp_needs_no_unused_parameter_search_whatever_a_batch_holds(toy, process_group):
    """DDP without find_unused_parameters fails at the next step if any parameter got no gradient."""
    cfg = tiny_cfg(toy, "WITH_IMAGE_LABELS", True)
    model = torch.nn.parallel.DistributedDataParallel(build_model(cfg).train(), broadcast_buffers=False)
    boxes = mapped(cfg, "pomp_toy_train", True, 2)
    labelled = image_labelled(boxes)
    with EventStorage():
        for batch in (labelled, boxes, labelled, boxes):
            sum(model(batch).values()).backward()


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("Base")))
def test_every_shipped_config_builds(config, tmp_path):
    """The real configs, with the tiny random CLIP in place of ViT-B/16 + a prompt file (not available here) and
    the class counts of a made-up cat-info file; the drop-in overlay on its stock model."""
    cfg = get_cfg()
    add_pomp_config(cfg)
    if config.startswith("DropIn"):
        cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *TINY_CLIP])
    cfg = use_pomp_names(cfg)
    if cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS or cfg.MODEL.ROI_BOX_HEAD.IGNORE_ZERO_CATS:
        cat_info = tmp_path / "cat_info.json"
        cat_info.write_text(
            json.dumps([{"id": i + 1, "image_count": 1} for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)])
        )
        cfg.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH = str(cat_info)
    register_datasets_from_config(cfg)  # lazy: the json files are read when the data is
    model = build_model(cfg)
    assert model.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert all(p.zero_shot for p in model.roi_heads.box_predictors)
