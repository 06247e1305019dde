"""Datasets from json paths, Detic's class-frequency file, and Detic's multi-dataset loader (sampler, mapper,
grouping), against Detic's own code where it is installed and against its formulas written out."""

import itertools
import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detic_oracle import detic_config_sections, detic_module

from pomp_plugins.detectron2 import add_pomp_config, build_train_loader, register_dataset
from pomp_plugins.detectron2.config import PompConfigError
from pomp_plugins.detectron2.data import DatasetFormatError, load_class_freq, write_cat_info
from pomp_plugins.detectron2.loader import (
    DatasetRatioSampler,
    MultiDatasetBatches,
    MultiDatasetMapper,
    build_test_mapper,
    repeat_factors_from_tag_frequency,
)
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


def detic_cfg(**overrides):
    cfg = get_cfg()
    add_pomp_config(cfg)
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split("__")
        for name in path:
            node = node[name]
        node[last] = value
    return cfg


def fake_images(counts, seed=0):
    """Dataset dicts (no files) of len(counts) datasets: boxes of classes 0-9 (rarer as the class grows) for dataset
    0, ``pos_category_ids`` for the others; mixed aspect ratios."""
    rng = np.random.RandomState(seed)
    dicts = []
    for source, count in enumerate(counts):
        for i in range(count):
            classes = sorted({int(c) for c in rng.geometric(0.4, size=rng.randint(1, 4)) - 1 if c < 10})
            d = {
                "image_id": len(dicts),
                "dataset_source": source,
                "width": 4 if i % 3 else 3,
                "height": 3 if i % 3 else 4,
            }
            if source == 0:
                d["annotations"] = [{"category_id": c} for c in classes]
            else:
                d["pos_category_ids"], d["annotations"] = classes, []
            dicts.append(d)
    return dicts


# --- Datasets ------------------------------------------------------------------------------------------------------


def test_lvis_base_drops_rare_annotations(toy):
    rare = [i for i, (_, frequency, _) in enumerate(CLASSES) if frequency == "r"]
    full, base = DatasetCatalog.get("test_toy_all"), DatasetCatalog.get("test_toy_base")
    classes_of = lambda dicts: Counter(a["category_id"] for d in dicts for a in d["annotations"])  # noqa: E731
    assert set(rare) <= set(classes_of(full)) and not set(rare) & set(classes_of(base))
    assert sum(classes_of(base).values()) == sum(n for c, n in classes_of(full).items() if c not in rare)
    assert full[0]["file_name"] == str(toy / "images" / "train_0000.png") and full[0]["width"] == 128
    meta = MetadataCatalog.get("test_toy_base")
    assert meta.thing_classes == [name for name, _, _ in CLASSES] and meta.evaluator_type == "lvis"


