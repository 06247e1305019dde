"""The drop-in text classifier (TextClassifierHead): config-only on stock heads, and it trains with a split."""

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

from pomp_plugins.mmseg import (
    TextClassifierHead,
    TextConvSeg,
    VocabularyClassifier,
    drop_in,
    replace_conv_seg,
    set_vocabulary,
)
from pomp_plugins.mmseg.drop_in import UNTRAINED_LOGIT

register_all_modules()

CLASSES = ["sky", "grass", "road", "water", "snow"]
SEEN = ["sky", "grass", "road", "snow"]
TEXT = dict(
    classes=CLASSES,
    split=dict(unseen=["water"]),
    hard_prompt="a photo of a",
    clip_model="pomp-tiny",
    clip_pretrained="none",
)
BN = dict(type="BN", requires_grad=True)
HEADS = {
    "fcn": dict(head_type="FCNHead", in_channels=64, in_index=3, channels=16, num_convs=1, concat_input=False),
    "upernet": dict(
        head_type="UPerHead", in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], pool_scales=(1, 2), channels=16
    ),
}


def segmentor_cfg(head: str, text_classifier: dict) -> dict:
    """A tiny mmseg EncoderDecoder (1/8-width ResNet-18) with a drop-in head and mmseg's CE loss."""
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[128.0] * 3, std=[64.0] * 3, size_divisor=32),
        backbone=dict(
            type="ResNetV1c", depth=18, stem_channels=16, base_channels=8, out_indices=(0, 1, 2, 3), norm_cfg=BN
        ),
        decode_head=dict(
            type="TextClassifierHead",
            text_classifier=text_classifier,
            dropout_ratio=0.0,
            norm_cfg=BN,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0),
            **HEADS[head],
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


def data_samples(labels: torch.Tensor) -> list:
    samples = []
    for label in labels:
        sample = SegDataSample(metainfo=dict(img_shape=label.shape, pad_shape=label.shape))
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


