"""Small generated ImageFolder datasets for the demo and the tests: coloured shapes on noisy backgrounds.

Class ``"<colour> <shape>"`` is a shape of that colour at a random place and size, so classes are told apart by
colour and shape, which even a tiny random-weight CLIP's image features separate.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "stripes")


def class_list(num_classes: int) -> list[str]:
    """The first ``num_classes`` of all colour-shape pairs, colours varying fastest."""
    pairs = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]
    if not 1 <= num_classes <= len(pairs):
        raise ValueError(f"between 1 and {len(pairs)} synthetic classes, not {num_classes}")
    return pairs[:num_classes]


def draw(name: str, size: int, rng: random.Random) -> Image.Image:
    """One image of class ``name`` (``"<colour> <shape>"``)."""
    colour_name, shape = name.split(" ")
    colour = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[colour_name])
    noise = np.random.default_rng(rng.getrandbits(32)).integers(90, 166, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    canvas = ImageDraw.Draw(image)
    extent = rng.uniform(0.5, 0.85) * size
    x0, y0 = rng.uniform(0, size - extent), rng.uniform(0, size - extent)
    box = (x0, y0, x0 + extent, y0 + extent)
    if shape == "circle":
        canvas.ellipse(box, fill=colour)
    elif shape == "square":
        canvas.rectangle(box, fill=colour)
    elif shape == "triangle":
        canvas.polygon([(x0, y0 + extent), (x0 + extent / 2, y0), (x0 + extent, y0 + extent)], fill=colour)
    else:
        bar = max(2, size // 8)
        for y in range(0, size, 2 * bar):
            canvas.rectangle((0, y, size, y + bar - 1), fill=colour)
    return image


def make_image_folder(
    root: str | os.PathLike, names: Sequence[str], images_per_class: int, size: int = 48, seed: int = 0
) -> Path:
    """Write ``root/<name with _>/<i>.png`` for each class and return ``root``; same seed, same files."""
    root = Path(root)
    for name in names:
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{name}")
        for i in range(images_per_class):
            draw(name, size, rng).save(folder / f"{i:04d}.png")
    return root
