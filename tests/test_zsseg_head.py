"""ZSSeg's head on mmseg's MaskFormer: its losses, matching and inference against ZSSeg's formulas written out here
(MendelXu/zsseg.baseline: modeling/criterion.py, modeling/matcher.py, zero_shot_mask_former_model.py), its text
classifier, the zero-shot rules, and the CLIP stage, on the tiny config and the tiny random-weight CLIP."""

import copy
import types
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
from scipy.optimize import linear_sum_assignment

from pomp_plugins.mmseg import set_vocabulary
from pomp_plugins.mmseg.clip_stage import CLIPProposalClassifier, geometric_ensemble, mask_boxes
from pomp_plugins.mmseg.zsseg_head import QueryTextClassifier
from pomp_plugins.prompt import Prompt, PromptWidthError, VocabularyError, save_prompt, template_embeddings

register_all_modules()

ROOT = Path(__file__).resolve().parent.parent
TINY = Config.fromfile(str(ROOT / "mmseg_configs" / "tiny_zsseg_cpu.py"))
CLASSES = ["sky", "grass", "road", "water", "snow"]  # "water" (3) is unseen
IN_CHANNELS = [8, 16, 32, 64]


def zsseg_cfg(**overrides) -> dict:
    """The tiny config's head without the CLIP stage (ZSSeg's losses, assigner and decoder, shrunk)."""
    cfg = TINY.model.decode_head.to_dict()
    cfg.update(clip_stage=None)
    cfg.update(overrides)
    return cfg


def features(batch=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size // s, size // s, generator=g) for c, s in zip(IN_CHANNELS, (4, 8, 16, 32))]


def data_samples(labels: torch.Tensor) -> list:
    samples = []
    for label in labels:
        sample = SegDataSample(metainfo=dict(img_shape=tuple(label.shape), pad_shape=tuple(label.shape)))
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


# ZSSeg's formulas, written out (matcher.py: batch_sigmoid_focal_loss, batch_dice_loss, HungarianMatcher;
# criterion.py: sigmoid_focal_loss, dice_loss, SetCriterion.loss_labels / loss_masks; MASK_WEIGHT 20, DICE_WEIGHT 1,
# NO_OBJECT_WEIGHT 0.1, cost_class 1).
def zsseg_match(class_logits, mask_logits, classes, masks):
    """One image: class_logits [Q, K+1], mask_logits [Q, h, w], masks [T, H, W] float -> (query idx, target idx)."""
    prob = class_logits.softmax(-1)
    cost_class = -prob[:, classes]
    target = F.interpolate(masks[:, None], size=mask_logits.shape[-2:], mode="nearest")[:, 0].flatten(1)
    out = mask_logits.flatten(1)
    hw = out.shape[1]
    p = out.sigmoid()
    focal_pos = (1 - p) ** 2 * F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none") * 0.25
    focal_neg = p**2 * F.binary_cross_entropy_with_logits(out, torch.zeros_like(out), reduction="none") * 0.75
    cost_mask = (focal_pos @ target.t() + focal_neg @ (1 - target).t()) / hw
    cost_dice = 1 - (2 * p @ target.t() + 1) / (p.sum(-1)[:, None] + target.sum(-1)[None, :] + 1)
    rows, cols = linear_sum_assignment((20 * cost_mask + cost_class + cost_dice).numpy())
    return torch.as_tensor(rows), torch.as_tensor(cols)


def zsseg_losses(class_logits, mask_logits, labels, ignore_index=255):
    """One decoder layer: class_logits [B, Q, K+1], mask_logits [B, Q, h, w], labels [B, H, W] -> ZSSeg's losses."""
    batch, queries, outputs = class_logits.shape
    targets = torch.full((batch, queries), outputs - 1)
    src, tgt = [], []
    for b in range(batch):
        classes = labels[b].unique()
        classes = classes[classes != ignore_index]
        masks = torch.stack([(labels[b] == c).float() for c in classes])  # ignored pixels: 0 in every mask
        rows, cols = zsseg_match(class_logits[b], mask_logits[b], classes, masks)
        targets[b, rows] = classes[cols]
        src.append(mask_logits[b, rows])
        tgt.append(masks[cols])
    num_masks = max(sum(len(t) for t in tgt), 1)
    weight = torch.ones(outputs)
    weight[-1] = 0.1
    loss_ce = F.cross_entropy(class_logits.transpose(1, 2), targets, weight)
    src = F.interpolate(torch.cat(src)[:, None], size=labels.shape[-2:], mode="bilinear", align_corners=False)
    src, tgt = src[:, 0].flatten(1), torch.cat(tgt).flatten(1)
    prob = src.sigmoid()
    ce = F.binary_cross_entropy_with_logits(src, tgt, reduction="none")
    p_t = prob * tgt + (1 - prob) * (1 - tgt)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * tgt + 0.75 * (1 - tgt))).mean(1).sum() / num_masks
    dice = (1 - (2 * (prob * tgt).sum(-1) + 1) / (prob.sum(-1) + tgt.sum(-1) + 1)).sum() / num_masks
    return dict(loss_cls=loss_ce, loss_mask=20 * focal, loss_dice=dice)


