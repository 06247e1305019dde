"""Feature-cache mode: image features of V fixed augmented views per training image, computed once.

The image tower is frozen, so its output for a given view never changes. This mode runs the tower once over
``V`` augmented views of every training image, stores the normalised features in a memory-mapped file, and then
trains the text side only: an epoch costs a text forward/backward per step and a few KB of reads.

It fixes the augmentations: every epoch sees the same V views of an image, where normal training draws new views
each epoch. The files, in the cache folder:

- ``features.npy``: ``[num_images, V, D]`` float16 (numpy format, so ``np.load(..., mmap_mode="r")`` reads it);
- ``valid.npy``: ``[num_images]`` bool, False for images that could not be read;
- ``meta.json``: written last, so it marks a complete cache; its ``key`` hashes everything the features depend
  on (CLIP weights, split, views, seed, augmentation settings), and a cache with another key is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..images.features import image_features
from ..images.folder import Sample, Skipped, collate_skipping
from ..prompt.atomic import atomic_write_text
from ..prompt.cache import tensor_fingerprint
from ..prompt.clip import LoadedClip
from .data import CACHE_EPOCH, MultiViewDataset, PixelNormalizer
from .distributed import Distributed


def cache_key(clip: LoadedClip, dataset: MultiViewDataset, settings: dict) -> str:
    """A hash of what the cached features depend on: the image tower's weights, the images and their views."""
    payload = {
        "clip": [clip.name, clip.pretrained, tensor_fingerprint(clip.model.visual)],
        "images": hashlib.sha256(json.dumps([dataset.paths, dataset.labels]).encode()).hexdigest(),
        "views": dataset.views,
        "seed": dataset.seed,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class FeatureCache:
    """A complete cache folder, memory-mapped read-only."""

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        self.meta = json.loads((folder / "meta.json").read_text())
        self.features = np.load(folder / "features.npy", mmap_mode="r")
        self.valid = np.load(folder / "valid.npy")

    @property
    def skipped(self) -> list[str]:
        return self.meta["skipped"]


def build_feature_cache(
    folder: str | os.PathLike,
    key: str,
    dataset: MultiViewDataset,
    clip: LoadedClip,
    normalize: PixelNormalizer,
    dist: Distributed,
    batch_size: int,
    workers: int,
    progress: bool = True,
) -> FeatureCache:
    """The cache of ``dataset``'s fixed views in ``folder``: reused if its key matches, else built.

    Every rank encodes the images ``rank, rank + world_size, ...`` into the shared file.
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        return FeatureCache(folder)

    num_images, views, dim = len(dataset), dataset.views, clip.model.visual.output_dim
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)
        np.lib.format.open_memmap(folder / "features.npy", "w+", np.float16, (num_images, views, dim)).flush()
        np.lib.format.open_memmap(folder / "valid.npy", "w+", np.bool_, (num_images,)).flush()
    dist.barrier()
    features = np.lib.format.open_memmap(folder / "features.npy", "r+")
    valid = np.lib.format.open_memmap(folder / "valid.npy", "r+")

    mine = list(range(dist.rank, num_images, dist.world_size))
    chunks = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    loader = DataLoader(
        dataset,
        batch_sampler=[[(CACHE_EPOCH, i) for i in chunk] for chunk in chunks],
        num_workers=workers,
        collate_fn=collate_skipping,
        pin_memory=dist.device.type == "cuda",
    )
    dtype = next(clip.model.visual.parameters()).dtype
    skipped: list[str] = []
    bar = tqdm(
        zip(chunks, loader),
        total=len(chunks),
        desc="caching image features",
        unit="batch",
        disable=not (progress and dist.is_main),
    )
    for chunk, batch in bar:
        skipped += batch.skipped
        unreadable = set(batch.skipped)
        readable = [i for i in chunk if dataset.paths[i] not in unreadable]
        if readable:
            images = normalize(batch.data.to(dist.device, non_blocking=True).flatten(0, 1), dtype)
            encoded = image_features(clip.model, images).view(len(readable), views, dim)
            features[readable] = encoded.half().cpu().numpy()
            valid[readable] = True
    features.flush()
    valid.flush()
    del features, valid
    skipped = sorted(path for rank_skipped in dist.gather(skipped) for path in rank_skipped)
    dist.barrier()
    if dist.is_main:
        atomic_write_text(
            meta_path,
            json.dumps(
                {"key": key, "images": num_images, "views": views, "dim": dim, "dtype": "float16", "skipped": skipped},
                indent=2,
            ),
        )
    dist.barrier()
    return FeatureCache(folder)


class CachedFeatureDataset(Dataset):
    """Item ``(epoch, index)``: the cached features ``[V, D]`` float16 of training image ``index`` and its label."""

    def __init__(self, cache: FeatureCache, paths: Sequence[str], labels: Sequence[int]):
        if len(cache.features) != len(paths):
            raise ValueError(f"the feature cache holds {len(cache.features)} images, the split {len(paths)}")
        self.cache, self.paths, self.labels = cache, list(paths), list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> Sample | Skipped:
        _, index = key
        if not self.cache.valid[index]:
            return Skipped(self.paths[index])
        return Sample(torch.from_numpy(np.array(self.cache.features[index])), self.labels[index])
