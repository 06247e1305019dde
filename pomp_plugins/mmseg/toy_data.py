"""A tiny synthetic segmentation dataset in mmseg's folder layout, for the CPU config, the tests and the demo.

Each image is a few horizontal bands, one class each; every class has its own colour and texture, so a tiny model
learns it in a few dozen steps. Train images contain the unseen class too: zero-shot training must ignore it.

    python -m pomp_plugins.mmseg.toy_data data/pomp_toy      # then: tools/train.py mmseg_configs/tiny_zsseg_cpu.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

TOY_CLASSES = ("sky", "grass", "road", "water", "snow")
TOY_UNSEEN = ("water",)
_COLOURS = np.array([[135, 190, 235], [60, 160, 60], [90, 90, 90], [30, 70, 160], [240, 240, 245]], np.float32)


def toy_sample(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One ``[size, size, 3]`` uint8 RGB image and its ``[size, size]`` uint8 label map."""
    num_bands = int(rng.integers(2, 4))
    classes = rng.choice(len(TOY_CLASSES), size=num_bands, replace=False)
    edges = np.sort(rng.choice(np.arange(8, size - 8), size=num_bands - 1, replace=False))
    label = np.zeros((size, size), np.uint8)
    for cls, start, stop in zip(classes, np.r_[0, edges], np.r_[edges, size]):
        label[start:stop] = cls
    stripes = (np.arange(size)[None, :] // (2 + label.astype(int)) % 2) * 20.0  # class-dependent texture
    image = _COLOURS[label] + stripes[..., None] + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_toy_dataset(root: str | Path, num_train: int = 32, num_val: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write ``img_dir/{train,val}/NNN.png`` and ``ann_dir/{train,val}/NNN.png`` under ``root``; returns it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = toy_sample(rng, size)
            cv2.imwrite(str(root / "img_dir" / split / f"{i:03d}.png"), image[..., ::-1])  # cv2 writes BGR
            cv2.imwrite(str(root / "ann_dir" / split / f"{i:03d}.png"), label)
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--num-train", type=int, default=32)
    parser.add_argument("--num-val", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_toy_dataset(args.root, args.num_train, args.num_val, args.size, args.seed)
    print(json.dumps({"root": str(root), "classes": TOY_CLASSES, "unseen": TOY_UNSEEN}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