def test_losses_and_matching_equal_zssegs_formulas_on_every_decoder_layer():
    head = MODELS.build(zsseg_cfg()).train()
    g = torch.Generator().manual_seed(3)
    layers, batch, queries = 2, 2, 8
    class_logits = torch.randn(layers, batch, queries, 6, generator=g) * 2
    mask_logits = torch.randn(layers, batch, queries, 8, 8, generator=g) * 3
    labels = seen_labels(batch, 32, seed=1)  # full resolution: 4x the mask logits, with ignored pixels
    head.forward = lambda x, samples=None: (class_logits, mask_logits)
    losses = head.loss(features(), data_samples(labels), None)
    assert set(losses) == {f"{p}{k}" for p in ("", "d0.") for k in ("loss_cls", "loss_mask", "loss_dice")}
    for layer, prefix in ((1, ""), (0, "d0.")):
        expected = zsseg_losses(class_logits[layer], mask_logits[layer], labels)
        for name, value in expected.items():
            torch.testing.assert_close(losses[prefix + name].reshape(()), value, rtol=1e-5, atol=1e-6)


def test_ignored_pixels_are_negatives_in_every_target_mask():
    # an image whose right half is ignored: a query predicting "everywhere" pays for the ignored half too
    head = MODELS.build(zsseg_cfg()).train()
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, :, 16:] = 255
    everywhere = torch.full((1, 1, 8, 8, 8), 6.0)
    class_logits = torch.zeros(1, 1, 8, 6)
    head.forward = lambda x, samples=None: (class_logits, everywhere)
    losses = head.loss(features(1), data_samples(labels), None)
    expected = zsseg_losses(class_logits[0], everywhere[0], labels)
    torch.testing.assert_close(losses["loss_dice"].reshape(()), expected["loss_dice"])
    assert losses["loss_dice"] > 0.3  # half of the predicted mask lies on (negative) ignored pixels


def test_query_classifier_is_zssegs_mlp_and_cosine_with_void():
    head = MODELS.build(zsseg_cfg())
    classifier = head.cls_embed
    mlp = [m for m in classifier.embed if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in mlp] == [(32, 64), (64, head.classifier.dim)]
    query = torch.randn(2, 3, 32)  # [batch, queries, feat], as the decoder gives them
    with torch.no_grad():
        classifier.void_embedding.mul_(3.0)  # a trained void embedding need not be of unit norm
    embedding = mlp[1](torch.relu(mlp[0](query)))
    text = F.normalize(head.classifier.class_embeddings, dim=-1)
    void = classifier.void_embedding / classifier.void_embedding.norm()
    expected = 100 * (embedding / embedding.norm(dim=-1, keepdim=True)) @ torch.cat((text, void[None])).t()
    torch.testing.assert_close(classifier.eval()(query), expected)
    assert head.loss_cls.class_weight == [1.0] * 5 + [0.1] and head.class_weight == head.loss_cls.class_weight


