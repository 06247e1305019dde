"""Dassl's randaugment2 on torch's generator: n ops picked uniformly, each applied with probability p at a
uniformly random magnitude in Dassl's ranges; the ops are what their names say; it is the training default."""

import collections
from dataclasses import replace

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from pomp_plugins.pretrain.data import train_augmentation
from pomp_plugins.pretrain.randaugment import DASSL_OPS, RandAugment2

# Dassl.pytorch randaugment_list2 (name, low, high), and which ops flip their value's sign half the time
DASSL_RANGES = {
    "AutoContrast": (0, 1),
    "Brightness": (0.1, 1.9),
    "Color": (0.1, 1.9),
    "Contrast": (0.1, 1.9),
    "Equalize": (0, 1),
    "Identity": (0, 1),
    "Invert": (0, 1),
    "Posterize": (4, 8),
    "Rotate": (-30, 30),
    "Sharpness": (0.1, 1.9),
    "ShearX": (-0.3, 0.3),
    "ShearY": (-0.3, 0.3),
    "Solarize": (0, 256),
    "TranslateX": (-0.3, 0.3),
    "TranslateY": (-0.3, 0.3),
}
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def test_the_op_list_is_dassls():
    assert {op.name: (op.low, op.high) for op in DASSL_OPS} == DASSL_RANGES
    assert {op.name for op in DASSL_OPS if op.signed} == SIGNED


def test_each_pick_is_applied_with_probability_p_at_a_random_magnitude():
    calls = []
    recording = [replace(op, apply=lambda image, v, name=op.name: calls.append((name, v)) or image) for op in DASSL_OPS]
    augment, image, draws = RandAugment2(2, 0.6, recording), Image.new("RGB", (4, 4)), 6000
    torch.manual_seed(0)
    for _ in range(draws):
        augment(image)
    picks = 2 * draws
    # each pick applied with probability 0.6: binomial, 12,000 picks -> standard deviation 0.0045
    assert abs(len(calls) / picks - 0.6) < 0.02
    counts = collections.Counter(name for name, _ in calls)
    for name in DASSL_RANGES:  # picked uniformly (1/15 each), so each op is applied ~0.6 * 800 = 480 times
        assert abs(counts[name] / picks - 0.6 / 15) < 0.01, name
    values = collections.defaultdict(list)
    for name, value in calls:
        values[name].append(value)
    for name, (low, high) in DASSL_RANGES.items():
        v = np.array(values[name])
        if name in SIGNED:  # |value| uniform over [0, high] (Dassl's range, then a random sign)
            v = np.abs(v)
            low = 0.0
        assert low <= v.min() and v.max() <= high, name
        assert v.min() < low + 0.05 * (high - low) and v.max() > high - 0.05 * (high - low), name  # full range
        assert abs(v.mean() - (low + high) / 2) < 0.06 * (high - low), name  # uniform, not a fixed magnitude
    signs = np.sign(values["Rotate"])
    assert 0.4 < (signs > 0).mean() < 0.6


def test_the_ops_do_what_their_names_say():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ops = {op.name: op.apply for op in DASSL_OPS}
    assert np.array_equal(np.array(ops["Invert"](image, 0.5)), 255 - pixels)
    assert np.array_equal(np.array(ops["Solarize"](image, 100)), np.where(pixels >= 100, 255 - pixels, pixels))
    assert np.array_equal(np.array(ops["Posterize"](image, 5.9)), pixels & 0b11111000)  # int(5.9) = 5 bits
    assert np.array_equal(np.array(ops["Identity"](image, 0.3)), pixels)
    shifted = np.array(ops["TranslateX"](image, 0.25))  # 0.25 of 8 px: the output at x samples the input at x + 2
    assert np.array_equal(shifted[:, :6], pixels[:, 2:]) and not shifted[:, 6:].any()
    assert np.array_equal(np.array(ops["Brightness"](image, 1.0)), pixels)  # factor 1: unchanged


