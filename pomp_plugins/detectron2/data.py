"""Datasets from json files: LVIS (all classes or base), COCO, and Detic-style image labels.

Formats (``DATASETS.REGISTER`` entries, ``train_net.py --dataset``):

- ``lvis``: an LVIS-format json (``images``, ``annotations`` with polygons, ``categories`` with ``frequency`` and
  ``image_count``). An image's file is ``IMAGE_ROOT/<file_name>``, or ``IMAGE_ROOT/<split>/<name>`` taken from
  its ``coco_url`` as in the official LVIS files. Evaluated with detectron2's ``LVISEvaluator``.
- ``lvis-base``: the same without the annotations of rare (``frequency == "r"``) classes, whose federated-loss
  weight is 0 too: the open-vocabulary "base" training set. All classes stay in the class list.
- ``coco``: a COCO-format json, registered with detectron2's ``register_coco_instances``.
- ``image-labels``: Detic's image-labelled data: ``images`` with ``file_name``, ``height``, ``width`` and
  ``pos_category_ids`` (category ids of the box dataset trained with it), plus ``categories``.

Class metadata (``thing_classes``, ``thing_dataset_id_to_contiguous_id``, ``class_image_count``) is read from the
json when first needed (``class_metadata``), so registering a large training set costs nothing.
"""
from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import get_fed_loss_cls_weights
from detectron2.structures import BoxMode

from .config import PompConfigError

DATASET_FORMATS = ("lvis", "lvis-base", "coco", "image-labels")
logger = logging.getLogger(__name__)


class DatasetFormatError(ValueError):
    """A json file that is not in the format its dataset was registered with."""


def _read_json(path: str, keys: tuple[str, ...]) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    with open(path) as f:
        data = json.load(f)
    missing = [k for k in keys if k not in data] if isinstance(data, dict) else list(keys)
    if missing:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetFormatError(f"{path}: expected a json object with {list(keys)}, missing {missing} "
                                 f"(found {found})")
    return data


def _rare_ids(data: dict, path: str) -> set[int]:
    if any("frequency" not in c for c in data["categories"]):
        raise DatasetFormatError(f"{path}: lvis-base needs a 'frequency' (r/c/f) in every category")
    return {c["id"] for c in data["categories"] if c["frequency"] == "r"}


def _class_metadata(data: dict, path: str, remove_rare: bool = False) -> dict:
    """Class names, the id -> contiguous index map and, for box datasets, each class's image count."""
    categories = sorted(data["categories"], key=lambda c: c["id"])
    meta = {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }
    if "annotations" in data:
        if all("image_count" in c for c in categories):
            counts = {c["id"]: c["image_count"] for c in categories}
        else:  # e.g. COCO: count the images in which each class appears
            images = defaultdict(set)
            for a in data["annotations"]:
                images[a["category_id"]].add(a["image_id"])
            counts = {c["id"]: len(images[c["id"]]) for c in categories}
        removed = _rare_ids(data, path) if remove_rare else set()
        meta["class_image_count"] = [{"id": c["id"], "image_count": 0 if c["id"] in removed else counts[c["id"]]}
                                     for c in categories]
    return meta