def test_the_void_embedding_starts_as_zssegs_n0_d_to_the_minus_half():
    text = types.SimpleNamespace(dim=4096)
    torch.manual_seed(0)
    void = QueryTextClassifier(32, text).void_embedding
    assert void.shape == (4096,) and void.std().item() == pytest.approx(4096**-0.5, rel=0.05)


def test_unseen_classes_are_out_of_training_and_contribute_nothing():
    torch.manual_seed(0)
    head = MODELS.build(zsseg_cfg()).train()
    class_logits, mask_logits = head(features())
    assert class_logits.shape == (2, 2, 8, 6) and mask_logits.shape == (2, 2, 8, 8, 8)
    assert torch.isinf(class_logits[..., 3]).all() and torch.isfinite(class_logits[..., [0, 1, 2, 4, 5]]).all()
    assert torch.isfinite(head.eval()(features())[0]).all()  # the unseen class competes in tests

    head.train()
    feats, labels = features(), seen_labels()
    torch.manual_seed(1)
    loss = sum(head.loss(feats, data_samples(labels), None).values())
    assert torch.isfinite(loss)
    embeddings = head.classifier.classifier.class_embeddings
    perturbed = embeddings.clone()
    perturbed[3] = torch.randn(embeddings.shape[1])  # another text embedding for the unseen class
    head.classifier.classifier.set_class_embeddings(perturbed)
    torch.manual_seed(1)
    assert torch.equal(sum(head.loss(feats, data_samples(labels), None).values()), loss)

    unseen_pixels = labels.clone()
    unseen_pixels[:, :4, :4] = 3  # the pipeline failed to ignore unseen pixels
    with pytest.raises(ValueError, match=r"\['water'\].*IgnoreUnseenClasses"):
        head.loss(feats, data_samples(unseen_pixels), None)
    unseen_pixels[:, :4, :4] = 5  # one past the vocabulary
    with pytest.raises(ValueError, match=r"classes \[5\] that are not trained on"):
        head.loss(feats, data_samples(unseen_pixels), None)


def test_semantic_inference_is_maskformers():
    """The last decoder layer's outputs; the masks resized to the first image's img_shape (as mmseg's MaskFormer:
    one image per test batch)."""
    head = MODELS.build(zsseg_cfg()).eval()
    class_logits = torch.randn(2, 2, 8, 6)  # [decoder layers, batch, queries, classes + void]
    mask_logits = torch.randn(2, 2, 8, 8, 8)
    head.forward = lambda x, samples=None: (class_logits, mask_logits)
    out = head.predict(features(2), [dict(img_shape=(30, 28)), dict(img_shape=(20, 24))], None)
    masks = F.interpolate(mask_logits[1], size=(30, 28), mode="bilinear", align_corners=False).sigmoid()
    expected = torch.einsum("bqc,bqhw->bchw", class_logits[1].softmax(-1)[..., :5], masks)
    torch.testing.assert_close(out, expected)


def test_in_index_selects_the_levels_read():
    shifted = MODELS.build(zsseg_cfg(in_index=[1, 2, 3, 4])).eval()
    plain = MODELS.build(zsseg_cfg()).eval()
    plain.load_state_dict(shifted.state_dict())
    feats = features(1)
    with torch.no_grad():
        torch.testing.assert_close(shifted([torch.zeros(1, 4, 2, 2)] + feats)[1], plain(feats)[1])
    with pytest.raises(ValueError, match="in_index"):
        MODELS.build(zsseg_cfg(in_index=[0, 1]))
    defaults = zsseg_cfg(in_index=None)
    del defaults["clip_stage"]
    head = MODELS.build(defaults)  # every level in order, and no CLIP stage
    assert head.in_index == [0, 1, 2, 3] and head.clip_stage is None and head.clip_text is None


