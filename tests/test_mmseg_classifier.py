"""The text classifier both mmseg heads share (VocabularyClassifier), against CLIP's own text encoding and the
cosine formula written out: its logits, the split's seen / trained masks, the vocabulary swap, the text sources."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from pomp_plugins.mmseg import VocabularyClassifier

CLASSES = ["sky", "grass", "road", "water", "snow"]
TINY = dict(clip_model="pomp-tiny", clip_pretrained="none")


def clip_text(clip, texts):
    """L2-normalised open_clip text features of plain sentences."""
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(open_clip.tokenize(texts)), dim=-1)


def test_logits_are_temperature_cosines_and_untrained_classes_are_minus_inf_in_training_only(tiny_clip):
    classifier = VocabularyClassifier(
        CLASSES, dict(unseen=["water"]), hard_prompt="a photo of a", temperature=30.0, **TINY
    )
    expected_text = clip_text(tiny_clip, [f"a photo of a {name}." for name in CLASSES])
    torch.testing.assert_close(classifier.class_embeddings, expected_text, atol=1e-5, rtol=1e-5)
    assert (classifier.num_classes, classifier.dim, classifier.temperature) == (5, 64, 30.0)
    assert classifier.seen.tolist() == classifier.trained.tolist() == [True, True, True, False, True]

    features = torch.randn(2, 3, 64) * 4
    cosine = F.normalize(features, dim=-1) @ expected_text.t()
    torch.testing.assert_close(classifier.eval()(features), 30.0 * cosine, atol=1e-4, rtol=1e-5)
    train = classifier.train()(features)
    assert torch.isneginf(train[..., 3]).all()
    torch.testing.assert_close(train[..., [0, 1, 2, 4]], 30.0 * cosine[..., [0, 1, 2, 4]], atol=1e-4, rtol=1e-5)
    assert "vocabulary=" in repr(classifier) and "(5 classes), split=" in repr(classifier)

    everything = VocabularyClassifier(CLASSES, hard_prompt="a photo of a", **TINY).train()  # no split
    assert not everything.seen.any() and everything.trained.all()  # every class trained, none "seen" for CLIP
    assert torch.isfinite(everything(features)).all()
    assert "split=" not in repr(everything)


def test_a_vocabulary_swap_re_encodes_the_classes_with_the_same_text_source(tiny_clip):
    classifier = VocabularyClassifier(CLASSES, dict(unseen=["water"]), hard_prompt="a photo of a", **TINY)
    classifier.set_vocabulary(["lava", "sky"])
    assert classifier.num_classes == 2 and classifier.vocabulary.names == ("lava", "sky")
    expected = clip_text(tiny_clip, ["a photo of a lava.", "a photo of a sky."])
    torch.testing.assert_close(classifier.class_embeddings, expected, atol=1e-5, rtol=1e-5)
    assert classifier.trained.all() and not classifier.seen.any()  # the old split is gone
    classifier.set_vocabulary(["lava", "sky"], dict(unseen=["lava"]))
    assert classifier.seen.tolist() == [False, True] and classifier.trained.tolist() == [False, True]


def test_a_template_list_is_each_class_the_normalised_mean_of_its_sentences(tiny_clip):
    templates = ["a photo of a {}.", "a drawing of the {}."]
    classifier = VocabularyClassifier(CLASSES[:2], templates=templates, **TINY)
    expected = torch.stack(
        [F.normalize(clip_text(tiny_clip, [t.format(name) for t in templates]).mean(0), dim=-1) for name in CLASSES[:2]]
    )
    torch.testing.assert_close(classifier.class_embeddings, expected, atol=1e-5, rtol=1e-5)
    assert classifier.text_source["templates"] == tuple(templates)
    with pytest.raises(ValueError, match="exactly one of"):
        VocabularyClassifier(CLASSES, **TINY)
    with pytest.raises(ValueError, match="exactly one of"):
        VocabularyClassifier(CLASSES, hard_prompt="a photo of a", templates="vild", **TINY)
