import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pomp_plugins.prompt import EmbeddingFileError, TextEmbeddingClassifier, class_embeddings, load_embedding_file


def test_cosine_logits_with_temperature():
    embeddings = torch.randn(5, 8) * 10
    classifier = TextEmbeddingClassifier(embeddings, temperature=30.0)
    features = torch.randn(3, 8)
    expected = 30.0 * F.normalize(features, dim=1) @ F.normalize(embeddings, dim=1).t()
    assert torch.allclose(classifier(features), expected, atol=1e-5)
    assert "class_embeddings" not in classifier.state_dict()  # a checkpoint never pins a vocabulary


def test_swapping_classes_keeps_common_logits():
    embeddings = torch.randn(5, 8)
    classifier = TextEmbeddingClassifier(embeddings)
    features = torch.randn(4, 8)
    before = classifier(features)
    classifier.set_class_embeddings(embeddings[[3, 1]])
    assert classifier.num_classes == 2
    assert torch.allclose(classifier(features), before[:, [3, 1]])
    with pytest.raises(EmbeddingFileError, match="dimension 7, the classifier has 8"):
        classifier.set_class_embeddings(torch.randn(2, 7))


def test_embedding_files_in_detics_npy_format(tmp_path):
    array = (np.random.randn(1203, 512) * 10).astype(np.float16)
    np.save(tmp_path / "lvis.npy", array)
    loaded = load_embedding_file(tmp_path / "lvis.npy", dim=512)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, torch.from_numpy(array.astype(np.float32)))
    with pytest.raises(EmbeddingFileError, match="dimension 512, but the classifier expects dimension 256"):
        load_embedding_file(tmp_path / "lvis.npy", dim=256)
    with pytest.raises(EmbeddingFileError, match="holds 1203 classes but the vocabulary has 2"):
        class_embeddings(["cat", "dog"], embedding_file=tmp_path / "lvis.npy")
    np.save(tmp_path / "flat.npy", np.zeros(10))
    with pytest.raises(EmbeddingFileError, match=r"found \(10,\)"):
        load_embedding_file(tmp_path / "flat.npy")
    with pytest.raises(FileNotFoundError):
        load_embedding_file(tmp_path / "missing.npy")


def test_weights_from_a_prompt_over_names():
    weights = class_embeddings(
        ["cat", "dog", "bird"], hard_prompt="a photo of a", clip_model="pomp-tiny", clip_pretrained=None, dim=64
    )
    assert weights.shape == (3, 64)
    with pytest.raises(EmbeddingFileError, match="gives 64-d text embeddings.*dimension 512"):
        class_embeddings(["cat"], hard_prompt="a photo of a", clip_model="pomp-tiny", clip_pretrained=None, dim=512)


def test_defaults_bad_shapes_and_the_features_dtype():
    embeddings = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    classifier = TextEmbeddingClassifier(embeddings)
    assert classifier.dim == 6 and classifier.num_classes == 4
    features = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    expected = 50.0 * F.normalize(features, dim=-1) @ F.normalize(embeddings, dim=-1).t()  # default temperature 50
    assert torch.allclose(classifier(features), expected, atol=1e-5)
    assert torch.allclose(classifier.class_embeddings.norm(dim=1), torch.ones(4))
    half = classifier(features.half())
    assert half.dtype == torch.float16 and torch.allclose(half.float(), expected, atol=0.1)
    assert list(dict(classifier.named_parameters())) == []
    with pytest.raises(EmbeddingFileError, match=r"must be \[C, D\], got \(6,\)"):
        classifier.set_class_embeddings(torch.randn(6))
    with pytest.raises(EmbeddingFileError, match=r"must be \[C, D\]"):
        TextEmbeddingClassifier(torch.randn(2, 3, 4))


def test_torch_embedding_files_and_matching_vocabularies(tmp_path):
    weights = torch.randn(3, 8, dtype=torch.float64)
    torch.save(weights, tmp_path / "w.pt")
    loaded = class_embeddings(["a", "b", "c"], embedding_file=tmp_path / "w.pt", dim=8, normalize=False)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, weights.float())
    assert torch.allclose(class_embeddings(embedding_file=tmp_path / "w.pt"), F.normalize(weights.float(), dim=-1))
    with pytest.raises(EmbeddingFileError, match="dimension 8, but the classifier expects dimension 4"):
        class_embeddings(embedding_file=tmp_path / "w.pt", dim=4)
    with pytest.raises(ValueError, match="exactly one of prompt, hard_prompt, templates, embedding_file"):
        class_embeddings(["a"])
    with pytest.raises(ValueError, match="exactly one of .*got prompt, embedding_file"):
        class_embeddings(["a"], prompt="p.pt", embedding_file=tmp_path / "w.pt")
    with pytest.raises(ValueError, match="hard prompt needs a vocabulary"):
        class_embeddings(hard_prompt="a photo of a")


def test_weights_from_a_hard_prompt_are_open_clips_unnormalised_text_features(tiny_clip):
    import open_clip

    names = ["cat", "dog", "bird"]
    weights = class_embeddings(
        names, hard_prompt="a photo of a", clip_model="pomp-tiny", clip_pretrained=None, normalize=False
    )
    with torch.no_grad():
        expected = tiny_clip.model.encode_text(open_clip.tokenize([f"a photo of a {n}." for n in names]))
    assert (weights - expected).abs().max() < 1e-5 * expected.abs().max()
    assert not torch.allclose(weights.norm(dim=1), torch.ones(3))  # as stored: not normalised


def test_weights_from_a_prompt_file_use_its_ctx_and_the_clip_it_names(tiny_clip, tmp_path):
    from test_zeroshot_metrics import coop_text_features

    from pomp_plugins.prompt import Prompt, save_prompt

    ctx = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    save_prompt(Prompt(ctx, clip_model="pomp-tiny"), tmp_path / "prompt.pt")
    weights = class_embeddings(["cat", "dog"], prompt=tmp_path / "prompt.pt", clip_pretrained=None)  # no clip_model
    with torch.no_grad():
        expected = coop_text_features(tiny_clip.model, ctx, ["cat", "dog"])
    assert (F.normalize(weights, dim=-1) - expected).abs().max() < 1e-5
