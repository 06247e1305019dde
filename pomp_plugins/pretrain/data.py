"""Training data: V augmented views per image, reproducible from (seed, epoch, image) alone.

Every random choice of a run is derived from the run seed and a position (epoch and image index for the
augmentations and the data order, rank and step for the negatives), never from a generator's running state. A
resumed run therefore sees exactly the batches and views an uninterrupted run would, whatever the number of
data-loading processes.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..classification.image_folder import Sample, Skipped, load_rgb

# Tags that keep the seed streams of the different random choices apart.
AUGMENTATION, ORDER, NEGATIVES, PROMPT_INIT = 1, 2, 3, 4
CACHE_EPOCH = 2**31  # the "epoch" of the fixed views of the feature cache


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy's ``SeedSequence``): nearby inputs, unrelated seeds."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def train_augmentation(
    image_size: int, crop_scale_min: float = 0.08, randaugment_ops: int = 2, randaugment_magnitude: int = 9
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> uint8 ``[3, S, S]``: random resized crop (bicubic, as CLIP), horizontal flip, RandAugment.

    Normalisation happens on the training device (``PixelNormalizer``), so workers ship 4x fewer bytes.
    """
    steps = [
        T.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
    ]
    if randaugment_ops:
        steps.append(T.RandAugment(randaugment_ops, randaugment_magnitude))
    return T.Compose(steps + [T.PILToTensor()])


class PixelNormalizer:
    """uint8 images ``[N, 3, H, W]`` -> ``(x / 255 - mean) / std`` in a given dtype, on the images' device.

    ``mean``/``std`` are CLIP's (``model.visual.preprocess_cfg``); they are put on ``device`` once, so normalising
    a batch never copies from the host (a blocking copy would make the step wait for the GPU).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return ((images.float() - self.mean) / self.std).to(dtype)


class MultiViewDataset(Dataset):
    """Item ``(epoch, index)``: ``views`` augmented views uint8 ``[V, 3, S, S]`` of image ``index`` and its label.

    The views are drawn from a seed derived from ``(seed, epoch, index)``, inside a forked RNG so the caller's
    random state is untouched. An unreadable image gives ``Skipped``.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], augment: Callable, views: int, seed: int):
        self.paths, self.labels, self.augment, self.views, self.seed = list(paths), list(labels), augment, views, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> Sample | Skipped:
        epoch, index = key
        image = load_rgb(self.paths[index])
        if image is None:
            return Skipped(self.paths[index])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, AUGMENTATION, epoch, index))
            views = torch.stack([self.augment(image) for _ in range(self.views)])
        return Sample(views, self.labels[index])


class EpochBatchSampler(Sampler):
    """This rank's batches of ``(epoch, index)`` for one epoch, from batch ``start`` on.

    The order is a permutation seeded by ``(seed, epoch)``, padded by wrapping around to a multiple of the world
    size and dealt out round-robin, as ``DistributedSampler`` does; every rank gets the same number of batches.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int, epoch: int,
                 start: int = 0):
        if num_items < 1:
            raise ValueError("no training images")
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.epoch, self.start = seed, epoch, start

    @staticmethod
    def batches_per_epoch(num_items: int, batch_size: int, world_size: int) -> int:
        return math.ceil(math.ceil(num_items / world_size) / batch_size)

    def __len__(self) -> int:
        return max(self.batches_per_epoch(self.num_items, self.batch_size, self.world_size) - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, self.epoch))
        order = torch.randperm(self.num_items, generator=generator)
        per_rank = math.ceil(self.num_items / self.world_size)
        order = order.repeat(math.ceil(per_rank * self.world_size / self.num_items))[: per_rank * self.world_size]
        mine = order[self.rank :: self.world_size].tolist()
        for start in range(self.start * self.batch_size, len(mine), self.batch_size):
            yield [(self.epoch, index) for index in mine[start : start + self.batch_size]]
