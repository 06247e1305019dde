"""Training data of several datasets mixed at a set ratio, each batch from one dataset (Detic's loader).

Built from detectron2's parts: ``get_detection_dataset_dicts``, ``DatasetMapper`` and
``build_detection_train_loader``; only the sampler is new. It draws, per batch, a dataset by
``DATALOADER.DATASET_RATIO``, then an aspect-ratio group of it (landscape/portrait, by size), then
``batch_size`` images of that group (weighted by LVIS repeat factors when ``SAMPLER_TRAIN`` is
``RepeatFactorTrainingSampler``). The indices of a batch are consecutive in the sampler's stream, which
detectron2's loader shards over workers in chunks of one batch, so every batch stays homogeneous.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Optional, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm
from torch.utils.data import Sampler

from .config import PompConfigError
from .data import class_metadata, image_label_dataset


class DatasetRatioSampler(Sampler):
    """An infinite stream of dataset indices, in runs of ``batch_size`` from one (dataset, aspect ratio) group."""

    def __init__(self, datasets: Sequence[Sequence[dict]], ratios: Sequence[float], batch_size: int,
                 weights: Optional[Sequence[torch.Tensor]] = None, seed: Optional[int] = None):
        """
        Args:
            datasets: the dataset dicts of each dataset (with ``width``/``height``); indices count through their
                concatenation in this order.
            ratios: how often each dataset is drawn, relative to the others.
            batch_size: images per batch on this process.
            weights: per dataset, a sampling weight per image (e.g. repeat factors); ``None`` = uniform.
            seed: shared by all processes (each rank then draws its own stream from it); ``None`` = a shared
                random seed.
        """
        if len(ratios) != len(datasets) or min(ratios) < 0 or sum(ratios) <= 0:
            raise PompConfigError(f"need one non-negative ratio per dataset ({len(datasets)}), got {list(ratios)}")
        self.batch_size = batch_size
        self.ratios = torch.as_tensor(ratios, dtype=torch.float64)
        self.seed = comm.shared_random_seed() if seed is None else seed
        self.groups: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # per dataset: (indices, weights)
        offset = 0
        for i, dicts in enumerate(datasets):
            w = torch.ones(len(dicts), dtype=torch.float64) if weights is None else weights[i].double()
            landscape = torch.tensor([d["width"] > d["height"] for d in dicts], dtype=torch.bool)
            self.groups.append([(torch.nonzero(mask).flatten() + offset, w[mask])
                                for mask in (landscape, ~landscape) if mask.any()])
            offset += len(dicts)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + comm.get_rank())
        while True:
            dataset = torch.multinomial(self.ratios, 1, generator=generator).item()
            groups = self.groups[dataset]
            group_weights = torch.stack([w.sum() for _, w in groups])
            indices, weights = groups[torch.multinomial(group_weights, 1, generator=generator).item()]
            picks = torch.multinomial(weights, self.batch_size, replacement=True, generator=generator)
            yield from indices[picks].tolist()


def _with_image_labels(dicts: list[dict], name: str, id_map: dict, reference: str) -> list[dict]:
    """Image-labelled dicts with ``image_labels``: their category ids as class indices of ``reference``."""
    for d in dicts:
        unknown = [c for c in d["pos_category_ids"] if c not in id_map]
        if unknown:
            raise PompConfigError(f"image {d['image_id']} of {name} has category ids {unknown} that the "
                                  f"training classes (those of {reference}) do not have")
        d["image_labels"] = [id_map[c] for c in d["pos_category_ids"]]
    return dicts


def build_train_loader(cfg: CfgNode):
    """The training loader ``cfg`` asks for: detectron2's own without ``DATALOADER.DATASET_RATIO``, else the mix."""
    names = list(cfg.DATASETS.TRAIN)
    labelled = [n for n in names if image_label_dataset(n)]
    ratios = list(cfg.DATALOADER.DATASET_RATIO)
    if labelled and not cfg.MODEL.POMP.WITH_IMAGE_LABELS:
        raise PompConfigError(f"training on image-labelled datasets {labelled} needs MODEL.POMP.WITH_IMAGE_LABELS "
                              "True")
    if not ratios:
        if labelled:
            raise PompConfigError(f"image-labelled datasets {labelled} need DATALOADER.DATASET_RATIO, one ratio per "
                                  f"DATASETS.TRAIN entry {names}")
        return build_detection_train_loader(cfg)
    if len(ratios) != len(names):
        raise PompConfigError(f"DATALOADER.DATASET_RATIO has {len(ratios)} entries for {len(names)} training "
                              f"datasets {names}")
    if names[0] in labelled:
        raise PompConfigError(f"the first training dataset defines the classes and must hold boxes, not image "
                              f"labels ({names[0]})")
    id_map = class_metadata(names[0]).thing_dataset_id_to_contiguous_id

    datasets, weights = [], []
    for name in names:
        dicts = get_detection_dataset_dicts([name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        if name in labelled:
            dicts = _with_image_labels(dicts, name, id_map, names[0])
            weights.append(torch.ones(len(dicts)))
        elif cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
            weights.append(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dicts, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT))
        else:
            weights.append(torch.ones(len(dicts)))
        datasets.append(dicts)
    for name in names[1:]:
        if not image_label_dataset(name) and MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id") \
                != id_map:
            raise PompConfigError(f"box datasets {names[0]} and {name} have different classes")

    batch_size = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    sampler = DatasetRatioSampler(datasets, ratios, batch_size, weights, seed=cfg.SEED if cfg.SEED >= 0 else None)
    return build_detection_train_loader(
        list(itertools.chain.from_iterable(datasets)),
        mapper=DatasetMapper(cfg, is_train=True),
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