def test_vocabulary_swap_updates_classes_and_class_weights():
    cfg = copy.deepcopy(TINY.model)
    cfg.decode_head = zsseg_cfg()
    model = MODELS.build(cfg).eval()
    set_vocabulary(model, ["sky", "grass", "lava"])
    head = model.decode_head
    assert model.num_classes == head.num_classes == head.out_channels == 3
    assert head.loss_cls.class_weight == [1.0, 1.0, 1.0, 0.1]
    with torch.no_grad():
        result = model(torch.rand(1, 3, 64, 64) * 255, mode="predict")[0]
    assert result.seg_logits.data.shape == (3, 64, 64) and int(result.pred_sem_seg.data.max()) < 3


CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1) * 255
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1) * 255


def zsseg_region_probs(clip, image, region, text):
    """ZSSeg's MaskFormerClipAdapter on one boolean region [H, W] of image [3, H, W], written out: crop to the
    region's box, fill outside it with CLIP's mean colour, normalise, bicubic to the input size, 100 x cos, softmax."""
    rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
    t, b, left, r = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    mask = region.float()[None, t:b, left:r]
    pixels = image[:, t:b, left:r] * mask + (1 - mask) * CLIP_MEAN
    x = F.interpolate(((pixels - CLIP_MEAN) / CLIP_STD)[None], size=(32, 32), mode="bicubic")
    with torch.no_grad():
        feature = F.normalize(clip.model.encode_image(x), dim=-1)
    return (100 * feature @ text.t()).softmax(-1)[0]


def test_clip_stage_pieces():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert mask_boxes(masks).tolist() == [[3, 2, 7, 5], [0, 0, 8, 8]]

    head, clip = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    seen = torch.tensor([True, False])
    out = geometric_ensemble(head, clip, torch.tensor([True]), seen, weight=0.8)
    torch.testing.assert_close(out, torch.tensor([[0.5**0.8 * 0.9**0.2, 0.5**0.2 * 0.1**0.8]]))
    torch.testing.assert_close(
        geometric_ensemble(head, clip, torch.tensor([False]), seen, 0.8), head.pow(torch.tensor([0.8, 0.2]))
    )


def test_clip_stage_arguments_and_it_follows_the_images_device(tiny_clip):
    assert CLIPProposalClassifier(tiny_clip, weight=0.0).weight == 0.0  # the head alone
    assert CLIPProposalClassifier(tiny_clip, weight=1.0).weight == 1.0
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="weight must be in \\[0, 1\\]"):
            CLIPProposalClassifier(tiny_clip, weight=bad)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask_threshold must be in \\(0, 1\\)"):
            CLIPProposalClassifier(tiny_clip, mask_threshold=bad)
    stage = CLIPProposalClassifier(copy.deepcopy(tiny_clip))
    stage._follow(torch.device("meta"))  # any device the images are on (meta: no memory, no GPU needed)
    assert {p.device.type for p in stage.clip.model.parameters()} == {"meta"}
    # the pixel normalisation runs on the images' device too
    assert stage.clip.normalize_pixels(torch.zeros(3, 2, 2, device="meta")).device.type == "meta"