@pytest.mark.parametrize("head", sorted(HEADS))
def test_a_training_step_with_a_split_has_the_loss_of_the_model_without_the_unseen_channels(head):
    torch.manual_seed(0)
    model = MODELS.build(segmentor_cfg(head, TEXT)).train()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 64, generator=g) * 255
    labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (2, 8, 8), generator=g)]  # seen classes only
    labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[:, :8, :8] = 255
    logits = model.decode_head(model.extract_feat(images))
    assert logits.shape[-1] < labels.shape[-1]  # the loss upsamples the logits
    assert (logits[:, 3] == UNTRAINED_LOGIT).all()

    losses = model.loss(images, data_samples(labels))
    assert torch.isfinite(losses["decode.loss_ce"])
    losses["decode.loss_ce"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # the same weights, scoring only the 4 seen classes (no split, labels renumbered)
    seen_only = MODELS.build(segmentor_cfg(head, dict(TEXT, classes=SEEN, split=None))).train()
    seen_only.load_state_dict(model.state_dict())
    renumbered = labels.clone()
    renumbered[labels == 4] = 3
    expected = seen_only.loss(images, data_samples(renumbered))
    torch.testing.assert_close(losses["decode.loss_ce"], expected["decode.loss_ce"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["decode.acc_seg"], expected["decode.acc_seg"])

    # and by hand: bilinear upsampling of the seen logits, softmax CE averaged over all pixels (mmseg's default)
    seen_logits = seen_only.decode_head(seen_only.extract_feat(images))
    upsampled = F.interpolate(seen_logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(upsampled, renumbered, ignore_index=255, reduction="none")
    torch.testing.assert_close(expected["decode.loss_ce"], per_pixel.mean(), rtol=1e-5, atol=1e-6)


def test_drop_in_masks_unseen_logits_in_training_only(monkeypatch):
    logged = []
    monkeypatch.setattr(drop_in, "print_log", lambda message, logger=None: logged.append(message))
    head = MODELS.build(
        dict(
            type="TextClassifierHead",
            head_type="FCNHead",
            in_channels=16,
            channels=8,
            num_convs=1,
            concat_input=False,
            num_classes=150,
            text_classifier=dict(TEXT),
        )
    )
    assert type(head).__name__ == "TextClassifierFCNHead"
    assert isinstance(head, TextClassifierHead) and isinstance(head, MODELS.get("FCNHead"))
    assert head.num_classes == 5  # from the classes, not the inherited 150, and the replacement is logged
    assert logged == ["TextClassifierHead: num_classes 150 -> 5 (the classes of 'custom')"]
    x = [torch.randn(1, 16, 8, 8)]
    train_logits = head.train()(x)
    assert (train_logits[:, 3] == UNTRAINED_LOGIT).all() and (train_logits[:, [0, 1, 2, 4]].abs() <= 50).all()
    eval_logits = head.eval()(x)
    assert (eval_logits.abs() <= 50).all()  # the unseen class competes at test time
    clone = pickle.loads(pickle.dumps(head))
    torch.testing.assert_close(clone(x), eval_logits)
    assert type(copy.deepcopy(head)) is type(head)


def test_text_conv_seg_is_a_1x1_projection_then_temperature_cosines_per_pixel():
    classifier = VocabularyClassifier(**TEXT, temperature=40.0)
    conv_seg = TextConvSeg(16, classifier)
    features = torch.randn(2, 16, 5, 7)
    weight, bias = conv_seg.proj.weight[:, :, 0, 0], conv_seg.proj.bias
    embeddings = torch.einsum("dc,bchw->bhwd", weight, features) + bias
    text = classifier.class_embeddings
    expected = 40.0 * torch.einsum("bhwd,kd->bkhw", embeddings / embeddings.norm(dim=-1, keepdim=True), text)
    with torch.no_grad():
        torch.testing.assert_close(conv_seg.eval()(features), expected, atol=1e-4, rtol=1e-5)
        train = conv_seg.train()(features)
    assert (train[:, 3] == UNTRAINED_LOGIT).all()
    torch.testing.assert_close(train[:, [0, 1, 2, 4]], expected[:, [0, 1, 2, 4]], atol=1e-4, rtol=1e-5)

    stock = MODELS.build(dict(type="FCNHead", in_channels=16, channels=8, num_convs=1, num_classes=150))
    assert replace_conv_seg(stock, classifier) is stock and isinstance(stock.conv_seg, TextConvSeg)
    assert stock.num_classes == stock.out_channels == 5 and stock.conv_seg.proj.in_channels == 8
    with pytest.raises(TypeError, match="has no 1x1 Conv2d conv_seg to replace \\(found None\\)"):
        replace_conv_seg(torch.nn.Module(), classifier)


def test_bad_drop_in_configs_fail_at_build_time():
    base = dict(type="TextClassifierHead", in_channels=16, channels=8, text_classifier=dict(TEXT))
    with pytest.raises(ValueError, match="out_channels must be 5"):
        MODELS.build(dict(base, head_type="FCNHead", out_channels=1))
    with pytest.raises(ValueError, match="needs head_type"):
        MODELS.build(base)
    with pytest.raises(KeyError, match="'NoSuchHead' is not registered"):
        MODELS.build(dict(base, head_type="NoSuchHead"))
    with pytest.raises(TypeError, match="must be a stock mmseg decode head"):
        MODELS.build(dict(base, head_type="ResNetV1c"))
    with pytest.raises(ValueError, match="needs text_classifier"):
        MODELS.build(dict(base, head_type="FCNHead", text_classifier=None))


@pytest.mark.parametrize("stock, head_type", [("fcn_r50-d8.py", "FCNHead"), ("upernet_r50.py", "UPerHead")])
def test_drop_in_is_config_only_on_a_stock_mmseg_config(tmp_path, stock, head_type):
    stock_path = f"mmseg::_base_/models/{stock}"
    config = tmp_path / "drop_in.py"
    config.write_text(
        f"_base_ = [{stock_path!r}]\n"
        f"model = dict(pretrained=None, decode_head=dict(type='TextClassifierHead', "
        f"head_type={head_type!r}, text_classifier={TEXT!r}))\n"
    )
    try:
        cfg = Config.fromfile(str(config))
    except FileNotFoundError:
        pytest.skip("this mmseg install does not ship its configs")
    stock_config = tmp_path / "stock.py"
    stock_config.write_text(f"_base_ = [{stock_path!r}]\nmodel = dict(pretrained=None)\n")
    stock_cfg = Config.fromfile(str(stock_config))
    model = MODELS.build(cfg.model).eval()
    assert isinstance(model.decode_head, MODELS.get(head_type))
    assert isinstance(model.decode_head.conv_seg, TextConvSeg)
    assert model.num_classes == model.out_channels == model.decode_head.out_channels == len(CLASSES)
    stock_keys = {k for k in MODELS.build(stock_cfg.model).state_dict() if not k.startswith("decode_head.conv_seg")}
    ours = set(model.state_dict())
    assert stock_keys <= ours and ours - stock_keys == {
        "decode_head.conv_seg.proj.weight",
        "decode_head.conv_seg.proj.bias",
    }
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64), mode="tensor").shape[1] == len(CLASSES)
        set_vocabulary(model, ["sky", "grass", "lava"])  # a test-time vocabulary, with a class never trained on
        assert model.out_channels == 3 and model(torch.rand(1, 3, 64, 64), mode="tensor").shape[1] == 3


@pytest.mark.parametrize(
    "config, head_type",
    [
        ("fcn-text-classifier_r50-d8_4xb4-80k_coco-stuff164k-156-15-512x512.py", "FCNHead"),
        ("upernet-text-classifier_r50_4xb4-80k_coco-stuff164k-156-15-512x512.py", "UPerHead"),
    ],
)
def test_the_drop_in_configs_build_with_text_classifiers_on_both_heads(tmp_path, config, head_type):
    cfg = Config.fromfile(str(Path(__file__).resolve().parent.parent / "mmseg_configs" / config))
    embeddings = tmp_path / "coco_stuff.npy"
    np.save(embeddings, np.random.default_rng(0).normal(size=(171, 512)).astype(np.float16))
    text = dict(cfg.model.decode_head.text_classifier, prompt=None, embedding_file=str(embeddings))
    assert cfg.model.decode_head.text_classifier.split == "coco-stuff-156-15"
    cfg.model.pretrained = None
    cfg.model.decode_head.text_classifier = cfg.model.auxiliary_head.text_classifier = text
    model = MODELS.build(cfg.model)
    assert isinstance(model.decode_head, MODELS.get(head_type)) and isinstance(model.auxiliary_head, TextClassifierHead)
    assert model.decode_head.num_classes == model.auxiliary_head.num_classes == 171
    assert int(model.decode_head.conv_seg.classifier.trained.sum()) == 156
