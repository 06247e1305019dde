"""The POMP detector built from configs: build-time errors, the vocabulary swap (also through DDP), the drop-in
config, the image-label loss, and training on a fixed batch (the tiny CPU config on the generated toy data)."""
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
    without_federated_loss,
)
from pomp_plugins.detectron2.toy_data import NAMES, write_toy_dataset
from pomp_plugins.prompt import EmbeddingFileError, VocabularyError

CONFIGS = Path(__file__).resolve().parent.parent / "detectron2_configs"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, train_images=8, val_images=4)
    return root


def tiny_cfg(toy_root, *opts, config="POMP-Tiny-CPU.yaml"):
    """The tiny CPU config with its datasets pointed at ``toy_root``."""
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
    return [mapper(d) for d in DatasetCatalog.get(name)[:count]]


@pytest.mark.parametrize("opts, error, message", [
    (("MODEL.ROI_HEADS.NUM_CLASSES", 7), PompConfigError, "has 6 classes but MODEL.ROI_HEADS.NUM_CLASSES is 7"),
    (("MODEL.POMP.VOCABULARY", "squares"), VocabularyError, "unknown vocabulary 'squares'"),
    (("MODEL.POMP.PROMPT", "missing_prompt.pt"), FileNotFoundError, "prompt file 'missing_prompt.pt' does not"),
    (("MODEL.POMP.EMBEDDING_DIM", 512), EmbeddingFileError, "gives 64-d text embeddings.*dimension 512"),
    (("MODEL.ROI_HEADS.NAME", "PompStandardROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False,
      "MODEL.POMP.TEST_VOCABULARY", "coco"), PompConfigError, "has 80 classes but the box regression is class-"),
    (("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False, "MODEL.POMP.TEST_VOCABULARY", "cat,dog"), PompConfigError,
     "has 2 classes but the mask head is class-specific for 6"),
    (("MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH", "none.json"), FileNotFoundError, "CAT_FREQ_PATH"),
])
def test_bad_input_fails_at_build_time(toy, opts, error, message):
    with pytest.raises(error, match=message):
        build_model(tiny_cfg(toy, *opts))


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
    with pytest.raises(EmbeddingFileError, match="dimension 32, the classifier has 64"):
        set_class_embeddings(model, torch.randn(4, 32))


def test_drop_in_config_replaces_only_the_classifier_of_a_stock_model():
    def stock_cfg():
        cfg = get_cfg()
        add_pomp_config(cfg)
        cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
        cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
        return cfg

    stock = build_model(stock_cfg())
    cfg = stock_cfg()
    cfg.merge_from_file(str(CONFIGS / "DropIn-POMP-Classifier.yaml"))
    cfg.merge_from_list(["MODEL.POMP.PROMPT", "", "MODEL.POMP.CLIP_MODEL", "pomp-tiny", "MODEL.POMP.CLIP_PRETRAINED",
                         "none", "MODEL.POMP.EMBEDDING_DIM", 64])
    zero_shot = build_model(cfg)
    assert isinstance(zero_shot.roi_heads.box_predictor.cls_score, ZeroShotBoxClassifier)
    assert zero_shot.roi_heads.box_predictor.cls_score.num_classes == 80
    shapes = lambda model: {k: v.shape for k, v in model.state_dict().items() if ".cls_score." not in k}  # noqa
    assert shapes(zero_shot) == shapes(stock)  # backbone, RPN, box head, box regression, masks: all stock
    with pytest.raises(PompConfigError, match="box regression is class-specific for 80 classes"):
        set_class_embeddings(zero_shot, torch.randn(5, 64))
    with pytest.raises(PompConfigError, match="no zero-shot classifier"):
        set_class_embeddings(stock, torch.randn(5, 64))
    zero_shot.eval()
    with torch.no_grad():
        out = zero_shot([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}])
    assert out[0]["instances"].pred_masks.shape[1:] == (64, 96)


def test_image_label_loss_trains_the_largest_proposal_with_the_labels(toy):
    predictor = build_model(tiny_cfg(toy, "MODEL.POMP.WITH_IMAGE_LABELS", True)).roi_heads.box_predictors[0]
    proposals = []
    for boxes in ([[0, 0, 10, 10], [0, 0, 50, 40], [5, 5, 30, 30]], [[0, 0, 8, 8], [1, 1, 60, 60]]):
        p = Instances((64, 64))
        p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float))
        proposals.append(p)
    scores, deltas = torch.randn(5, 7) * 5, torch.randn(5, 4)
    labels = [torch.tensor([2, 4]), torch.tensor([0])]
    losses = predictor.image_label_losses((scores, deltas), proposals, labels)
    expected = (F.binary_cross_entropy_with_logits(scores[1, :6], torch.tensor([0., 0, 1, 0, 1, 0]), reduction="sum")
                + F.binary_cross_entropy_with_logits(scores[4, :6], torch.tensor([1., 0, 0, 0, 0, 0]),
                                                     reduction="sum")) / 2
    torch.testing.assert_close(losses["loss_image_label"], 0.1 * expected)
    assert losses["loss_cls"] == 0 and losses["loss_box_reg"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["BoxSup", "Detic", "image labels only"])