def test_randaugment2_is_the_default_and_torchvisions_an_option():
    default = train_augmentation(32)
    assert any(isinstance(step, RandAugment2) and (step.n, step.p) == (2, 0.6) for step in default.transforms)
    torchvision = train_augmentation(32, randaugment="torchvision")
    assert any(isinstance(step, T.RandAugment) for step in torchvision.transforms)
    none = train_augmentation(32, randaugment_ops=0)
    assert not any(isinstance(step, (RandAugment2, T.RandAugment)) for step in none.transforms)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    torch.manual_seed(3)
    first = default(image)
    torch.manual_seed(3)
    assert first.shape == (3, 32, 32) and torch.equal(first, default(image))  # all draws from torch's generator


def test_every_op_is_its_pil_operation_with_dassls_arguments():
    from PIL import ImageEnhance, ImageOps

    pixels = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ops = {op.name: op.apply for op in DASSL_OPS}
    affine = lambda coefficients: np.array(image.transform(image.size, Image.AFFINE, coefficients))  # noqa: E731
    expected = {
        "AutoContrast": np.array(ImageOps.autocontrast(image)),
        "Equalize": np.array(ImageOps.equalize(image)),
        "Brightness": np.array(ImageEnhance.Brightness(image).enhance(0.4)),
        "Color": np.array(ImageEnhance.Color(image).enhance(0.4)),
        "Contrast": np.array(ImageEnhance.Contrast(image).enhance(0.4)),
        "Sharpness": np.array(ImageEnhance.Sharpness(image).enhance(0.4)),
        "ShearX": affine((1, 0.4, 0, 0, 1, 0)),
        "ShearY": affine((1, 0, 0, 0.4, 1, 0)),
    }
    for name, want in expected.items():
        assert np.array_equal(np.array(ops[name](image, 0.4)), want), name
    assert not np.array_equal(expected["Brightness"], pixels) and not np.array_equal(expected["ShearX"], pixels)
    rotated = np.array(ops["Rotate"](image, 20))
    assert np.array_equal(rotated, np.array(image.rotate(20)))
    assert not np.array_equal(rotated, np.array(image.rotate(-20)))
    down = np.array(ops["TranslateY"](image, 0.2))  # 0.2 of 10 rows: the output at y samples the input at y + 2
    assert np.array_equal(down[:8], pixels[2:]) and not down[8:].any()


def test_arguments_reach_the_transforms_and_bad_ones_are_errors():
    import pytest

    assert train_augmentation(24).transforms[0].scale == (0.08, 1.0)  # CLIP's and Dassl's default crop scale
    assert train_augmentation(24, randaugment="torchvision").transforms[2].magnitude == 9
    augmentation = train_augmentation(24, crop_scale_min=0.3, randaugment_ops=3, randaugment_prob=0.25)
    crop, flip, rand, to_tensor = augmentation.transforms
    assert crop.size == (24, 24) and crop.scale == (0.3, 1.0) and crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5 and isinstance(to_tensor, T.PILToTensor)
    assert (rand.n, rand.p, len(rand.ops)) == (3, 0.25, 15)
    torchvision = train_augmentation(24, randaugment="torchvision", randaugment_ops=1, randaugment_magnitude=5)
    assert (torchvision.transforms[2].num_ops, torchvision.transforms[2].magnitude) == (1, 5)
    with pytest.raises(ValueError, match="randaugment must be one of"):
        train_augmentation(24, randaugment="dassl")
    for n, p in [(-1, 0.5), (2, 1.5), (2, -0.1)]:
        with pytest.raises(ValueError, match="n >= 0 and 0 <= p <= 1"):
            RandAugment2(n, p)
    RandAugment2(0, 0.0), RandAugment2(2, 1.0)  # the bounds are allowed
    assert "n=2, p=0.6" in repr(RandAugment2()) and "Invert" in repr(RandAugment2())
