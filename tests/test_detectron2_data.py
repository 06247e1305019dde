"""Datasets from json paths (LVIS, LVIS base, image labels), federated-loss weights and the dataset-ratio loader."""
import itertools
import json
from collections import Counter

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from pomp_plugins.detectron2 import DatasetRatioSampler, add_pomp_config, build_train_loader, register_dataset
from pomp_plugins.detectron2.config import PompConfigError
from pomp_plugins.detectron2.data import DatasetFormatError, federated_loss_weights
from pomp_plugins.detectron2.toy_data import CLASSES, write_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    paths = write_toy_dataset(root, train_images=12, val_images=4)
    register_dataset("test_toy_all", "lvis", str(paths["train"]), str(root / "images"))
    register_dataset("test_toy_base", "lvis-base", str(paths["train"]), str(root / "images"))
    register_dataset("test_toy_labels", "image-labels", str(paths["image_labels"]), str(root / "images"))
    register_dataset("test_toy_coco", "coco", str(paths["val"]), str(root / "images"))
    return root


def test_lvis_base_drops_rare_annotations_and_weights(toy):
    rare = [i for i, (_, frequency, _) in enumerate(CLASSES) if frequency == "r"]
    full, base = DatasetCatalog.get("test_toy_all"), DatasetCatalog.get("test_toy_base")
    classes_of = lambda dicts: Counter(a["category_id"] for d in dicts for a in d["annotations"])  # noqa: E731
    assert set(rare) <= set(classes_of(full)) and not set(rare) & set(classes_of(base))
    assert sum(classes_of(base).values()) == sum(n for c, n in classes_of(full).items() if c not in rare)
    assert full[0]["file_name"] == str(toy / "images" / "train_0000.png") and full[0]["width"] == 128

    meta = MetadataCatalog.get("test_toy_base")
    assert meta.thing_classes == [name for name, _, _ in CLASSES] and meta.evaluator_type == "lvis"
    images_with = Counter(c for d in full for c in {a["category_id"] for a in d["annotations"]})
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.DATASETS.TRAIN = ("test_toy_base", "test_toy_labels")
    expected = torch.tensor([0.0 if c in rare else images_with[c] ** 0.5 for c in range(len(CLASSES))])
    torch.testing.assert_close(federated_loss_weights(cfg), expected)
    cfg.DATASETS.TRAIN = ("test_toy_coco",)  # COCO jsons have no image counts: counted from the annotations
    assert federated_loss_weights(cfg).shape == (len(CLASSES),)
    cfg.DATASETS.TRAIN = ("never_registered",)
    with pytest.raises(PompConfigError, match="USE_FED_LOSS needs class image counts"):
        federated_loss_weights(cfg)


def test_bad_dataset_files_fail_clearly(tmp_path, toy):
    (tmp_path / "boxes.json").write_text('{"images": [], "categories": []}')
    register_dataset("test_bad", "lvis", str(tmp_path / "boxes.json"), str(tmp_path))
    with pytest.raises(DatasetFormatError, match=r"missing \['annotations'\]"):
        DatasetCatalog.get("test_bad")
    register_dataset("test_missing", "lvis", str(tmp_path / "missing.json"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.json' does not exist"):
        DatasetCatalog.get("test_missing")
    with pytest.raises(PompConfigError, match="unknown format 'yolo'"):
        register_dataset("test_yolo", "yolo", "x.json", str(tmp_path))


def test_box_only_annotations_are_kept_and_broken_polygons_skipped(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
            "categories": [{"id": 7, "name": "cat", "frequency": "f", "image_count": 1}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 4, 4]},
                            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2],
                             "segmentation": [[1, 1, 3, 1]]}]}
    (tmp_path / "boxes.json").write_text(json.dumps(data))
    register_dataset("test_box_only", "lvis", str(tmp_path / "boxes.json"), str(tmp_path))
    (image,) = DatasetCatalog.get("test_box_only")
    assert image["annotations"] == [{"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]


def test_ratio_sampler_gives_homogeneous_batches_at_the_ratio():
    datasets = [[{"width": 4, "height": 3}] * 10 + [{"width": 3, "height": 4}] * 10, [{"width": 4, "height": 3}] * 5]
    sampler = DatasetRatioSampler(datasets, [1, 3], batch_size=4, seed=0)
    batches = [list(b) for b in itertools.islice(zip(*[iter(sampler)] * 4), 2000)]
    kinds = Counter()
    for batch in batches:
        groups = {(i >= 20, i >= 10 and i < 20) for i in batch}
        assert len(groups) == 1  # one dataset, one aspect-ratio group
        kinds[batch[0] >= 20] += 1
    assert abs(kinds[True] / len(batches) - 0.75) < 0.04
    assert set(itertools.chain(*batches)) == set(range(25))


def test_mixed_loader_maps_image_labels_to_the_box_datasets_classes(toy):
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.DATASETS.TRAIN = ("test_toy_base", "test_toy_labels")
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (96,), 128
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS, cfg.SEED = 2, 0, 3
    with pytest.raises(PompConfigError, match="needs MODEL.POMP.WITH_IMAGE_LABELS True"):
        build_train_loader(cfg)
    cfg.MODEL.POMP.WITH_IMAGE_LABELS = True
    with pytest.raises(PompConfigError, match="need DATALOADER.DATASET_RATIO"):
        build_train_loader(cfg)
    cfg.DATALOADER.DATASET_RATIO = [1, 1]
    labels = {d["image_id"]: d["pos_category_ids"] for d in DatasetCatalog.get("test_toy_labels")}
    kinds = set()
    for batch in itertools.islice(build_train_loader(cfg), 8):
        assert len({"instances" in x for x in batch}) == 1
        kinds.add("instances" in batch[0])
        for x in batch:
            if "image_labels" in x:
                assert x["image_labels"] == [c - 1 for c in labels[x["image_id"]]]  # toy ids are 1..6
    assert kinds == {True, False}
