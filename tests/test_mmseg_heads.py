"""ZSSeg head, set loss, CLIP stage and drop-in text classifier, on the tiny random-weight CLIP."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

from pomp_plugins.mmseg import TextConvSeg, set_vocabulary
from pomp_plugins.mmseg.clip_stage import CLIPProposalClassifier, geometric_ensemble, mask_boxes
from pomp_plugins.mmseg.criterion import MaskSetCriterion
from pomp_plugins.prompt import Prompt, PromptWidthError, VocabularyError, save_prompt

register_all_modules()

CLASSES = ["sky", "grass", "road", "water", "snow"]
TEXT = dict(classes=CLASSES, split=dict(unseen=["water"]), hard_prompt="a photo of a", clip_model="pomp-tiny",
            clip_pretrained="none")
IN_CHANNELS = [8, 16, 32, 64]


def zsseg_cfg(**overrides) -> dict:
    cfg = dict(type="ZSSegHead", in_channels=IN_CHANNELS, channels=32, num_queries=6, num_decoder_layers=2,
               num_heads=4, feedforward_channels=32, decoder_dropout=0.0, norm_cfg=dict(type="GN", num_groups=8),
               text_classifier=dict(TEXT))
    cfg.update(overrides)
    return cfg


def features(batch=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size // s, size // s, generator=g) for c, s in zip(IN_CHANNELS, (4, 8, 16, 32))]


def data_samples(labels: torch.Tensor) -> list:
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def seen_labels(batch=2, size=32, seed=0) -> torch.Tensor:
    """Blocky labels over the seen classes (0, 1, 2, 4) with an ignored corner."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (batch, 4, 4), generator=g)]
    labels = labels.repeat_interleave(size // 4, 1).repeat_interleave(size // 4, 2)
    labels[:, :4, :4] = 255
    return labels


def test_zsseg_head_outputs_and_unseen_classes_are_out_of_training():
    head = MODELS.build(zsseg_cfg())
    assert head.num_classes == head.out_channels == 5
    head.train()
    class_logits, mask_logits = head(features())
    assert class_logits.shape == (2, 2, 6, 6) and mask_logits.shape == (2, 2, 6, 8, 8)  # deep supervision: 2 layers
    assert torch.isinf(class_logits[..., 3]).all() and torch.isfinite(class_logits[..., [0, 1, 2, 4, 5]]).all()
    head.eval()
    class_logits, _ = head(features())
    assert class_logits.shape[0] == 1 and torch.isfinite(class_logits).all()  # the unseen class competes in tests


def test_unseen_classes_contribute_nothing_to_the_training_loss():
    torch.manual_seed(0)
    head = MODELS.build(zsseg_cfg()).train()
    feats, labels = features(), seen_labels()
    loss = sum(head.loss(feats, data_samples(labels), None).values())
    embeddings = head.classifier.classifier.class_embeddings
    perturbed = embeddings.clone()
    perturbed[3] = torch.randn(embeddings.shape[1])  # a different text embedding for the unseen class
    head.classifier.classifier.set_class_embeddings(perturbed)
    assert torch.equal(sum(head.loss(feats, data_samples(labels), None).values()), loss)

    unseen_pixels = labels.clone()
    unseen_pixels[:, :4, :4] = 3  # the pipeline failed to ignore unseen pixels
    with pytest.raises(ValueError, match=r"\['water'\].*IgnoreUnseenClasses"):
        head.loss(feats, data_samples(unseen_pixels), None)


def test_set_loss_ignores_ignored_pixels_and_masked_classes_entirely():
    criterion = MaskSetCriterion()
    g = torch.Generator().manual_seed(1)
    class_logits = torch.randn(2, 5, 4, generator=g)
    class_logits[..., 1] = float("-inf")  # an untrained class
    class_logits.requires_grad_(True)
    mask_logits = torch.randn(2, 5, 6, 6, generator=g, requires_grad=True)
    labels = torch.tensor([0, 2])[torch.randint(0, 2, (2, 6, 6), generator=g)]
    labels[:, :, :2] = 255
    losses = criterion(class_logits, mask_logits, labels)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert (mask_logits.grad[..., :2] == 0).all() and mask_logits.grad[..., 2:].abs().sum() > 0
    assert (class_logits.grad[..., 1] == 0).all()


def test_set_loss_matches_a_direct_computation_on_an_unambiguous_case():
    # two targets; query 2 predicts class 0 with mask A, query 0 predicts class 1 with mask B, query 1 is void
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :, 2:] = 1
    mask_a, mask_b = (labels[0] == 0).float(), (labels[0] == 1).float()
    mask_logits = torch.stack([8 * (2 * mask_b - 1), torch.zeros(4, 4), 8 * (2 * mask_a - 1)])[None]
    class_logits = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0]]])
    criterion = MaskSetCriterion(class_weight=2.0, mask_weight=20.0, dice_weight=1.0, void_weight=0.1)
    losses = criterion(class_logits, mask_logits, labels)

    targets = torch.tensor([1, 2, 0])  # matched classes; query 1 -> void (index 2)
    expected_cls = F.cross_entropy(class_logits[0], targets, weight=torch.tensor([1.0, 1.0, 0.1]))
    pairs = [(mask_logits[0, 2], mask_a), (mask_logits[0, 0], mask_b)]
    bce = sum(F.binary_cross_entropy_with_logits(p, t) for p, t in pairs) / 2
    dice = sum(1 - (2 * (p.sigmoid() * t).sum() + 1) / (p.sigmoid().sum() + t.sum() + 1) for p, t in pairs) / 2
    torch.testing.assert_close(losses["loss_cls"], 2.0 * expected_cls)
    torch.testing.assert_close(losses["loss_mask"], 20.0 * bce)
    torch.testing.assert_close(losses["loss_dice"], dice)