def test_clip_regions_are_cropped_filled_and_resized_as_zsseg_does(tiny_clip):
    stage = CLIPProposalClassifier(tiny_clip, mask_threshold=0.4)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 40, 50, generator=g) * 255
    mask_probs = torch.zeros(3, 40, 50)
    mask_probs[0, 5:20, 10:41] = 0.9
    mask_probs[0, 7, 12] = 0.3  # a hole in the region
    mask_probs[1] = 0.35  # below the threshold everywhere: empty
    mask_probs[2] = 0.6  # the whole image
    text = F.normalize(torch.randn(4, 64, generator=g), dim=-1)
    probs, valid = stage.region_probs(image, mask_probs, text)
    assert valid.tolist() == [True, False, True] and (probs[1] == 1).all()

    # MaskFormerClipAdapter._preprocess_image with crop_with_mask: fill with CLIP's mean colour, then normalise,
    # then bicubic to the input size; logits 100 x cos, softmax over the classes
    expected = [zsseg_region_probs(tiny_clip, image, mask_probs[index] > 0.4, text) for index in (0, 2)]
    torch.testing.assert_close(probs[[0, 2]], torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_clip_stage_in_the_head_needs_images_and_can_take_its_own_prompt(tiny_clip):
    head = MODELS.build(zsseg_cfg(clip_stage=dict(weight=0.8, text=dict(templates="vild")))).eval()
    expected = template_embeddings(tiny_clip, CLASSES, "vild")
    torch.testing.assert_close(head.clip_text.class_embeddings, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(head.clip_text.class_embeddings, head.classifier.class_embeddings, atol=1e-3)
    assert not any(k.startswith("clip_text") for k in head.state_dict())  # no vocabulary in checkpoints
    feats = features(batch=1)
    metas = [dict(img_shape=(32, 32))]
    with pytest.raises(ValueError, match="ZSSegEncoderDecoder"):
        head.predict(feats, metas, None)
    out = head.predict(feats, metas, None, images=torch.rand(1, 3, 32, 32) * 255)
    assert out.shape == (1, 5, 32, 32) and torch.isfinite(out).all()


def test_the_clip_ensemble_can_weigh_classes_by_another_split_than_training():
    text = dict(zsseg_cfg()["text_classifier"], split=None)  # trained on every class
    head = MODELS.build(zsseg_cfg(text_classifier=text, clip_stage=dict(weight=0.8)))
    assert not head.ensemble_seen.any()  # no split: every class counts as unseen
    head = MODELS.build(zsseg_cfg(text_classifier=text, clip_stage=dict(weight=0.8, split=dict(unseen=["water"]))))
    assert head.ensemble_seen.tolist() == [True, True, True, False, True] and head.classifier.trained.all()
    head.set_vocabulary(["sky", "lava"])  # the ensemble's split no longer fits: back to the classifier's
    assert head.ensemble_split is None and not head.ensemble_seen.any()
    with pytest.raises(VocabularyError, match="lava"):
        MODELS.build(zsseg_cfg(clip_stage=dict(weight=0.8, split=dict(unseen=["lava"]))))


def test_bad_input_fails_at_build_time(tmp_path):
    text = zsseg_cfg()["text_classifier"]
    no_classes = {k: v for k, v in text.items() if k != "classes"}
    with pytest.raises(VocabularyError, match="no class names"):
        MODELS.build(zsseg_cfg(text_classifier=no_classes))
    with pytest.raises(VocabularyError, match=r"\['lava'\] are not in vocabulary"):
        MODELS.build(zsseg_cfg(text_classifier=dict(text, split=dict(unseen=["lava"]))))
    prompt = tmp_path / "wide.pt"
    save_prompt(Prompt(torch.zeros(4, 512), clip_model="pomp-tiny"), prompt)
    with pytest.raises(PromptWidthError, match="width 512.*width 64"):
        MODELS.build(zsseg_cfg(text_classifier=dict(text, hard_prompt=None, prompt=str(prompt))))
    with pytest.raises(ValueError, match="exactly one of"):
        MODELS.build(zsseg_cfg(text_classifier=dict(text, templates="vild")))
    with pytest.raises(ValueError, match="needs text_classifier"):
        MODELS.build(zsseg_cfg(text_classifier=None))
    with pytest.raises(ValueError, match="class_weight"):
        MODELS.build(zsseg_cfg(loss_cls=dict(type="mmdet.CrossEntropyLoss", class_weight=[1.0] * 6)))
    with pytest.raises(ValueError, match="clip_stage.text needs one of prompt, hard_prompt, templates"):
        MODELS.build(zsseg_cfg(clip_stage=dict(text=dict(clip_model="pomp-tiny"))))
    np.save(tmp_path / "classes.npy", np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32))
    from_file = dict(text, hard_prompt=None, embedding_file=str(tmp_path / "classes.npy"), clip_model=None)
    assert MODELS.build(zsseg_cfg(text_classifier=from_file)).classifier.num_classes == 5  # no CLIP needed
    with pytest.raises(ValueError, match="needs text_classifier.clip_model"):
        MODELS.build(zsseg_cfg(text_classifier=from_file, clip_stage=dict(weight=0.8)))


def test_zsseg_segmentor_hands_the_head_the_original_rgb_pixels():
    model = MODELS.build(TINY.model).eval()
    seen = {}

    def predict(inputs, metas, test_cfg, images=None):
        seen["images"] = images
        return torch.zeros(1, 5, 64, 64)

    model.decode_head.predict = predict
    bgr = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)  # mmcv loads images as BGR
    sample = SegDataSample(
        metainfo=dict(ori_shape=(64, 64), img_shape=(64, 64), pad_shape=(64, 64), padding_size=[0, 0, 0, 0])
    )
    data = model.data_preprocessor(dict(inputs=[bgr], data_samples=[sample]))
    model.predict(data["inputs"], data["data_samples"])
    torch.testing.assert_close(seen["images"][0], bgr[[2, 1, 0]].float(), atol=1e-3, rtol=0)