def test_training_lowers_the_loss_on_a_fixed_batch(toy, variant):
    cfg = tiny_cfg(toy, "MODEL.POMP.WITH_IMAGE_LABELS", variant != "BoxSup")
    torch.manual_seed(0)
    np.random.seed(0)  # detectron2's random flips
    model = build_model(cfg).train()
    boxes, labelled = mapped(cfg, "pomp_toy_train", True, 4), mapped(cfg, "pomp_toy_train", True, 6)[4:]
    for x in labelled:
        x.update(ann_type="image", pos_category_ids=sorted({int(c) for c in x.pop("instances").gt_classes}))
    batch = {"BoxSup": boxes, "Detic": boxes[:2] + labelled, "image labels only": labelled}[variant]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    history = []
    with EventStorage():
        for _ in range(12):
            losses = model(batch)
            history.append(sum(losses.values()).item())
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    assert history[-1] < 0.6 * history[0], history


@pytest.mark.slow
def test_ddp_needs_no_unused_parameter_search_whatever_a_batch_holds(toy, process_group):
    """DDP without find_unused_parameters fails at the next step if any parameter got no gradient."""
    cfg = tiny_cfg(toy, "MODEL.POMP.WITH_IMAGE_LABELS", True)
    model = torch.nn.parallel.DistributedDataParallel(build_model(cfg).train(), broadcast_buffers=False)
    boxes = mapped(cfg, "pomp_toy_train", True, 2)
    labelled = [{"image": x["image"], "height": x["height"], "width": x["width"], "ann_type": "image",
                 "pos_category_ids": [1]} for x in boxes]
    with EventStorage():
        for batch in (labelled, boxes, labelled, boxes[:1] + labelled[1:], boxes):
            sum(model(batch).values()).backward()


@pytest.mark.slow
def test_each_kind_of_batch_gets_its_own_losses(toy):
    """A mixed batch's losses are the box images' losses plus the image-labelled images' losses."""
    cfg = tiny_cfg(toy, "MODEL.POMP.WITH_IMAGE_LABELS", True)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    boxes = [x for x in mapped(cfg, "pomp_toy_train", True, 8) if x["image"].shape[1] < x["image"].shape[2]][:2]
    labelled = [dict(x, ann_type="image", pos_category_ids=[3]) for x in boxes]
    for x in labelled:
        del x["instances"]
    with EventStorage():
        def losses(batch):
            torch.manual_seed(1)  # the same proposal sampling in every call
            return {k: v.detach() for k, v in model(batch).items()}

        box_only, labels_only, mixed = losses(boxes), losses(labelled), losses(boxes + labelled)
    assert box_only.keys() == labels_only.keys() == mixed.keys()
    image_keys = {k for k in mixed if k.startswith("loss_image_label")}
    assert len(image_keys) == 3 and all(box_only[k] == 0 for k in image_keys)
    assert all(labels_only[k] == 0 for k in mixed.keys() - image_keys) and all(labels_only[k] > 0 for k in image_keys)
    for key in mixed:
        torch.testing.assert_close(mixed[key], box_only[key] + labels_only[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", ["BoxSup-POMP_LVIS-base_R50-FPN_1x.yaml",
                                    "Detic-POMP_LVIS-base_IN-L_R50-FPN_1x.yaml",
                                    "POMP_LVIS-base_R50-FPN_eval-COCO.yaml", "POMP-Tiny-CPU_image-labels.yaml"])
def test_every_shipped_config_builds(config):
    """The real configs, with the tiny random CLIP in place of ViT-B/16 + a prompt file (not available here)."""
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.POMP.PROMPT", "", "MODEL.POMP.CLIP_MODEL",
                         "pomp-tiny", "MODEL.POMP.CLIP_PRETRAINED", "none", "MODEL.POMP.EMBEDDING_DIM", 64])
    register_datasets_from_config(cfg)  # lazy: the json files are read when the data is
    model = build_model(without_federated_loss(cfg))
    assert model.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert model.roi_heads.num_test_classes == (80 if "eval-COCO" in config else cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    assert len(model.roi_heads.box_predictors) == 3
