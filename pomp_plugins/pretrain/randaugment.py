"""Dassl's ``randaugment2`` (what POMP trains with), on torch's random generator.

The recipe (Dassl.pytorch ``RandAugment2``, ``n=2, p=0.6``): pick ``n`` operations uniformly *with* replacement
from the 15 below; apply each with probability ``p``, at a magnitude drawn uniformly from the operation's range.
The geometric ones (rotate, shear, translate) also flip the sign of their value with probability 1/2, as Dassl
does. Ranges (Dassl's ``randaugment_list2``): enhancement factors (brightness, colour, contrast, sharpness)
0.1..1.9; posterize 4..8 bits (truncated to an integer); rotate -30..30 degrees; shear -0.3..0.3; solarize
threshold 0..256; translate -0.3..0.3 of the image's width or height; autocontrast, equalize, identity and invert
take no magnitude.

Dassl draws from Python's ``random``; here every draw comes from torch's generator, which ``MultiViewDataset``
seeds per (run seed, epoch, image), so views stay reproducible and resume stays exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageEnhance, ImageOps


def _affine(image: Image.Image, coefficients: tuple) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, coefficients)


def _posterize(image: Image.Image, value: float) -> Image.Image:
    return ImageOps.posterize(image, int(value))


@dataclass(frozen=True)
class AugmentOp:
    """One operation: ``apply(image, value)`` with ``value`` drawn from ``[low, high]``; ``signed``: the value's
    sign is flipped with probability 1/2 before it is applied."""

    name: str
    low: float
    high: float
    apply: Callable[[Image.Image, float], Image.Image]
    signed: bool = False


DASSL_OPS: tuple[AugmentOp, ...] = (
    AugmentOp("AutoContrast", 0, 1, lambda image, _: ImageOps.autocontrast(image)),
    AugmentOp("Brightness", 0.1, 1.9, lambda image, v: ImageEnhance.Brightness(image).enhance(v)),
    AugmentOp("Color", 0.1, 1.9, lambda image, v: ImageEnhance.Color(image).enhance(v)),
    AugmentOp("Contrast", 0.1, 1.9, lambda image, v: ImageEnhance.Contrast(image).enhance(v)),
    AugmentOp("Equalize", 0, 1, lambda image, _: ImageOps.equalize(image)),
    AugmentOp("Identity", 0, 1, lambda image, _: image),
    AugmentOp("Invert", 0, 1, lambda image, _: ImageOps.invert(image)),
    AugmentOp("Posterize", 4, 8, _posterize),
    AugmentOp("Rotate", -30, 30, lambda image, v: image.rotate(v), signed=True),
    AugmentOp("Sharpness", 0.1, 1.9, lambda image, v: ImageEnhance.Sharpness(image).enhance(v)),
    AugmentOp("ShearX", -0.3, 0.3, lambda image, v: _affine(image, (1, v, 0, 0, 1, 0)), signed=True),
    AugmentOp("ShearY", -0.3, 0.3, lambda image, v: _affine(image, (1, 0, 0, v, 1, 0)), signed=True),
    AugmentOp("Solarize", 0, 256, lambda image, v: ImageOps.solarize(image, v)),
    AugmentOp(
        "TranslateX", -0.3, 0.3, lambda image, v: _affine(image, (1, 0, v * image.size[0], 0, 1, 0)), signed=True
    ),
    AugmentOp(
        "TranslateY", -0.3, 0.3, lambda image, v: _affine(image, (1, 0, 0, 0, 1, v * image.size[1])), signed=True
    ),
)


class RandAugment2:
    """PIL RGB image -> PIL image: ``n`` operations of ``ops``, each applied with probability ``p`` at a random
    magnitude (see the module's docstring). Draws from torch's global generator."""

    def __init__(self, n: int = 2, p: float = 0.6, ops: Sequence[AugmentOp] = DASSL_OPS):
        if n < 0 or not 0 <= p <= 1:
            raise ValueError(f"randaugment2 needs n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
        self.n, self.p, self.ops = n, p, tuple(ops)

    def __call__(self, image: Image.Image) -> Image.Image:
        picks = torch.randint(len(self.ops), (self.n,)).tolist()
        for index in picks:
            applied, magnitude, sign = torch.rand(3).tolist()  # always three draws: a fixed stream per pick
            if applied >= self.p:
                continue
            op = self.ops[index]
            value = op.low + magnitude * (op.high - op.low)
            if op.signed and sign < 0.5:
                value = -value
            image = op.apply(image, value)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, p={self.p}, ops={[op.name for op in self.ops]})"
