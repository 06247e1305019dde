"""A tiny generated dataset of coloured squares in the LVIS json format (and as Detic-style image labels).

For the tests and the CPU config ``detectron2_configs/POMP-Tiny-CPU.yaml``::

    python -m pomp_plugins.detectron2.toy_data datasets/toy

writes ``train.json`` (LVIS format), ``val.json`` (LVIS format), ``image_labels.json`` and ``train_cat_info.json``
(Detic's class-frequency file of ``train.json``, for ``MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH``) beside an ``images/``
folder. Six classes, two per LVIS frequency group (r, c, f), with image counts, polygons and negative categories.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from .data import write_cat_info

CLASSES = (  # (name, LVIS frequency, RGB)
    ("red square", "r", (220, 30, 30)),
    ("green square", "r", (30, 200, 30)),
    ("blue square", "c", (30, 30, 220)),
    ("yellow square", "c", (230, 220, 30)),
    ("white square", "f", (250, 250, 250)),
    ("black square", "f", (10, 10, 10)),
)
NAMES = tuple(name for name, _, _ in CLASSES)


def _overlaps(box, boxes) -> bool:
    x, y, w, h = box
    return any(x < bx + bw and bx < x + w and y < by + bh and by < y + h for bx, by, bw, bh in boxes)


def _squares(rng: random.Random, first_class: int, width: int, height: int) -> list[tuple[int, list[int]]]:
    """1-3 non-overlapping squares: (class index, [x, y, w, h])."""
    squares = []
    for k in range(rng.randint(1, 3)):
        side = rng.randint(min(width, height) // 5, min(width, height) // 2)
        for _ in range(20):
            box = [rng.randint(0, width - side), rng.randint(0, height - side), side, side]
            if not _overlaps(box, [b for _, b in squares]):
                squares.append((first_class if k == 0 else rng.randrange(len(CLASSES)), box))
                break
    return squares


def write_toy_lvis(root: str | Path, split: str, num_images: int, seed: int = 0, image_labels: bool = False) -> Path:
    """Write ``num_images`` images and ``root/<split>.json``; returns the json path.

    Image ``i`` holds a square of class ``i % 6`` and up to two more, on a noisy grey background; images
    alternate between landscape (128x96) and portrait (96x128). With ``image_labels`` the json is Detic's
    image-label format: each image's ``pos_category_ids`` is the class of its largest square.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images, annotations = [], []
    for i in range(num_images):
        width, height = (128, 96) if i % 2 == 0 else (96, 128)
        image = Image.effect_noise((width, height), 20).convert("RGB")
        draw = ImageDraw.Draw(image)
        squares = _squares(rng, i % len(CLASSES), width, height)
        for cls, (x, y, w, h) in squares:
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=CLASSES[cls][2])
        file_name = f"{split}_{i:04d}.png"
        image.save(root / "images" / file_name)
        info = {"id": i + 1, "file_name": file_name, "width": width, "height": height}
        present = {cls + 1 for cls, _ in squares}
        if image_labels:
            info["pos_category_ids"] = [max(squares, key=lambda s: s[1][2])[0] + 1]
        else:
            info["not_exhaustive_category_ids"] = []
            info["neg_category_ids"] = sorted(set(range(1, len(CLASSES) + 1)) - present)
        images.append(info)
        for cls, (x, y, w, h) in squares:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
    categories = []
    for k, (name, frequency, _) in enumerate(CLASSES):
        instances = [a for a in annotations if a["category_id"] == k + 1]
        categories.append(
            {
                "id": k + 1,
                "name": name,
                "synonyms": [name.replace(" ", "_")],
                "frequency": frequency,
                "def": f"a {name}",
                "synset": name.replace(" ", "_"),
                "image_count": len({a["image_id"] for a in instances}),
                "instance_count": len(instances),
            }
        )
    data = {"info": {"description": "POMP toy squares"}, "licenses": [], "images": images, "categories": categories}
    if not image_labels:
        data["annotations"] = annotations
    path = root / f"{split}.json"
    path.write_text(json.dumps(data))
    return path


def write_toy_dataset(root: str | Path, train_images: int = 12, val_images: int = 6) -> dict[str, Path]:
    """The json files the tiny configs read: train (LVIS), val (LVIS), image_labels, train_cat_info."""
    paths = {
        "train": write_toy_lvis(root, "train", train_images, seed=0),
        "val": write_toy_lvis(root, "val", val_images, seed=1),
        "image_labels": write_toy_lvis(root, "image_labels", train_images, seed=2, image_labels=True),
        "train_cat_info": Path(root) / "train_cat_info.json",
    }
    write_cat_info(str(paths["train"]), str(paths["train_cat_info"]))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--train-images", type=int, default=12)
    parser.add_argument("--val-images", type=int, default=6)
    args = parser.parse_args()
    print(json.dumps({k: str(v) for k, v in write_toy_dataset(args.root, args.train_images, args.val_images).items()}))