def test_semantic_inference_combines_class_and_mask_probabilities():
    head = MODELS.build(zsseg_cfg()).eval()
    class_logits = torch.randn(1, 6, 6)
    mask_logits = torch.randn(1, 6, 8, 8)
    expected = torch.einsum("qc,qhw->chw", class_logits[0].softmax(-1)[:, :5], mask_logits[0].sigmoid())
    torch.testing.assert_close(head.semantic_probs(class_logits, mask_logits)[0], expected)


def test_clip_stage_pieces():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert mask_boxes(masks).tolist() == [[3.0, 2.0, 7.0, 5.0], [0.0, 0.0, 8.0, 8.0]]

    head, clip = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    seen = torch.tensor([True, False])
    out = geometric_ensemble(head, clip, torch.tensor([True]), seen, weight=0.8)
    torch.testing.assert_close(out, torch.tensor([[0.5 ** 0.8 * 0.9 ** 0.2, 0.5 ** 0.2 * 0.1 ** 0.8]]))
    torch.testing.assert_close(geometric_ensemble(head, clip, torch.tensor([False]), seen, 0.8),
                               head.pow(torch.tensor([0.8, 0.2])))


def test_clip_region_of_a_full_mask_is_clip_on_the_resized_image(tiny_clip):
    stage = CLIPProposalClassifier(tiny_clip)
    image = torch.rand(3, 64, 64) * 255
    mask_logits = torch.full((2, 16, 16), -10.0)
    mask_logits[0] = 10.0  # the whole image
    text = F.normalize(torch.randn(3, 64), dim=-1)
    probs, valid = stage.region_probs(image, mask_logits, text)
    assert valid.tolist() == [True, False]

    resized = F.avg_pool2d(image[None], 2) / 255.0  # 64 -> 32, the tiny CLIP's input size
    normalized = (resized - stage.mean) / stage.std
    features = F.normalize(tiny_clip.model.encode_image(normalized), dim=-1)
    expected = (tiny_clip.logit_scale * features @ text.t()).softmax(-1)[0]
    torch.testing.assert_close(probs[0], expected, atol=1e-4, rtol=1e-4)