def test_image_labels_are_contiguous_indices_without_annotations(toy):
    raw = {i["id"]: i["pos_category_ids"] for i in json.loads((toy / "image_labels.json").read_text())["images"]}
    dicts = DatasetCatalog.get("test_toy_labels")
    assert all(d["annotations"] == [] for d in dicts)
    assert [d["pos_category_ids"] for d in dicts] == [[c - 1 for c in raw[d["image_id"]]] for d in dicts]  # ids 1..6


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
    labels = {
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": 1, "file_name": "a.png", "height": 2, "width": 2, "pos_category_ids": [7]}],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    register_dataset("test_bad_labels", "image-labels", str(tmp_path / "labels.json"), str(tmp_path))
    with pytest.raises(DatasetFormatError, match=r"pos_category_ids \[7\] that are not among its categories"):
        DatasetCatalog.get("test_bad_labels")


def test_box_only_annotations_are_kept_and_broken_polygons_skipped(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "categories": [{"id": 7, "name": "cat", "frequency": "f", "image_count": 1}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 4, 4]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2], "segmentation": [[1, 1, 3, 1]]},
        ],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(data))
    register_dataset("test_box_only", "lvis", str(tmp_path / "boxes.json"), str(tmp_path))
    (image,) = DatasetCatalog.get("test_box_only")
    assert image["annotations"] == [{"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]


# --- Class frequencies (CAT_FREQ_PATH) -----------------------------------------------------------------------------


def test_cat_info_counts_the_full_training_set(toy, tmp_path):
    data = json.loads((toy / "train.json").read_text())
    images, instances = {}, Counter()
    for a in data["annotations"]:
        images.setdefault(a["category_id"], set()).add(a["image_id"])
        instances[a["category_id"]] += 1
    info = json.loads((toy / "train_cat_info.json").read_text())  # written by write_toy_dataset
    assert [(c["id"], c["image_count"], c["instance_count"]) for c in info] == [
        (c["id"], len(images.get(c["id"], ())), instances[c["id"]]) for c in data["categories"]
    ]
    assert all(c["image_count"] > 0 for c in info if c["frequency"] == "r")  # rare classes keep their counts

    shuffled = tmp_path / "shuffled.json"
    shuffled.write_text(json.dumps(info[::-1]))
    expected = torch.tensor(
        [len(images.get(c["id"], ())) ** 0.5 for c in sorted(data["categories"], key=lambda c: c["id"])]
    )
    torch.testing.assert_close(load_class_freq(str(shuffled), 0.5), expected)
    try:
        utils = detic_module("detic.modeling.utils")
    except pytest.skip.Exception:
        return
    torch.testing.assert_close(load_class_freq(str(shuffled), 0.5), utils.load_class_freq(str(shuffled), 0.5))


def test_cat_info_tool_and_its_errors(toy, tmp_path):
    output = tmp_path / "seen_cat_info.json"
    data = json.loads((toy / "train.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 2]  # an "unseen" class
    (tmp_path / "seen.json").write_text(json.dumps(data))
    result = subprocess.run(
        [sys.executable, "-m", "pomp_plugins.detectron2.cat_info", str(tmp_path / "seen.json"), "-o", str(output)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["zero_image_count"] == 1
    assert load_class_freq(str(output), 1.0)[1] == 0  # IGNORE_ZERO_CATS leaves it out of the loss
    with pytest.raises(FileNotFoundError, match="CAT_FREQ_PATH.*python -m pomp_plugins.detectron2.cat_info"):
        load_class_freq(str(tmp_path / "none.json"), 0.5)
    (tmp_path / "bad.json").write_text('{"categories": []}')
    with pytest.raises(DatasetFormatError, match="cat-info format"):
        load_class_freq(str(tmp_path / "bad.json"), 0.5)
    with pytest.raises(DatasetFormatError, match="missing"):
        write_cat_info(str(tmp_path / "bad.json"), str(tmp_path / "out.json"))


# --- The sampler ---------------------------------------------------------------------------------------------------


def test_tag_repeat_factors_follow_the_lvis_formula():
    dicts = [{"pos_category_ids": ids} for ids in ([0], [0, 1], [0], [2], [])]
    # f(0) = 3/5, f(1) = f(2) = 1/5; r(c) = max(1, sqrt(0.5 / f(c)))
    expected = [1.0, math.sqrt(2.5), 1.0, math.sqrt(2.5), 1.0]
    torch.testing.assert_close(repeat_factors_from_tag_frequency(dicts, 0.5), torch.tensor(expected))
    try:
        loader = detic_module("detic.data.custom_dataset_dataloader")
    except pytest.skip.Exception:
        return
    torch.testing.assert_close(
        repeat_factors_from_tag_frequency(dicts, 0.5), loader.repeat_factors_from_tag_frequency(dicts, 0.5)
    )


def sampler_cfg(ratio=(1, 4), use_rfs=(True, False)):
    return detic_cfg(
        DATALOADER__DATASET_RATIO=list(ratio),
        DATALOADER__USE_RFS=list(use_rfs),
        DATALOADER__DATASET_ANN=["box", "image"],
        DATALOADER__REPEAT_THRESHOLD=0.3,
    )


@pytest.mark.parametrize("use_rfs", [(True, False), (False, True)])
def test_sampler_weights_are_detics_formula(use_rfs):
    dicts = fake_images([30, 90])
    sampler = DatasetRatioSampler(sampler_cfg(use_rfs=use_rfs), dicts, seed=0)
    rfs = [1.0] * 120
    for source, (start, size) in enumerate([(0, 30), (30, 90)]):
        if not use_rfs[source]:
            continue
        categories = [
            {a["category_id"] for a in d["annotations"]} if source == 0 else set(d["pos_category_ids"])
            for d in dicts[start : start + size]
        ]
        frequency = Counter(c for cs in categories for c in cs)
        factors = [
            max([max(1.0, math.sqrt(0.3 / (frequency[c] / size))) for c in cs], default=1.0) for cs in categories
        ]
        rfs[start : start + size] = [f * size / sum(factors) for f in factors]
    dataset_weight = [90 / 30 * 1 / 5] * 30 + [90 / 90 * 4 / 5] * 90
    torch.testing.assert_close(sampler.weights.double(), torch.tensor(dataset_weight).double() * torch.tensor(rfs))


def test_sampler_draws_per_image_at_the_ratio():
    dicts = fake_images([30, 90])
    stream = list(itertools.islice(iter(DatasetRatioSampler(sampler_cfg(), dicts, seed=1)), 20000))
    box_share = sum(dicts[i]["dataset_source"] == 0 for i in stream) / len(stream)
    assert abs(box_share - 0.2) < 0.01  # DATASET_RATIO [1, 4], whatever the dataset sizes
    assert set(stream) == set(range(len(dicts)))


def test_sampler_gives_detics_index_stream():
    loader = detic_module("detic.data.custom_dataset_dataloader")
    dicts = fake_images([30, 90])
    cfg = sampler_cfg()
    ours = list(itertools.islice(iter(DatasetRatioSampler(cfg, dicts, seed=7)), 500))
    theirs = loader.MultiDatasetSampler(
        dicts, dataset_ratio=[1, 4], use_rfs=[True, False], dataset_ann=["box", "image"], repeat_threshold=0.3, seed=7
    )
    torch.testing.assert_close(DatasetRatioSampler(cfg, dicts, seed=7).weights, theirs.weights)
    assert ours == [int(i) for i in itertools.islice(iter(theirs), 500)]


def test_detics_recipe_gives_one_box_batch_per_image_label_batch():
    """DATASET_RATIO [1, 4] with DATASET_BS [8, 32]: box and image-label batches alternate 1:1 on average."""
    dicts = fake_images([200, 800])
    stream = (dicts[i] for i in DatasetRatioSampler(sampler_cfg(), dicts, seed=2))
    batches = list(itertools.islice(iter(MultiDatasetBatches(stream, [8, 32])), 1000))
    for batch in batches:
        assert len({d["dataset_source"] for d in batch}) == 1 and len({d["width"] > d["height"] for d in batch}) == 1
        assert len(batch) == [8, 32][batch[0]["dataset_source"]]
    assert abs(sum(b[0]["dataset_source"] == 0 for b in batches) / len(batches) - 0.5) < 0.05


def test_grouping_equals_detics():
    loader = detic_module("detic.data.custom_dataset_dataloader")
    dicts = fake_images([20, 40])
    stream = [dicts[i] for i in itertools.islice(iter(DatasetRatioSampler(sampler_cfg(), dicts, seed=3)), 600)]
    ours = [[d["image_id"] for d in b] for b in MultiDatasetBatches(stream, [2, 5])]
    theirs = [[d["image_id"] for d in b] for b in loader.DIFFMDAspectRatioGroupedDataset(stream, [2, 5], 2)]
    assert ours == theirs and len(ours) > 50


# --- The mapper and the whole loader -------------------------------------------------------------------------------


def loader_cfg(**overrides):
    settings = dict(
        DATASETS__TRAIN=("test_toy_base", "test_toy_labels"),
        WITH_IMAGE_LABELS=True,
        DATALOADER__SAMPLER_TRAIN="MultiDatasetSampler",
        DATALOADER__DATASET_RATIO=[1, 2],
        DATALOADER__USE_RFS=[True, False],
        DATALOADER__DATASET_ANN=["box", "image"],
        DATALOADER__MULTI_DATASET_GROUPING=True,
        DATALOADER__USE_DIFF_BS_SIZE=True,
        DATALOADER__DATASET_BS=[2, 4],
        DATALOADER__DATASET_INPUT_SIZE=[128, 64],
        DATALOADER__DATASET_INPUT_SCALE=[(0.5, 1.5), (0.8, 1.2)],
        DATALOADER__FILTER_EMPTY_ANNOTATIONS=False,
        DATALOADER__NUM_WORKERS=0,
        DATALOADER__REPEAT_THRESHOLD=0.3,
        INPUT__CUSTOM_AUG="EfficientDetResizeCrop",
        INPUT__FORMAT="RGB",
        SEED=3,
    )
    settings.update(overrides)
    return detic_cfg(**settings)


def test_multi_dataset_loader_on_the_toy_data(toy):
    labels = {d["image_id"]: d["pos_category_ids"] for d in DatasetCatalog.get("test_toy_labels")}
    kinds = Counter()
    for batch in itertools.islice(build_train_loader(loader_cfg()), 24):
        (ann_type,) = {x["ann_type"] for x in batch}
        assert len(batch) == {"box": 2, "image": 4}[ann_type]
        kinds[ann_type] += 1
        for x in batch:
            size = {"box": 128, "image": 64}[ann_type]  # EfficientDetResizeCrop crops to its dataset's input size
            assert max(x["image"].shape[1:]) <= size and x["instances"].image_size == tuple(x["image"].shape[1:])
            if ann_type == "image":
                assert x["pos_category_ids"] == labels[x["image_id"]] and len(x["instances"]) == 0
            else:
                assert x["pos_category_ids"] == [] and x["dataset_source"] == 0
    assert kinds["box"] >= 6 and kinds["image"] >= 6


def test_mapper_equals_detics_custom_dataset_mapper(toy):
    mapper_module = detic_module("detic.data.custom_dataset_mapper")
    cfg = loader_cfg()
    cfg.IS_DEBUG, cfg.DATALOADER.USE_TAR_DATASET = False, False
    cfg.DATALOADER.TARFILE_PATH = cfg.DATALOADER.TAR_INDEX_DIR = ""
    theirs = mapper_module.CustomDatasetMapper(cfg, True)
    ours = MultiDatasetMapper(cfg, True)
    images = [dict(d, dataset_source=0) for d in DatasetCatalog.get("test_toy_base")[:3]] + [
        dict(d, dataset_source=1) for d in DatasetCatalog.get("test_toy_labels")[:3]
    ]
    for d in images:
        np.random.seed(5)
        a = ours(d)
        np.random.seed(5)
        b = theirs(d)
        assert torch.equal(a["image"], b["image"]) and a["ann_type"] == b["ann_type"]
        assert a["pos_category_ids"] == b["pos_category_ids"]
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)


def test_test_mapper_follows_test_input_type():
    assert build_test_mapper(detic_cfg()) is None  # "default": detectron2's ResizeShortestEdge
    cfg = detic_cfg(INPUT__CUSTOM_AUG="EfficientDetResizeCrop", INPUT__TEST_INPUT_TYPE="square", INPUT__TEST_SIZE=96)
    (resize,) = build_test_mapper(cfg).augmentations.augs
    assert type(resize).__name__ == "EfficientDetResizeCrop" and resize.target_size == (96, 96)
    assert tuple(resize.scale) == (1, 1)


def test_loader_config_errors(toy):
    with pytest.raises(PompConfigError, match="needs WITH_IMAGE_LABELS True"):
        build_train_loader(loader_cfg(WITH_IMAGE_LABELS=False))
    with pytest.raises(PompConfigError, match=r"DATASET_ANN \['box', 'box'\] does not match"):
        build_train_loader(loader_cfg(DATALOADER__DATASET_ANN=["box", "box"]))
    with pytest.raises(PompConfigError, match="needs DATALOADER.SAMPLER_TRAIN MultiDatasetSampler"):
        build_train_loader(loader_cfg(DATALOADER__SAMPLER_TRAIN="TrainingSampler"))
    with pytest.raises(PompConfigError, match="DATASET_BS has 3 entries for 2 training datasets"):
        build_train_loader(loader_cfg(DATALOADER__DATASET_BS=[2, 4, 8]))
    with pytest.raises(PompConfigError, match="USE_DIFF_BS_SIZE needs INPUT.CUSTOM_AUG"):
        build_train_loader(loader_cfg(INPUT__CUSTOM_AUG=""))
    with pytest.raises(PompConfigError, match="DATASET_RATIO must be non-negative"):
        build_train_loader(loader_cfg(DATALOADER__DATASET_RATIO=[0, 0]))


# --- Detic's own configs -------------------------------------------------------------------------------------------


def detic_recipe_cfg(config):
    """Our config with the data, input and solver sections of one of Detic's config files (with its bases)."""
    cfg = detic_cfg()
    cfg.merge_from_other_cfg(detic_config_sections(config, ("DATALOADER", "INPUT", "SOLVER", "WITH_IMAGE_LABELS")))
    cfg.merge_from_list(["DATASETS.TRAIN", detic_config_sections(config, ("DATASETS",)).DATASETS.TRAIN])
    return cfg


def describe(augmentations):
    """Each augmentation's class name and settings, sequences as tuples."""
    return [
        (type(a).__name__, {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in vars(a).items()})
        for a in augmentations.augs
    ]


@pytest.mark.parametrize(
    "config, augmentations",
    [
        ("Detic_LbaseI_CLIP_R5021k_640b64_4x_ft4x_max-size.yaml", [((640, 640), (0.1, 2.0)), ((320, 320), (0.5, 1.5))]),
        ("Detic_LbaseI_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml", [((896, 896), (0.1, 2.0)), ((448, 448), (0.5, 1.5))]),
        ("Detic_OVCOCO_CLIP_R50_1x_max-size.yaml", [((800, 800), 1333), ((400, 400), 667)]),
    ],
)
def test_detics_configs_give_detics_per_dataset_augmentations(config, augmentations):
    cfg = detic_recipe_cfg(config)
    cfg.IS_DEBUG, cfg.DATALOADER.USE_TAR_DATASET = False, False
    cfg.DATALOADER.TARFILE_PATH = cfg.DATALOADER.TAR_INDEX_DIR = ""
    ours = MultiDatasetMapper(cfg, True)
    theirs = detic_module("detic.data.custom_dataset_mapper").CustomDatasetMapper(cfg, True)
    for mapper, expected, detic_augs in zip(ours.mappers, augmentations, theirs.dataset_augs):
        resize, flip = mapper.augmentations.augs
        assert type(flip).__name__ == "RandomFlip" and describe(mapper.augmentations) == describe(detic_augs)
        if "OVCOCO" in config:
            assert (tuple(resize.short_edge_length), resize.max_size, resize.sample_style) == (*expected, "range")
        else:
            assert (resize.target_size, tuple(resize.scale)) == expected
    assert build_test_mapper(cfg) is None  # Detic tests at MIN_SIZE_TEST / MAX_SIZE_TEST
    assert ours.dataset_ann == ["box", "image"] and ours.with_ann_type


def test_datasets_registered_elsewhere_follow_dataset_ann(toy):
    """A dataset registered in detectron2's catalog by other code: its annotation type is DATASET_ANN's."""
    if "test_external_labels" not in DatasetCatalog.list():
        DatasetCatalog.register("test_external_labels", lambda: DatasetCatalog.get("test_toy_labels"))
    batches = build_train_loader(loader_cfg(DATASETS__TRAIN=("test_toy_base", "test_external_labels")))
    kinds = {batch[0]["ann_type"] for batch in itertools.islice(batches, 12)}
    assert kinds == {"box", "image"}


def test_whole_loader_equals_detics(toy):
    """Detic's build_custom_train_loader (its sampler with the same seed, its mapper) gives the same batches."""
    dataloader = detic_module("detic.data.custom_dataset_dataloader")
    mapper_module = detic_module("detic.data.custom_dataset_mapper")
    cfg = loader_cfg()
    cfg.IS_DEBUG, cfg.DATALOADER.USE_TAR_DATASET = False, False
    cfg.DATALOADER.TARFILE_PATH = cfg.DATALOADER.TAR_INDEX_DIR = ""
    dicts = dataloader.get_detection_dataset_dicts_with_source(cfg.DATASETS.TRAIN, filter_empty=False)
    sampler = dataloader.MultiDatasetSampler(
        dicts,
        dataset_ratio=[1, 2],
        use_rfs=[True, False],
        dataset_ann=["box", "image"],
        repeat_threshold=0.3,
        seed=cfg.SEED,
    )
    theirs = dataloader.build_custom_train_loader(
        cfg, mapper=mapper_module.CustomDatasetMapper(cfg, True), sampler=sampler
    )
    np.random.seed(0)
    theirs = list(itertools.islice(theirs, 10))
    np.random.seed(0)
    ours = list(itertools.islice(build_train_loader(cfg), 10))
    assert {x["ann_type"] for batch in ours for x in batch} == {"box", "image"}
    for a, b in zip(ours, theirs):
        assert [x["image_id"] for x in a] == [x["image_id"] for x in b]
        assert [x["ann_type"] for x in a] == [x["ann_type"] for x in b]
        for x, y in zip(a, b):
            assert torch.equal(x["image"], y["image"]) and x["pos_category_ids"] == y["pos_category_ids"]
            assert torch.equal(x["instances"].gt_boxes.tensor, y["instances"].gt_boxes.tensor)
