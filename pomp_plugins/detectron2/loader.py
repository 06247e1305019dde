"""Detic's training data: datasets drawn per image at a ratio, batched one dataset at a time (Detic's loader).

With ``DATALOADER.SAMPLER_TRAIN: MultiDatasetSampler`` (Detic's recipe for box + image-label co-training):

- ``DatasetRatioSampler`` (centernet2's ``MultiDatasetSampler`` plus Detic's per-dataset ``USE_RFS``) draws every
  image independently: dataset ``i`` with probability ``DATASET_RATIO[i] / sum(DATASET_RATIO)``, and an image of it
  uniformly or, with ``USE_RFS[i]``, by LVIS repeat factors (category frequency for box datasets, ``pos_category_ids``
  frequency for image-labelled ones).
- ``MultiDatasetMapper`` maps each image with its dataset's own augmentation (``USE_DIFF_BS_SIZE``:
  ``EfficientDetResizeCrop(DATASET_INPUT_SIZE[i], DATASET_INPUT_SCALE[i])`` or
  ``ResizeShortestEdge(DATASET_MIN_SIZES[i], DATASET_MAX_SIZES[i])``) and, with ``WITH_IMAGE_LABELS``, adds
  ``ann_type`` (``DATASET_ANN[i]``) and
  ``pos_category_ids`` (contiguous class indices) as Detic's ``CustomDatasetMapper`` does.
- ``MultiDatasetBatches`` (``MULTI_DATASET_GROUPING``) fills one bucket per (dataset, landscape/portrait) and emits a
  bucket when it holds ``DATASET_BS[i]`` images (``USE_DIFF_BS_SIZE``) or ``IMS_PER_BATCH / world size``.

So with Detic's ``DATASET_RATIO [1, 4]`` and ``DATASET_BS [8, 32]`` a box batch and an image-label batch are each
completed once every 40 images on average: 1:1 iterations, every batch of one dataset.
"""

from __future__ import annotations

import logging
import math
import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import torch
from centernet.data.custom_build_augmentation import build_custom_augmentation
from centernet.data.custom_dataset_dataloader import MultiDatasetSampler
from detectron2.config import CfgNode, configurable
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import build_batch_data_loader, worker_init_reset_seed
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset

from .config import PompConfigError
from .data import class_metadata, image_label_dataset

logger = logging.getLogger(__name__)

ANN_TYPES = ("box", "image")


def repeat_factors_from_tag_frequency(dataset_dicts: Sequence[dict], repeat_thresh: float) -> torch.Tensor:
    """LVIS repeat factors ``[N]`` (float32) of image-labelled images, with each image's ``pos_category_ids`` as its
    categories: ``r(c) = max(1, sqrt(t / f(c)))``, ``f(c)`` the fraction of images tagged ``c``; an image's factor is
    the largest of its tags' (1 for an untagged image)."""
    images_with = defaultdict(int)
    for d in dataset_dicts:
        for c in set(d["pos_category_ids"]):
            images_with[c] += 1
    rep = {c: max(1.0, math.sqrt(repeat_thresh / (n / len(dataset_dicts)))) for c, n in images_with.items()}
    return torch.tensor(
        [max((rep[c] for c in d["pos_category_ids"]), default=1.0) for d in dataset_dicts], dtype=torch.float32
    )


def _per_dataset(cfg: CfgNode, key: str, count: int) -> list:
    values = list(cfg.DATALOADER[key])
    if len(values) != count:
        raise PompConfigError(
            f"DATALOADER.{key} has {len(values)} entries for {count} training datasets "
            f"{list(cfg.DATASETS.TRAIN)}; give one per dataset"
        )
    return values


