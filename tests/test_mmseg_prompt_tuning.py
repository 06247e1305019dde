"""POMP's prompt-tuning stage for segmentation, on the toy dataset and the tiny random-weight CLIP."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from pomp_plugins.mmseg import text_classifier_of
from pomp_plugins.mmseg.prompt_tuning import (
    MaskCropDataset,
    RegionPromptTuner,
    TuningRecipe,
    class_crop,
    load_segmentation_samples,
    lr_factor,
    mask_box,
    sample_pairs,
)
from pomp_plugins.mmseg.toy_data import TOY_CLASSES, make_toy_dataset
from pomp_plugins.prompt import FrozenTextTower, PromptedTextEncoder, load_prompt

register_all_modules()

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mmseg_configs" / "tiny_fcn_text-classifier_cpu.py"
SEEN = torch.tensor([True, True, True, False, True])  # "water" is unseen


def test_pairs_are_seen_classes_present_in_an_image_at_most_n_per_class():
    classes_per_image = [[0, 1, 3], [1, 2], [0, 1], [1], [1, 3]]
    pairs = sample_pairs(classes_per_image, trained=[0, 1, 2], per_class=2, seed=0)
    by_class = {c: [i for i, k in pairs if k == c] for c in (0, 1, 2, 3)}
    assert by_class[0] == [0, 2] and by_class[2] == [1] and by_class[3] == []
    assert len(by_class[1]) == 2 and len(set(by_class[1])) == 2 and set(by_class[1]) <= {0, 1, 2, 3, 4}
    assert sample_pairs(classes_per_image, [0, 1, 2], 2, seed=0) == pairs
    assert len(sample_pairs(classes_per_image, [0, 1, 2], per_class=-1)) == 2 + 5 + 1


def test_the_crop_is_the_class_mask_box():
    labels = np.zeros((20, 30), np.int64)
    labels[4:14, 6:16] = 2  # a 10 x 10 box
    labels[8, 10] = 1
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert mask_box(labels == 2) == (6, 4, 16, 14)
    assert mask_box(labels == 2, expand_ratio=3.0) == (0, 0, 26, 20)  # 30 x 30 about (11, 9), clipped
    whole_box = TuningRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0)
    crop, mask = class_crop(image, labels, 2, size=10, recipe=whole_box, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(crop, image[4:14, 6:16])
    np.testing.assert_array_equal(mask, labels[4:14, 6:16] == 2)
    flipped, flipped_mask = class_crop(
        image, labels, 2, 10, dataclasses.replace(whole_box, flip_prob=1.0), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(flipped, image[4:14, 6:16][:, ::-1])
    assert not flipped_mask[4, 5] and flipped_mask[4, 4] == mask[4, 5]
    for seed in range(20):  # random crops always keep some of the class
        _, mask = class_crop(image, labels, 2, 8, TuningRecipe(), np.random.default_rng(seed))
        assert mask.shape == (8, 8) and mask.any()


def test_lr_schedule_is_constant_warmup_then_cosine():
    recipe = TuningRecipe(iters=1000, warmup_iters=100)
    assert lr_factor(0, recipe) == pytest.approx(0.005) and lr_factor(99, recipe) < 0.005
    assert lr_factor(100, recipe) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.1)))
    assert lr_factor(1000, recipe) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), num_train=4, num_val=1)


def fixed_batch(toy_root: Path, size: int, count: int = 8):
    dataset_cfg = Config.fromfile(str(CONFIG)).train_dataloader.dataset
    samples = load_segmentation_samples(dict(dataset_cfg, data_root=str(toy_root)))
    pairs = [(i, int(c)) for i in range(4) for c in np.unique(samples.load_labels(i)) if SEEN[c]]
    crops = MaskCropDataset(samples.load, pairs, size)
    items = [crops[k] for k in range(min(count, len(crops)))]
    return tuple(torch.stack([torch.as_tensor(item[j]) for item in items]) for j in range(3))


@pytest.mark.parametrize("fill", ["reference", "mean-colour"])
def test_tuning_loss_is_ce_of_masked_crops_against_the_seen_prompts_and_decreases(tiny_clip, toy, fill):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a")
    tuner = RegionPromptTuner(tiny_clip, encoder, list(TOY_CLASSES), SEEN, temperature=100.0, fill=fill)
    images, masks, labels = fixed_batch(toy, tiny_clip.image_size)
    assert images.dtype == torch.uint8 and masks.any() and not (labels == 3).any()

    # by hand: the prompt is still "a photo of a", i.e. CLIP's own encode_text; outside the mask a constant
    mean = torch.tensor(open_clip.get_model_preprocess_cfg(tiny_clip.model)["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.get_model_preprocess_cfg(tiny_clip.model)["std"]).view(1, 3, 1, 1)
    normalized = (images.float() / 255 - mean) / std
    outside = mean if fill == "reference" else torch.zeros_like(mean)
    x = torch.where(masks[:, None], normalized, outside)
    seen_names = [n for n, s in zip(TOY_CLASSES, SEEN) if s]
    tokens = open_clip.tokenize(
        [f"a photo of a {n}." for n in seen_names], context_length=tiny_clip.model.context_length
    )
    text = F.normalize(tiny_clip.model.encode_text(tokens), dim=-1)
    logits = 100 * F.normalize(tiny_clip.model.encode_image(x), dim=-1) @ text.t()
    targets = torch.tensor([seen_names.index(TOY_CLASSES[i]) for i in labels])
    out = tuner(images, masks, labels)
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, targets), rtol=1e-4, atol=1e-4)

    optimizer = torch.optim.SGD([encoder.ctx], lr=0.02, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(8):
        loss = tuner(images, masks, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    with pytest.raises(ValueError, match=r"untrained classes \[3\]"):
        tuner(images[:1], masks[:1], torch.tensor([3]))


def test_samples_read_concatenated_datasets_image_by_image(toy):
    dataset_cfg = dict(Config.fromfile(str(CONFIG)).train_dataloader.dataset, data_root=str(toy))
    single = load_segmentation_samples(dataset_cfg)
    both = load_segmentation_samples(dict(type="ConcatDataset", datasets=[dataset_cfg, dataset_cfg]))
    assert single.count == 4 and both.count == 8 and tuple(both.classes) == TOY_CLASSES
    image, labels = both.load(5)
    np.testing.assert_array_equal(image, single.load(1)[0])
    np.testing.assert_array_equal(labels, single.load_labels(1))
    import cv2

    bgr = cv2.imread(str(toy / "img_dir" / "train" / "001.png"))
    np.testing.assert_array_equal(image, bgr[..., ::-1])  # RGB
    np.testing.assert_array_equal(labels, cv2.imread(str(toy / "ann_dir" / "train" / "001.png"), 0))


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"pomp_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_a_prompt_file_that_both_heads_load(toy, tmp_path, capsys, tiny_clip):
    out, index = tmp_path / "tuned.pt", tmp_path / "class_index.json"
    tool = load_tool("tune_prompt_seg")
    argv = [
        str(CONFIG),
        "--output",
        str(out),
        "--ctx-init",
        "a photo of a",
        "--iters",
        "3",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--log-interval",
        "1",
        "--index-file",
        str(index),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={toy}",
    ]
    assert tool.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["iter"] for r in lines[:-1]] == [1, 2, 3] and lines[0]["lr"] == pytest.approx(0.02 * 0.005)
    assert lines[-1]["crops"] == sum(len(set(c) - {3}) for c in json.loads(index.read_text()))  # 4 images, all kept

    prompt = load_prompt(out)
    assert prompt.clip_model == "pomp-tiny" and prompt.n_ctx == 4 and prompt.meta["stage"].startswith("POMP")
    initial = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a").ctx
    assert not torch.equal(prompt.ctx, initial)  # it moved
    with torch.no_grad():
        expected = PromptedTextEncoder(FrozenTextTower(tiny_clip.model), prompt.ctx).encode_names(list(TOY_CLASSES))

    text = dict(
        classes=list(TOY_CLASSES),
        split=dict(unseen=["water"]),
        prompt=str(out),
        clip_model="pomp-tiny",
        clip_pretrained="none",
    )
    drop_in = Config.fromfile(str(CONFIG)).model.decode_head
    zsseg = Config.fromfile(str(ROOT / "mmseg_configs" / "tiny_zsseg_cpu.py")).model.decode_head
    for head_cfg in (drop_in, zsseg):
        head = MODELS.build(dict(head_cfg, text_classifier=text))
        torch.testing.assert_close(text_classifier_of(head).class_embeddings, expected, rtol=1e-5, atol=1e-5)
