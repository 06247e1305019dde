"""The shipped ZSSeg configs: they parse, build, and hold ZSSeg's / POMP's recipe values (ZSSeg's configs/*.yaml and
train_net.py build_optimizer, POMP's third_party/zsseg.baseline/configs)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import pomp_plugins.mmseg  # noqa: F401  (registers the plugin)

register_all_modules()
CONFIGS = Path(__file__).resolve().parent.parent / "mmseg_configs"
TINY_TEXT = dict(hard_prompt="a photo of a", prompt=None, clip_model="pomp-tiny", clip_pretrained="none")

# config -> (classes, split, CLIP ensemble weight, mask threshold), as ZSSeg / POMP set them
EXPECTED = {
    "zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py": ("coco-stuff", "coco-stuff-156-15", 0.8, 0.5),
    "zsseg-imagenet80_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py": ("coco-stuff", "coco-stuff-156-15", 0.8, 0.5),
    "zsseg-vild_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py": ("coco-stuff", "coco-stuff-156-15", 0.8, 0.5),
    "zsseg_r101c_8xb2-20k_voc12aug-15-5-512x512.py": ("voc", "voc-15-5", 0.7, 0.5),
    "zsseg_r101c_8xb4-60k_coco-stuff164k-171-640x640.py": ("coco-stuff", None, 0.8, 0.5),
    "zsseg_r101c_coco-stuff164k-171-to-ade20k-150-512x512.py": ("ade20k", None, 0.5, 0.4),
    "zsseg_r101c_coco-stuff164k-171-to-pascal-context-59-512x512.py": ("pascal-context", None, 0.2, 0.5),
    "zsseg_r101c_coco-stuff164k-171-to-cityscapes-19-1024x2048.py": (dict(dataset="CityscapesDataset"), None, 0.4, 0.3),
}


def load(name: str) -> Config:
    try:
        return Config.fromfile(str(CONFIGS / name))
    except FileNotFoundError as error:  # pragma: no cover - an mmseg install without its configs
        pytest.skip(f"mmseg's dataset configs are not installed: {error}")


def test_every_zsseg_config_is_listed_and_holds_its_datasets_values():
    shipped = {p.name for p in CONFIGS.glob("zsseg*.py")}
    assert shipped == set(EXPECTED)
    for name, (classes, split, weight, threshold) in EXPECTED.items():
        cfg = load(name)
        head = cfg.model.decode_head
        assert (head.text_classifier.classes, head.text_classifier.split) == (classes, split), name
        assert (head.clip_stage.weight, head.clip_stage.mask_threshold) == (weight, threshold), name
        assert head.text_classifier.temperature == 100.0 and cfg.test_evaluator.type == "ZeroShotIoUMetric"
        assert cfg.test_evaluator.split == split, name
    assert (
        load("zsseg-vild_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py").model.decode_head.text_classifier.templates
        == "vild"
    )
    # POMP's 171-class model is tested on ZSSeg's COCO-Stuff test set, whose trainable_flag is the 156/15 split
    assert (
        load("zsseg_r101c_8xb4-60k_coco-stuff164k-171-640x640.py").model.decode_head.clip_stage.split
        == "coco-stuff-156-15"
    )


def test_data_recipes_are_zsseg_s():
    coco = load("zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py")
    voc = load("zsseg_r101c_8xb2-20k_voc12aug-15-5-512x512.py")
    sizes = [320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960]
    for cfg, crop, max_size, test_scale in ((coco, 640, 2560, (2560, 640)), (voc, 512, 2048, (2048, 512))):
        train = cfg.train_dataloader.dataset
        pipeline = (train.datasets[0] if train.type == "ConcatDataset" else train).pipeline
        resize = next(t for t in pipeline if t.type == "RandomChoiceResize")
        assert (resize.scales, resize.resize_type, resize.max_size) == (sizes, "ResizeShortestEdge", max_size)
        assert tuple(next(t for t in pipeline if t.type == "RandomCrop").crop_size) == (crop, crop)
        assert [t.type for t in pipeline][2] == "IgnoreUnseenClasses"
        assert tuple(cfg.model.data_preprocessor.size) == (crop, crop)
        test = cfg.test_dataloader.dataset.pipeline
        assert tuple(next(t for t in test if t.type == "Resize").scale) == test_scale
    assert coco.train_dataloader.batch_size == 4 and voc.train_dataloader.batch_size == 2
    assert (coco.train_cfg.max_iters, voc.train_cfg.max_iters) == (60000, 20000)
    datasets = voc.train_dataloader.dataset.datasets
    assert [d.ann_file for d in datasets] == ["ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/aug.txt"]
    assert [d.data_prefix.seg_map_path for d in datasets] == ["SegmentationClass", "SegmentationClassAug"]
    assert all(len(d.metainfo.classes) == 20 for d in datasets)

    # a 480x1500 image: shortest side drawn from ZSSeg's list (capped at 819 by the 2560 long side), then a 640 crop
    steps = Compose([t for t in coco.train_dataloader.dataset.pipeline if not t.type.startswith(("Load", "Pack"))])
    rng = np.random.default_rng(0)
    heights = set()
    for _ in range(12):
        results = steps(
            dict(
                img=rng.integers(0, 255, (480, 1500, 3), dtype=np.uint8),
                gt_seg_map=np.zeros((480, 1500), np.uint8),
                seg_fields=["gt_seg_map"],
            )
        )
        height, width = results["img"].shape[:2]
        assert (
            height in {320, 384, 448, 512, 576, 640} and width == 640 and results["gt_seg_map"].shape == (height, 640)
        )
        heights.add(height)
    assert len(heights) > 1


def test_the_r101c_model_and_zssegs_optimiser_build():
    cfg = load("zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py")
    cfg.model.decode_head.text_classifier.update(TINY_TEXT)
    cfg.model.decode_head.clip_stage = None
    model = MODELS.build(cfg.model)
    head = model.decode_head
    assert head.num_classes == 171 and len(head.loss_cls.class_weight) == 172
    assert [(m.in_features, m.out_features) for m in head.cls_embed.embed if isinstance(m, torch.nn.Linear)] == [
        (256, 1024),
        (1024, 64),
    ]  # ZSSeg's 256 -> 1024 -> text dimension (512 for ViT-B/16; 64 for pomp-tiny)
    assert head.decoder_input_proj.in_channels == 2048 and len(head.transformer_decoder.layers) == 6
    assert model.backbone.stem[0].out_channels == 64 and model.backbone.stem[6].out_channels == 128

    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = {id(p): g for g in wrapper.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())

    def group(name):
        return groups[id(named[name])]

    assert group("backbone.layer1.0.conv1.weight")["lr"] == pytest.approx(1e-5)
    assert group("decode_head.pixel_decoder.mask_feature.weight")["lr"] == pytest.approx(1e-4)
    assert group("decode_head.pixel_decoder.mask_feature.weight")["weight_decay"] == pytest.approx(1e-4)
    assert group("decode_head.query_embed.weight")["weight_decay"] == 0
    assert group("decode_head.pixel_decoder.last_feat_conv.gn.weight")["weight_decay"] == 0
    assert group("decode_head.transformer_decoder.layers.0.norms.0.weight")["weight_decay"] == 0
    assert group("decode_head.cls_embed.void_embedding")["weight_decay"] == pytest.approx(1e-4)
    assert wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if "bn" in n or "stem.1" in n)