class DatasetRatioSampler(MultiDatasetSampler):
    """centernet2's ``MultiDatasetSampler`` (Detic's, without repeat factors) with Detic's per-dataset ``USE_RFS``.

    Image ``j`` of dataset ``i`` (size ``s_i``) is drawn with weight ``max(s) / s_i * r_i / sum(r) * f_j``, where
    ``f_j`` is its repeat factor normalised to sum to ``s_i`` (1 without RFS); the stream is ``torch.multinomial``
    over all images with replacement, ``len(dataset)`` draws at a time, every ``world_size``-th index on this rank.
    Same seed, same dataset dicts: the same index stream as Detic's sampler.
    """

    def __init__(self, cfg: CfgNode, dataset_dicts: Sequence[dict], seed: int | None = None):
        """
        Args:
            cfg: reads ``DATALOADER.{DATASET_RATIO, USE_RFS, DATASET_ANN, REPEAT_THRESHOLD}``.
            dataset_dicts: the concatenated training images, each with ``dataset_source`` (its dataset's index),
                the datasets in order.
            seed: shared by all ranks; ``None`` = a random seed shared by all processes.
        """
        count = len(cfg.DATALOADER.DATASET_RATIO)
        sources = [d["dataset_source"] for d in dataset_dicts]
        sizes = [sources.count(i) for i in range(count)]
        if sources != sorted(sources) or 0 in sizes:
            raise PompConfigError(
                f"DatasetRatioSampler needs the images of {count} non-empty datasets in dataset "
                f"order; dataset sizes {sizes}"
            )
        if min(cfg.DATALOADER.DATASET_RATIO) < 0 or sum(cfg.DATALOADER.DATASET_RATIO) <= 0:
            raise PompConfigError(
                f"DATALOADER.DATASET_RATIO must be non-negative with a positive sum, got "
                f"{list(cfg.DATALOADER.DATASET_RATIO)}"
            )
        use_rfs = _per_dataset(cfg, "USE_RFS", count)
        dataset_ann = _per_dataset(cfg, "DATASET_ANN", count)
        super().__init__(cfg, sizes, dataset_dicts, seed)
        factors, start = [], 0
        for size, rfs, ann in zip(sizes, use_rfs, dataset_ann):
            dicts = dataset_dicts[start : start + size]
            if not rfs:
                factor = torch.ones(size)
            elif ann == "box":
                factor = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                    dicts, cfg.DATALOADER.REPEAT_THRESHOLD
                )
            else:
                factor = repeat_factors_from_tag_frequency(dicts, cfg.DATALOADER.REPEAT_THRESHOLD)
            factors.append(factor * (size / factor.sum()) if rfs else factor)
            start += size
        self.weights = self.weights * torch.cat(factors)

    def _infinite_indices(self) -> Iterator[int]:
        # centernet2's prints each epoch's per-dataset counts to stdout; the draws are the same.
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            yield from torch.multinomial(
                self.weights, self.sample_epoch_size, generator=generator, replacement=True
            ).tolist()


class MultiDatasetBatches(IterableDataset):
    """Batches of mapped training images, each of one dataset and one aspect-ratio group (Detic's
    ``MULTI_DATASET_GROUPING``): a bucket per (dataset, landscape/portrait) is emitted when it holds its dataset's
    batch size."""

    def __init__(self, images: Iterable[dict], batch_sizes: Sequence[int]):
        """
        Args:
            images: mapped images, each with ``dataset_source``, ``width`` and ``height`` (the original size).
            batch_sizes: images per batch of each dataset, on this process.
        """
        self.images = images
        self.batch_sizes = list(batch_sizes)

    def __iter__(self) -> Iterator[list[dict]]:
        buckets = [[] for _ in range(2 * len(self.batch_sizes))]
        for d in self.images:
            source = d["dataset_source"]
            bucket = buckets[2 * source + (0 if d["width"] > d["height"] else 1)]
            bucket.append(d)
            if len(bucket) == self.batch_sizes[source]:
                yield bucket[:]
                del bucket[:]


def build_augmentation(cfg: CfgNode, is_train: bool) -> list | None:
    """``INPUT.CUSTOM_AUG``'s augmentations (centernet2's ``build_custom_augmentation``: ``EfficientDetResizeCrop``
    of ``TRAIN_SIZE``/``SCALE_RANGE`` in training, ``TEST_SIZE`` at scale 1 in testing; ``ResizeShortestEdge``;
    flips in training); ``None`` for ``CUSTOM_AUG: ""`` (detectron2's ``DatasetMapper`` defaults)."""
    if cfg.INPUT.CUSTOM_AUG == "":
        return None
    if cfg.INPUT.CUSTOM_AUG not in ("EfficientDetResizeCrop", "ResizeShortestEdge"):
        raise PompConfigError(
            f"INPUT.CUSTOM_AUG {cfg.INPUT.CUSTOM_AUG!r} is not supported; use '', "
            "'EfficientDetResizeCrop' or 'ResizeShortestEdge'"
        )
    return build_custom_augmentation(cfg, is_train)


