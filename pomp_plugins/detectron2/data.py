"""Datasets from json files: LVIS (all classes or base), COCO, and Detic-style image labels; class frequencies.

Formats (``DATASETS.REGISTER`` entries, ``train_net.py --dataset``):

- ``lvis``: an LVIS-format json (``images``, ``annotations`` with polygons, ``categories``). An image's file is
  ``IMAGE_ROOT/<file_name>``, or ``IMAGE_ROOT/<split>/<name>`` taken from its ``coco_url`` as in the official LVIS
  files. Evaluated with detectron2's ``LVISEvaluator``.
- ``lvis-base``: the same without the annotations of rare (``frequency == "r"``) classes: the open-vocabulary "base"
  training set (Detic's ``lvis_v1_train_norare``). All classes stay in the class list.
- ``coco``: a COCO-format json, registered with detectron2's ``register_coco_instances``.
- ``image-labels``: Detic's image-labelled data (e.g. ``imagenet_lvis_image_info.json``): ``images`` with
  ``file_name``, ``height``, ``width`` and ``pos_category_ids``, plus ``categories``. As in Detic's loader, the
  dataset dicts hold ``pos_category_ids`` as contiguous class indices and no annotations (``annotations: []``).

Class metadata (``thing_classes``, ``thing_dataset_id_to_contiguous_id``) is read from the json when first needed
(``class_metadata``), so registering a large training set costs nothing.

Federated-loss class frequencies come from Detic's cat-info json (``MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH``): a list of
``{"id", "image_count", ...}`` counted over the full training set (``write_cat_info``, ``python -m
pomp_plugins.detectron2.cat_info``), read by ``load_class_freq``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import register_coco_instances
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
        raise DatasetFormatError(f"{path}: expected a json object with {list(keys)}, missing {missing} (found {found})")
    return data


def _rare_ids(data: dict, path: str) -> set[int]:
    if any("frequency" not in c for c in data["categories"]):
        raise DatasetFormatError(f"{path}: lvis-base needs a 'frequency' (r/c/f) in every category")
    return {c["id"] for c in data["categories"] if c["frequency"] == "r"}


def _class_metadata(data: dict) -> dict:
    """Class names and the id -> contiguous index map, classes sorted by id."""
    categories = sorted(data["categories"], key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def _image_file(image_root: str, image: dict, path: str) -> str:
    if "file_name" in image:
        return os.path.join(image_root, image["file_name"])
    if "coco_url" in image:
        split, name = image["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split, name)
    raise DatasetFormatError(f"{path}: image {image.get('id')} has neither 'file_name' nor 'coco_url'")


def _set_metadata(dataset_name: str | None, meta: dict) -> None:
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(**meta)


def load_lvis_format_json(
    json_file: str, image_root: str, dataset_name: str | None = None, remove_rare: bool = False
) -> list[dict]:
    """Dataset dicts (detectron2's format, contiguous category ids) of an LVIS-format json.

    ``remove_rare`` drops the annotations of rare classes. Annotations without a ``segmentation`` are kept as
    boxes (for box-only data and ``MASK_ON: False``); those whose polygons are all invalid are skipped.
    """
    data = _read_json(json_file, ("images", "annotations", "categories"))
    meta = _class_metadata(data)
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


def load_image_labels_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Dataset dicts of image-labelled images: ``pos_category_ids`` holds the image's labels as contiguous class
    indices (the json's categories sorted by id), ``annotations`` is empty (Detic's ``custom_load_lvis_json``)."""
    data = _read_json(json_file, ("images", "categories"))
    meta = _class_metadata(data)
    _set_metadata(dataset_name, meta)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    records = []
    for image in sorted(data["images"], key=lambda i: i["id"]):
        missing = [k for k in ("file_name", "height", "width", "pos_category_ids") if k not in image]
        if missing:
            raise DatasetFormatError(
                f"{json_file}: image {image.get('id')} lacks {missing}; image-labels images "
                "need file_name, height, width and pos_category_ids"
            )
        unknown = [c for c in image["pos_category_ids"] if c not in id_map]
        if unknown:
            raise DatasetFormatError(
                f"{json_file}: image {image.get('id')} has pos_category_ids {unknown} that are not among its categories"
            )
        records.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": image["id"],
                "pos_category_ids": [id_map[c] for c in image["pos_category_ids"]],
                "annotations": [],
            }
        )
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
            raise PompConfigError(
                f"DATASETS.REGISTER.{name} lacks {missing}; each entry needs FORMAT, JSON and IMAGE_ROOT"
            )
        register_dataset(name, entry.FORMAT, entry.JSON, entry.IMAGE_ROOT)
    return list(cfg.DATASETS.REGISTER.keys())


def class_metadata(name: str) -> Metadata:
    """``name``'s metadata, with its class list read from its json if not yet."""
    meta = MetadataCatalog.get(name)
    if meta.get("pomp_format") is not None and meta.get("thing_classes") is None:
        meta.set(**_class_metadata(_read_json(meta.json_file, ("categories",))))
    return meta


def image_label_dataset(name: str) -> bool:
    return MetadataCatalog.get(name).get("pomp_format") == "image-labels"


def cat_info(data: dict) -> list[dict]:
    """Detic's cat-info list of a box dataset's json (its ``tools/get_lvis_cat_info.py``): each category as in the
    json, with ``image_count`` (images with at least one annotation of it) and ``instance_count`` counted from the
    annotations."""
    images, instances = defaultdict(set), defaultdict(int)
    for a in data["annotations"]:
        images[a["category_id"]].add(a["image_id"])
        instances[a["category_id"]] += 1
    return [dict(c, image_count=len(images[c["id"]]), instance_count=instances[c["id"]]) for c in data["categories"]]


def write_cat_info(json_file: str, output: str) -> list[dict]:
    """Write ``cat_info`` of an LVIS/COCO-format json to ``output`` (Detic's ``CAT_FREQ_PATH`` format)."""
    info = cat_info(_read_json(json_file, ("annotations", "categories")))
    with open(output, "w") as f:
        json.dump(info, f)
    return info


def load_class_freq(path: str, power: float) -> torch.Tensor:
    """Per-class weights ``[C]`` (float32) from a cat-info json: ``image_count ** power``, classes sorted by id
    (Detic's ``load_class_freq``; ``power`` is ``FED_LOSS_FREQ_WEIGHT``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"class frequency file {path!r} (MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH) does not exist; "
            "write it from the training json with `python -m pomp_plugins.detectron2.cat_info "
            "TRAIN.json -o OUT.json`"
        )
    with open(path) as f:
        info = json.load(f)
    if not isinstance(info, list) or not all(isinstance(c, dict) and {"id", "image_count"} <= c.keys() for c in info):
        raise DatasetFormatError(
            f'{path}: expected Detic\'s cat-info format, a json list of {{"id": ..., "image_count": ...}} objects'
        )
    counts = torch.tensor([c["image_count"] for c in sorted(info, key=lambda c: c["id"])])
    return counts.float() ** power