def _image_file(image_root: str, image: dict, path: str) -> str:
    if "file_name" in image:
        return os.path.join(image_root, image["file_name"])
    if "coco_url" in image:
        split, name = image["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split, name)
    raise DatasetFormatError(f"{path}: image {image.get('id')} has neither 'file_name' nor 'coco_url'")


def _set_metadata(dataset_name: Optional[str], meta: dict) -> None:
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(**meta)


def load_lvis_format_json(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                          remove_rare: bool = False) -> list[dict]:
    """Dataset dicts (detectron2's format, contiguous category ids) of an LVIS-format json.

    ``remove_rare`` drops the annotations of rare classes. Annotations without a ``segmentation`` are kept as
    boxes (for box-only data and ``MASK_ON: False``); those whose polygons are all invalid are skipped.
    """
    data = _read_json(json_file, ("images", "annotations", "categories"))
    meta = _class_metadata(data, json_file, remove_rare)
    _set_metadata(dataset_name, meta)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    removed = _rare_ids(data, json_file) if remove_rare else set()

    per_image = defaultdict(list)
    skipped = 0
    for a in data["annotations"]:
        if a["category_id"] in removed:
            continue
        record = {"bbox": a["bbox"], "bbox_mode": BoxMode.XYWH_ABS, "category_id": id_map[a["category_id"]]}
        if "segmentation" in a:
            record["segmentation"] = [p for p in a["segmentation"] if len(p) % 2 == 0 and len(p) >= 6]
            if not record["segmentation"]:
                skipped += 1
                continue
        per_image[a["image_id"]].append(record)
    if skipped:
        logger.warning(f"{json_file}: skipped {skipped} annotations whose polygons all have fewer than 3 points")

    return [
        {
            "file_name": _image_file(image_root, image, json_file),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
            "not_exhaustive_category_ids": image.get("not_exhaustive_category_ids", []),
            "neg_category_ids": image.get("neg_category_ids", []),
            "annotations": per_image[image["id"]],
        }
        for image in sorted(data["images"], key=lambda i: i["id"])
    ]


def load_image_labels_json(json_file: str, image_root: str, dataset_name: Optional[str] = None) -> list[dict]:
    """Dataset dicts of image-labelled images: ``pos_category_ids`` holds the image's category ids."""
    data = _read_json(json_file, ("images", "categories"))
    _set_metadata(dataset_name, _class_metadata(data, json_file))
    records = []
    for image in sorted(data["images"], key=lambda i: i["id"]):
        missing = [k for k in ("file_name", "height", "width", "pos_category_ids") if k not in image]
        if missing:
            raise DatasetFormatError(f"{json_file}: image {image.get('id')} lacks {missing}; image-labels images "
                                     "need file_name, height, width and pos_category_ids")
        records.append({"file_name": os.path.join(image_root, image["file_name"]), "height": image["height"],
                        "width": image["width"], "image_id": image["id"],
                        "pos_category_ids": list(image["pos_category_ids"])})
    return records


def register_dataset(name: str, format: str, json_file: str, image_root: str) -> None:
    """Register ``name`` in detectron2's catalogs; an existing registration of ``name`` is replaced."""
    if format not in DATASET_FORMATS:
        raise PompConfigError(f"dataset {name!r}: unknown format {format!r}; expected one of {DATASET_FORMATS}")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    if format == "coco":
        register_coco_instances(name, {}, json_file, image_root)
    elif format == "image-labels":
        DatasetCatalog.register(name, lambda: load_image_labels_json(json_file, image_root, name))
    else:
        remove_rare = format == "lvis-base"
        DatasetCatalog.register(name, lambda: load_lvis_format_json(json_file, image_root, name, remove_rare))
        MetadataCatalog.get(name).set(evaluator_type="lvis")
    MetadataCatalog.get(name).set(pomp_format=format, json_file=json_file, image_root=image_root)


def register_datasets_from_config(cfg: CfgNode) -> list[str]:
    """Register every ``cfg.DATASETS.REGISTER`` entry; returns their names."""
    for name, entry in cfg.DATASETS.REGISTER.items():
        missing = [k for k in ("FORMAT", "JSON", "IMAGE_ROOT") if k not in entry]
        if missing:
            raise PompConfigError(f"DATASETS.REGISTER.{name} lacks {missing}; each entry needs FORMAT, JSON and "
                                  "IMAGE_ROOT")
        register_dataset(name, entry.FORMAT, entry.JSON, entry.IMAGE_ROOT)
    return list(cfg.DATASETS.REGISTER.keys())


def class_metadata(name: str) -> Metadata:
    """``name``'s metadata, with the class list (and a box dataset's class image counts) read in if not yet."""
    meta = MetadataCatalog.get(name)
    format = meta.get("pomp_format")
    if format == "image-labels":
        if meta.get("thing_classes") is None:
            load_image_labels_json(meta.json_file, meta.image_root, name)
    elif format is not None and meta.get("class_image_count") is None:
        data = _read_json(meta.json_file, ("annotations", "categories"))
        meta.set(**_class_metadata(data, meta.json_file, remove_rare=format == "lvis-base"))
    return meta


def image_label_dataset(name: str) -> bool:
    return MetadataCatalog.get(name).get("pomp_format") == "image-labels"


def federated_loss_weights(cfg: CfgNode) -> torch.Tensor:
    """Per-class sampling weights ``[C]`` of the federated loss: image count ** FED_LOSS_FREQ_WEIGHT_POWER over
    the box-labelled training datasets (detectron2's ``get_fed_loss_cls_weights``)."""
    names = [n for n in cfg.DATASETS.TRAIN if not image_label_dataset(n)]
    with_counts = [n for n in names if class_metadata(n).get("class_image_count") is not None]
    if not with_counts:
        raise PompConfigError(f"MODEL.ROI_BOX_HEAD.USE_FED_LOSS needs class image counts of the training datasets "
                              f"{list(cfg.DATASETS.TRAIN)}: register them (DATASETS.REGISTER) as lvis/lvis-base/"
                              "coco, or set USE_FED_LOSS False (it only matters in training)")
    return get_fed_loss_cls_weights(with_counts, cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER)