def _dataset_augmentation(cfg: CfgNode, index: int) -> list:
    """Training augmentation of dataset ``index`` under ``USE_DIFF_BS_SIZE`` (its own input size and scale)."""
    count = len(cfg.DATASETS.TRAIN)
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.INPUT.CUSTOM_AUG == "EfficientDetResizeCrop":
        cfg.INPUT.TRAIN_SIZE = _per_dataset(cfg, "DATASET_INPUT_SIZE", count)[index]
        cfg.INPUT.SCALE_RANGE = tuple(_per_dataset(cfg, "DATASET_INPUT_SCALE", count)[index])
    elif cfg.INPUT.CUSTOM_AUG == "ResizeShortestEdge":
        cfg.INPUT.MIN_SIZE_TRAIN = tuple(_per_dataset(cfg, "DATASET_MIN_SIZES", count)[index])
        cfg.INPUT.MAX_SIZE_TRAIN = _per_dataset(cfg, "DATASET_MAX_SIZES", count)[index]
    else:
        raise PompConfigError(
            "DATALOADER.USE_DIFF_BS_SIZE needs INPUT.CUSTOM_AUG 'EfficientDetResizeCrop' "
            f"(DATASET_INPUT_SIZE/SCALE) or 'ResizeShortestEdge' (DATASET_MIN/MAX_SIZES), not "
            f"{cfg.INPUT.CUSTOM_AUG!r}"
        )
    return build_custom_augmentation(cfg, True)


class MultiDatasetMapper:
    """Detic's ``CustomDatasetMapper``: detectron2's ``DatasetMapper`` per dataset (each with its augmentation),
    and with ``with_ann_type`` each output also holds ``ann_type`` (its dataset's ``DATASET_ANN``) and
    ``pos_category_ids`` (contiguous class indices; [] for box images). Image-labelled images get empty
    ``instances``."""

    @configurable
    def __init__(
        self, mappers: Sequence[DatasetMapper], *, with_ann_type: bool = False, dataset_ann: Sequence[str] = ()
    ):
        """
        Args:
            mappers: one mapper for all images, or one per dataset (indexed by ``dataset_source``).
            with_ann_type: add ``ann_type`` and ``pos_category_ids`` (Detic's ``WITH_IMAGE_LABELS``).
            dataset_ann: each dataset's annotation type, ``box`` or ``image``.
        """
        self.mappers = list(mappers)
        self.with_ann_type = with_ann_type
        self.dataset_ann = list(dataset_ann)

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        count = len(cfg.DATASETS.TRAIN)
        if is_train and cfg.DATALOADER.USE_DIFF_BS_SIZE:
            mappers = [DatasetMapper(cfg, True, augmentations=_dataset_augmentation(cfg, i)) for i in range(count)]
        else:
            augmentations = build_augmentation(cfg, is_train)
            mappers = [
                DatasetMapper(cfg, is_train)
                if augmentations is None
                else DatasetMapper(cfg, is_train, augmentations=augmentations)
            ]
        with_ann_type = is_train and cfg.WITH_IMAGE_LABELS
        dataset_ann = _per_dataset(cfg, "DATASET_ANN", count) if with_ann_type else []
        unknown = sorted(set(dataset_ann) - set(ANN_TYPES))
        if unknown:
            raise PompConfigError(f"DATALOADER.DATASET_ANN entries {unknown} are not supported; use {ANN_TYPES}")
        return {"mappers": mappers, "with_ann_type": with_ann_type, "dataset_ann": dataset_ann}

    def __call__(self, dataset_dict: dict) -> dict:
        source = dataset_dict.get("dataset_source", 0)
        mapped = self.mappers[source if len(self.mappers) > 1 else 0](dataset_dict)
        if self.with_ann_type:
            mapped["pos_category_ids"] = mapped.get("pos_category_ids", [])
            mapped["ann_type"] = self.dataset_ann[source]
        return mapped


def build_test_mapper(cfg: CfgNode) -> DatasetMapper | None:
    """The test-time mapper of ``INPUT.TEST_INPUT_TYPE`` as in Detic: ``None`` (detectron2's default,
    ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``) for ``default``, else ``INPUT.CUSTOM_AUG`` at test time
    (``EfficientDetResizeCrop(TEST_SIZE)``, no random scale)."""
    if cfg.INPUT.TEST_INPUT_TYPE == "default":
        return None
    augmentations = build_augmentation(cfg, False)
    if augmentations is None:
        raise PompConfigError(f"INPUT.TEST_INPUT_TYPE {cfg.INPUT.TEST_INPUT_TYPE!r} needs an INPUT.CUSTOM_AUG")
    return DatasetMapper(cfg, False, augmentations=augmentations)


