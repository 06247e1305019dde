"""Training data: V augmented views per image, reproducible from (seed, epoch, image) alone.

Every random choice of a run is derived from the run seed and a position (epoch and image index for the
augmentations and the data order, rank and step for the negatives), never from a generator's running state. A
resumed run therefore sees exactly the batches and views an uninterrupted run would, whatever the number of
data-loading processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..images.folder import Sample, Skipped, load_rgb
from .randaugment import RandAugment2

# Tags that keep the seed streams of the different random choices apart.
AUGMENTATION, ORDER, NEGATIVES, PROMPT_INIT = 1, 2, 3, 4
CACHE_EPOCH = 2**31  # the "epoch" of the fixed views of the feature cache


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy's ``SeedSequence``): nearby inputs, unrelated seeds."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0]) & (2**63 - 1)


RANDAUGMENT_KINDS = ("randaugment2", "torchvision")


def train_augmentation(
    image_size: int,
    crop_scale_min: float = 0.08,
    randaugment_ops: int = 2,
    randaugment_magnitude: int = 9,
    randaugment: str = "randaugment2",
    randaugment_prob: float = 0.6,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> uint8 ``[3, S, S]``: random resized crop (bicubic, as CLIP), horizontal flip, RandAugment.

    ``randaugment``: ``randaugment2`` (Dassl's, what POMP trains with: ``randaugment_ops`` operations, each applied
    with probability ``randaugment_prob`` at a random magnitude) or ``torchvision`` (``T.RandAugment`` with
    ``randaugment_ops`` operations at the fixed ``randaugment_magnitude``). ``randaugment_ops`` 0: none.
    Normalisation happens on the training device (``PixelNormalizer``), so workers ship 4x fewer bytes.
    """
    if randaugment not in RANDAUGMENT_KINDS:
        raise ValueError(f"randaugment must be one of {RANDAUGMENT_KINDS}, got {randaugment!r}")
    steps = [
        T.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
    ]
    if randaugment_ops and randaugment == "randaugment2":
        steps.append(RandAugment2(randaugment_ops, randaugment_prob))
    elif randaugment_ops:
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


class GroupSampler(Sampler):
    """This rank's groups of ``(epoch, index)`` for one epoch, from step ``start`` on.

    One order per epoch, a permutation seeded by ``(seed, epoch)`` alone, is cut into steps of
    ``group_size * groups_per_step`` images and each step into ``groups_per_step`` groups of ``group_size``; rank
    ``r`` of ``world_size`` takes groups ``r * G/W .. (r+1) * G/W - 1`` of every step (``G/W`` consecutive groups).
    So which images form group ``g`` of step ``s`` does not depend on the number of processes. The epoch's last
    step may be smaller: its groups are filled in order, and the ones past the end are empty (yielded as empty
    lists, so every rank yields ``G/W`` groups per step).
    """

    def __init__(
        self,
        num_items: int,
        group_size: int,
        groups_per_step: int,
        rank: int,
        world_size: int,
        seed: int,
        epoch: int,
        start: int = 0,
    ):
        if num_items < 1:
            raise ValueError("no training images")
        if groups_per_step % world_size:
            raise ValueError(f"{groups_per_step} groups per step cannot be split evenly over {world_size} processes")
        self.num_items, self.group_size, self.groups_per_step = num_items, group_size, groups_per_step
        self.rank, self.world_size, self.seed, self.epoch, self.start = rank, world_size, seed, epoch, start

    @property
    def groups_per_rank(self) -> int:
        return self.groups_per_step // self.world_size

    @staticmethod
    def steps_per_epoch(num_items: int, group_size: int, groups_per_step: int) -> int:
        return math.ceil(num_items / (group_size * groups_per_step))

    def __len__(self) -> int:
        steps = self.steps_per_epoch(self.num_items, self.group_size, self.groups_per_step)
        return max(steps - self.start, 0) * self.groups_per_rank

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, self.epoch))
        order = torch.randperm(self.num_items, generator=generator).tolist()
        steps = self.steps_per_epoch(self.num_items, self.group_size, self.groups_per_step)
        for step in range(self.start, steps):
            for group in self.groups_of_rank():
                first = (step * self.groups_per_step + group) * self.group_size
                yield [(self.epoch, index) for index in order[first : first + self.group_size]]

    def groups_of_rank(self) -> range:
        """This rank's group numbers within a step."""
        return range(self.rank * self.groups_per_rank, (self.rank + 1) * self.groups_per_rank)
