"""Zero-shot classification in process, against computations written out here with open_clip's own modules: the
classifier of a loaded prompt file (its ctx spliced into the token embeddings by hand), of a hard prompt, the image
features, and the per-class counts of ``evaluate``."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from pomp_plugins.images import AccuracyCounts, Batch, evaluate, image_features
from pomp_plugins.prompt import Prompt, class_embeddings, save_prompt

NAMES = ["cat", "traffic light", "golden retriever"]


def coop_text_features(model, ctx: torch.Tensor, names: list[str]) -> torch.Tensor:
    """CoOp's prompted text features: "X X X X {name}." tokenized by open_clip, the X embeddings replaced by ctx,
    then open_clip's own positional embedding, transformer, final norm, EOT pooling and projection; normalised."""
    placeholder = " ".join(["X"] * len(ctx))
    tokens = open_clip.tokenize([f"{placeholder} {name}." for name in names])
    x = model.token_embedding(tokens)
    x = torch.cat([x[:, :1], ctx.expand(len(names), -1, -1), x[:, 1 + len(ctx) :]], dim=1)
    x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
    x = model.ln_final(x)[torch.arange(len(names)), tokens.argmax(dim=-1)] @ model.text_projection
    return F.normalize(x, dim=-1)


def test_a_loaded_prompt_files_ctx_is_what_encodes_the_classes(tiny_clip, tmp_path):
    ctx = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    save_prompt(Prompt(ctx, clip_model="pomp-tiny"), tmp_path / "prompt.pt")
    ours = class_embeddings(NAMES, clip=tiny_clip, cache=False, prompt=tmp_path / "prompt.pt")
    with torch.no_grad():
        expected = coop_text_features(tiny_clip.model, ctx, NAMES)
        other_ctx = coop_text_features(tiny_clip.model, torch.zeros(4, 64), NAMES)
    assert ours.shape == (3, 64) and ours.dtype == torch.float32
    assert (ours - expected).abs().max() < 1e-5
    assert (expected - other_ctx).abs().max() > 0.05  # the ctx matters far beyond the tolerance


def test_a_hard_prompt_classifier_is_open_clips_normalised_encode_text(tiny_clip):
    ours = class_embeddings(NAMES, clip=tiny_clip, cache=False, hard_prompt="a photo of a")
    with torch.no_grad():
        expected = F.normalize(
            tiny_clip.model.encode_text(open_clip.tokenize([f"a photo of a {n}." for n in NAMES])), dim=-1
        )
    assert (ours - expected).abs().max() < 1e-5


def test_a_classifier_needs_exactly_one_source_and_a_known_template_set(tiny_clip):
    with pytest.raises(ValueError, match="exactly one"):
        class_embeddings(NAMES, clip=tiny_clip, cache=False)
    with pytest.raises(ValueError, match="exactly one"):
        class_embeddings(NAMES, clip=tiny_clip, cache=False, hard_prompt="a photo of a", templates="openai")
    with pytest.raises(ValueError, match="unknown template set 'nope'; known: imagenet80, openai, vild"):
        class_embeddings(NAMES, clip=tiny_clip, cache=False, templates="nope")


def test_image_features_are_normalised_encode_image_in_the_models_dtype(tiny_clip):
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = F.normalize(tiny_clip.model.encode_image(images.half().float()), dim=-1)
    ours = image_features(tiny_clip.model, images.half())
    assert ours.dtype == torch.float32 and (ours - expected).abs().max() < 1e-5
    doubled = image_features(tiny_clip.model, images, encode=lambda x: 2 * tiny_clip.model.encode_image(x) + 1)
    with torch.no_grad():
        assert (doubled - F.normalize(2 * tiny_clip.model.encode_image(images) + 1, dim=-1)).abs().max() < 1e-5


def test_evaluate_counts_each_class_against_hand_ranked_logits(tiny_clip, capsys):
    generator = torch.Generator().manual_seed(2)
    text = F.normalize(torch.randn(7, 64, generator=generator), dim=-1)
    images = torch.randn(9, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 6, 6, 3])
    batches = [
        Batch(images[:4], labels[:4], ["a.png"]),
        Batch(torch.empty(0), labels[:0], ["b.png"]),
        Batch(images[4:], labels[4:], []),
    ]
    counts, skipped = evaluate(tiny_clip, text, batches)
    assert skipped == ["a.png", "b.png"] and capsys.readouterr().err == ""  # no progress bar unless asked

    top1, top5, total = (torch.zeros(7, dtype=torch.long) for _ in range(3))
    with torch.no_grad():
        logits = F.normalize(tiny_clip.model.encode_image(images), dim=-1) @ text.t()
    for row, label in enumerate(labels.tolist()):
        rank = int((logits[row] > logits[row, label]).sum())  # classes scored above the true one
        top1[label] += rank == 0
        top5[label] += rank < 5
        total[label] += 1
    assert torch.equal(counts.counts, torch.stack([top1, top5, total]))
    assert 0 < int(top1.sum()) < 9 and int(top5.sum()) > int(top1.sum())  # a case where the counts differ


def test_summary_of_counts_without_images_and_per_class_accuracy():
    counts = AccuracyCounts(3)
    assert counts.summary() == {
        "top1": 0.0,
        "top5": 0.0,
        "mean_per_class": 0.0,
        "images": 0,
        "classes": 3,
        "classes_with_images": 0,
    }
    counts.update(torch.tensor([[0.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]), torch.tensor([1, 1, 0]))
    per_class = counts.per_class()
    assert per_class[0] == 0.0 and per_class[1] == 0.5 and per_class[2].isnan()
    summary = counts.summary()
    assert summary["top1"] == pytest.approx(100 / 3) and summary["top5"] == 100.0  # 3 classes: all in the top 5
    assert summary["mean_per_class"] == pytest.approx(25.0) and summary["classes_with_images"] == 2


def test_top5_with_fewer_images_than_five_and_more_classes():
    counts = AccuracyCounts(7)
    logits = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6, 7]])
    counts.update(logits, torch.tensor([4, 1]))  # ranked 5th (a top-5 hit) and 6th (a miss)
    assert counts.counts.tolist() == [[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0, 0]]