def annotation_types(cfg: CfgNode) -> list[str]:
    """Each training dataset's annotation type: ``DATASET_ANN`` with ``WITH_IMAGE_LABELS`` (checked against the
    formats of the datasets registered here), else all ``box``."""
    names = list(cfg.DATASETS.TRAIN)
    labelled = [n for n in names if image_label_dataset(n)]
    if not cfg.WITH_IMAGE_LABELS:
        if labelled:
            raise PompConfigError(f"training on image-labelled datasets {labelled} needs WITH_IMAGE_LABELS True")
        return ["box"] * len(names)
    dataset_ann = _per_dataset(cfg, "DATASET_ANN", len(names))
    known = [n for n in names if MetadataCatalog.get(n).get("pomp_format") is not None]
    wrong = [n for n, ann in zip(names, dataset_ann) if n in known and (ann == "box") == (n in labelled)]
    if wrong:
        raise PompConfigError(
            f"DATALOADER.DATASET_ANN {dataset_ann} does not match the datasets {names}: "
            f"{wrong} hold {'image labels' if wrong[0] in labelled else 'boxes'}"
        )
    if dataset_ann[0] != "box":
        raise PompConfigError(f"the first training dataset defines the classes and must hold boxes ({names})")
    return dataset_ann


def training_dataset_dicts(cfg: CfgNode) -> list[dict]:
    """The images of ``DATASETS.TRAIN`` in order, each with ``dataset_source``. Box datasets drop images without
    annotations when ``FILTER_EMPTY_ANNOTATIONS`` (image-labelled ones never do); image-labelled datasets must have
    the first dataset's classes (their ``pos_category_ids`` are indices into them)."""
    names = list(cfg.DATASETS.TRAIN)
    classes = class_metadata(names[0]).get("thing_classes")
    dicts = []
    for source, (name, ann) in enumerate(zip(names, annotation_types(cfg))):
        is_box = ann == "box"
        images = get_detection_dataset_dicts([name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and is_box)
        if not is_box and class_metadata(name).get("thing_classes") not in (None, classes):
            raise PompConfigError(f"image-labelled dataset {name} has other classes than {names[0]}")
        dicts.extend(dict(d, dataset_source=source) for d in images)
    return dicts


def build_train_loader(cfg: CfgNode) -> Iterable[list[dict]]:
    """The training loader of ``cfg``, as Detic's ``train_net.py`` builds it: detectron2's for
    ``SAMPLER_TRAIN`` ``TrainingSampler`` / ``RepeatFactorTrainingSampler``, else Detic's multi-dataset loader
    (``MultiDatasetSampler``, with ``MULTI_DATASET_GROUPING`` batches of one dataset each)."""
    sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
    grouped = sampler_name == "MultiDatasetSampler" and cfg.DATALOADER.MULTI_DATASET_GROUPING
    if any(ann != "box" for ann in annotation_types(cfg)) and not grouped:
        raise PompConfigError(
            "image-labelled training data needs DATALOADER.SAMPLER_TRAIN MultiDatasetSampler "
            "and DATALOADER.MULTI_DATASET_GROUPING True (every batch from one dataset)"
        )
    mapper = MultiDatasetMapper(cfg, True)
    dicts = training_dataset_dicts(cfg)
    if sampler_name in ("TrainingSampler", "RepeatFactorTrainingSampler"):
        return build_detection_train_loader(cfg, dataset=dicts, mapper=mapper)
    if sampler_name != "MultiDatasetSampler":
        raise PompConfigError(
            f"DATALOADER.SAMPLER_TRAIN {sampler_name!r} is not supported; use TrainingSampler, "
            "RepeatFactorTrainingSampler or MultiDatasetSampler"
        )
    sampler = DatasetRatioSampler(cfg, dicts, seed=cfg.SEED if cfg.SEED >= 0 else None)
    dataset = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    if not cfg.DATALOADER.MULTI_DATASET_GROUPING:
        return build_batch_data_loader(
            dataset,
            sampler,
            cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
    world_size = comm.get_world_size()
    if cfg.DATALOADER.USE_DIFF_BS_SIZE:
        batch_sizes = _per_dataset(cfg, "DATASET_BS", len(cfg.DATASETS.TRAIN))
    else:
        if cfg.SOLVER.IMS_PER_BATCH % world_size:
            raise PompConfigError(
                f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world_size} processes"
            )
        batch_sizes = [cfg.SOLVER.IMS_PER_BATCH // world_size] * len(cfg.DATASETS.TRAIN)
    logger.info(
        f"Multi-dataset loader: ratios {list(cfg.DATALOADER.DATASET_RATIO)}, images per batch per process {batch_sizes}"
    )
    images = DataLoader(
        dataset,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=operator.itemgetter(0),
        worker_init_fn=worker_init_reset_seed,
    )  # one image each
    return MultiDatasetBatches(images, batch_sizes)