def test_clip_stage_in_the_head_needs_images():
    head = MODELS.build(zsseg_cfg(clip_stage=dict(weight=0.8))).eval()
    feats = features(batch=1)
    metas = [dict(img_shape=(32, 32), pad_shape=(32, 32))]
    with pytest.raises(ValueError, match="ZSSegEncoderDecoder"):
        head.predict(feats, metas, None)
    out = head.predict(feats, metas, None, images=torch.rand(1, 3, 32, 32) * 255)
    assert out.shape == (1, 5, 32, 32) and torch.isfinite(out).all()


def test_bad_input_fails_at_build_time(tmp_path):
    no_classes = dict(TEXT)
    no_classes.pop("classes")
    with pytest.raises(VocabularyError, match="no class names"):
        MODELS.build(zsseg_cfg(text_classifier=no_classes))
    with pytest.raises(VocabularyError, match=r"\['lava'\] are not in vocabulary"):
        MODELS.build(zsseg_cfg(text_classifier=dict(TEXT, split=dict(unseen=["lava"]))))
    prompt = tmp_path / "wide.pt"
    save_prompt(Prompt(torch.zeros(4, 512), clip_model="pomp-tiny"), prompt)
    with pytest.raises(PromptWidthError, match="width 512.*width 64"):
        MODELS.build(zsseg_cfg(text_classifier=dict(TEXT, hard_prompt=None, prompt=str(prompt))))
    with pytest.raises(ValueError, match="needs text_classifier"):
        MODELS.build(zsseg_cfg(text_classifier=None))


@pytest.mark.parametrize("stock, head_type", [("fcn_r50-d8.py", "FCNHead"), ("upernet_r50.py", "UPerHead")])
def test_drop_in_is_config_only_on_a_stock_mmseg_config(tmp_path, stock, head_type):
    stock_path = f"mmseg::_base_/models/{stock}"
    config = tmp_path / "drop_in.py"
    config.write_text(f"_base_ = [{stock_path!r}]\n"
                      f"model = dict(pretrained=None, decode_head=dict(type='TextClassifierHead', "
                      f"head_type={head_type!r}, text_classifier={TEXT!r}))\n")
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
    assert stock_keys <= ours and ours - stock_keys == {"decode_head.conv_seg.proj.weight",
                                                        "decode_head.conv_seg.proj.bias"}
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64), mode="tensor").shape[1] == len(CLASSES)
        set_vocabulary(model, ["sky", "grass", "lava"])  # a test-time vocabulary, with a class never trained on
        assert model.out_channels == 3 and model(torch.rand(1, 3, 64, 64), mode="tensor").shape[1] == 3


def test_drop_in_masks_unseen_logits_in_training_only():
    head = MODELS.build(dict(type="TextClassifierHead", head_type="FCNHead", in_channels=16, channels=8, num_convs=1,
                             concat_input=False, num_classes=150, text_classifier=dict(TEXT)))
    assert head.num_classes == 5  # from the classes, not the inherited 150
    x = [torch.randn(1, 16, 8, 8)]
    assert torch.isinf(head.train()(x)[:, 3]).all()
    assert torch.isfinite(head.eval()(x)).all()
    with pytest.raises(ValueError, match="out_channels must be 5"):
        MODELS.build(dict(type="TextClassifierHead", head_type="FCNHead", in_channels=16, channels=8,
                          out_channels=1, text_classifier=dict(TEXT)))


def test_zsseg_segmentor_hands_the_head_the_original_rgb_pixels():
    cfg = Config.fromfile(str(Path(__file__).resolve().parent.parent / "mmseg_configs" / "tiny_zsseg_cpu.py"))
    model = MODELS.build(cfg.model).eval()
    seen = {}

    def predict(inputs, metas, test_cfg, images=None):
        seen["images"] = images
        return torch.zeros(1, 5, 64, 64)

    model.decode_head.predict = predict
    bgr = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)  # mmcv loads images as BGR
    sample = SegDataSample(metainfo=dict(ori_shape=(64, 64), img_shape=(64, 64), pad_shape=(64, 64),
                                         padding_size=[0, 0, 0, 0]))
    data = model.data_preprocessor(dict(inputs=[bgr], data_samples=[sample]))
    model.predict(data["inputs"], data["data_samples"])
    torch.testing.assert_close(seen["images"][0], bgr[[2, 1, 0]].float(), atol=1e-3, rtol=0)