def test_the_clip_stage_in_the_head_is_zssegs_ensemble_written_out(tiny_clip):
    """predict with the input images: the mask logits upsampled to the (padded) input, cropped to img_shape; each
    region where sigmoid(mask logit) > 0.5 (a probability, not the logit, against the threshold) scored by CLIP;
    p = p_head^(1 - w_c) * p_clip^w_c with w_c = 0.8 for the unseen class and 0.2 for the seen ones; then
    MaskFormer's sum over the queries."""
    head = MODELS.build(zsseg_cfg(clip_stage=dict(weight=0.8, mask_threshold=0.5))).eval()
    g = torch.Generator().manual_seed(5)
    class_logits = torch.randn(1, 1, 3, 6, generator=g) * 2
    mask_logits = torch.full((1, 1, 3, 8, 8), -4.0)
    mask_logits[0, 0, 0, 1:6, 2:7] = 0.3  # sigmoid 0.57: inside, though the logit is below the threshold
    mask_logits[0, 0, 0, 3, 4] = -4.0  # a hole: the region is no box
    mask_logits[0, 0, 1] = torch.randn(8, 8, generator=g) * 2  # scattered
    # query 2: nowhere, so CLIP's probabilities are 1
    head.forward = lambda x, samples=None: (class_logits, mask_logits)
    images = torch.rand(1, 3, 32, 32, generator=g) * 255
    out = head.predict(features(1), [dict(img_shape=(28, 30))], None, images=images)

    masks = F.interpolate(mask_logits[0], size=(32, 32), mode="bilinear", align_corners=False)[0, :, :28, :30]
    masks = masks.sigmoid()
    image = images[0, :, :28, :30]
    text = head.classifier.class_embeddings
    regions = masks > 0.5
    assert regions[0].any() and regions[1].any() and not regions[2].any() and not (mask_logits[0, 0, 0] > 0.5).any()
    clip_probs = torch.stack(
        [zsseg_region_probs(tiny_clip, image, r, text) if r.any() else torch.ones(5) for r in regions]
    )
    exponent = torch.tensor([0.2, 0.2, 0.2, 0.8, 0.2])  # water (3) unseen
    probs = class_logits[0, 0].softmax(-1)[:, :5] ** (1 - exponent) * clip_probs**exponent
    expected = torch.einsum("qc,qhw->chw", probs, masks)
    assert out.shape == (1, 5, 28, 30)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-4)
