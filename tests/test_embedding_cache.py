import time
import warnings

import pytest
import torch

from pomp_plugins.prompt import (
    ClipMismatchWarning,
    EmbeddingCache,
    Prompt,
    PromptedTextEncoder,
    WeightsUnavailableError,
    class_embeddings,
    load_clip,
    load_for_prompt,
    prompted_encoder,
    save_prompt,
)


def test_second_request_reads_the_cache(tmp_path, tiny_clip, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a")
    names = ["cat", "dog", "zebra"]
    first = cache.encode(encoder, names)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cache was missed")

    monkeypatch.setattr(PromptedTextEncoder, "encode_names", must_not_run)
    start = time.perf_counter()
    second = cache.encode(encoder, names)
    assert time.perf_counter() - start < 0.5
    assert torch.equal(first, second) and first.shape == (3, 64)


def test_changed_prompt_weights_or_names_never_hit_a_stale_entry(tmp_path, tiny_clip):
    cache = EmbeddingCache(tmp_path)
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a")
    key = cache.key(encoder, ["cat", "dog"])
    assert cache.key(encoder, ["dog", "cat"]) != key
    with torch.no_grad():
        encoder.ctx[0, 0] += 1e-3
    assert cache.key(encoder, ["cat", "dog"]) != key

    fresh = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a")
    other = PromptedTextEncoder.from_clip(load_clip("pomp-tiny", None, seed=123).model, init="a photo of a")
    assert cache.key(other, ["cat", "dog"]) != cache.key(fresh, ["cat", "dog"])
    bf16 = PromptedTextEncoder(
        PromptedTextEncoder.from_clip(load_clip("pomp-tiny", None, dtype="bf16").model).tower, other.ctx
    )
    assert cache.key(bf16, ["cat"]) != cache.key(other, ["cat"])


def test_class_embeddings_end_to_end(tmp_path, tiny_clip):
    prompt_path = tmp_path / "p.pt"
    save_prompt(Prompt(torch.randn(4, 64) * 0.02, "pomp-tiny", None), prompt_path)
    weights = class_embeddings(["cat", "dog"], prompt=prompt_path, clip_pretrained=None, cache=False)
    assert weights.shape == (2, 64) and torch.allclose(weights.norm(dim=-1), torch.ones(2))


def test_fingerprint_of_large_tensors_stays_in_bounds():
    """ViT-B-16's token embedding has 25,296,896 values: float32 index arithmetic would step past the end."""
    from pomp_plugins.prompt.cache import tensor_fingerprint

    module = torch.nn.Embedding(49408, 512)
    first = tensor_fingerprint(module)
    with torch.no_grad():
        module.weight[-1, -1] += 1.0  # the last value is always sampled
    assert tensor_fingerprint(module) != first


def test_activation_and_template_are_in_the_key(tmp_path, tiny_clip, monkeypatch):
    """Same weights under QuickGELU give other embeddings: a run with the wrong activation must not leave an
    entry that a corrected run then reads."""
    cache = EmbeddingCache(tmp_path)
    names = ["cat", "dog"]
    quick = load_clip("pomp-tiny", None, quick_gelu=True)
    assert torch.equal(quick.model.token_embedding.weight, tiny_clip.model.token_embedding.weight)
    gelu_encoder = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a")
    quick_encoder = PromptedTextEncoder(PromptedTextEncoder.from_clip(quick.model).tower, gelu_encoder.ctx)
    wrong = cache.encode(gelu_encoder, names)
    right = cache.encode(quick_encoder, names)
    with torch.no_grad():
        assert torch.allclose(right, quick_encoder.encode_names(names, normalize=False), atol=1e-6)
    assert not torch.allclose(right, wrong, atol=1e-4)
    assert len(list(tmp_path.glob("*.npy"))) == 2

    key = cache.key(gelu_encoder, names)
    original = PromptedTextEncoder.tokenize
    monkeypatch.setattr(
        PromptedTextEncoder,
        "tokenize",
        lambda self, names, device=None: original(self, [f"{n}!" for n in names], device),
    )
    assert cache.key(gelu_encoder, names) != key


def write_weights(path, seed):
    torch.save(load_clip("pomp-tiny", None, seed=seed).model.state_dict(), path)


def test_the_prompt_file_chooses_the_clip(tmp_path):
    weights = tmp_path / "tiny_seed5.pt"
    write_weights(weights, seed=5)
    prompt_path = tmp_path / "p.pt"
    save_prompt(Prompt(torch.randn(4, 64) * 0.02, "pomp-tiny", str(weights), clip_quick_gelu=True), prompt_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip, prompt = load_for_prompt(prompt_path)
        prompted_encoder(clip, prompt)
    assert (clip.name, clip.pretrained) == ("pomp-tiny", str(weights))
    assert torch.equal(clip.model.token_embedding.weight, torch.load(weights)["token_embedding.weight"])
    # the weights file cannot tell its activation: the prompt's is used
    assert clip.quick_gelu and "the prompt was trained with" in clip.activation

    random_clip, _ = load_for_prompt(prompt_path, clip_pretrained="none")
    assert random_clip.pretrained is None
    with pytest.warns(ClipMismatchWarning, match=r"weights .*tiny_seed5.pt \(now random\)"):
        prompted_encoder(random_clip, prompt)
    with pytest.warns(ClipMismatchWarning, match=r"activation QuickGELU \(now GELU\)"):
        prompted_encoder(load_clip("pomp-tiny", str(weights), quick_gelu=False), prompt)


def test_recorded_weights_missing_here_say_what_to_do(tmp_path):
    prompt_path = tmp_path / "p.pt"
    save_prompt(Prompt(torch.zeros(4, 64), "pomp-tiny", str(tmp_path / "gone.pt")), prompt_path)
    with pytest.raises(WeightsUnavailableError, match=r"trained with CLIP pomp-tiny / .*gone.pt.*--clip-pretrained"):
        load_for_prompt(prompt_path)


def test_without_a_prompt_record_the_defaults_apply(tmp_path, monkeypatch):
    """A hard prompt, or a reference checkpoint without a backbone in its name: ViT-B-16 with OpenAI weights."""
    import pomp_plugins.prompt.embedder as embedder

    asked = []
    monkeypatch.setattr(
        embedder,
        "load_clip",
        lambda name, pretrained, **kwargs: (
            asked.append((name, pretrained, kwargs["prompt_quick_gelu"])) or load_clip("pomp-tiny", None)
        ),
    )
    reference = tmp_path / "model.pth.tar-5"
    torch.save({"state_dict": {"ctx": torch.zeros(4, 64).half()}, "epoch": 5}, reference)
    load_for_prompt(None)
    load_for_prompt(reference)
    load_for_prompt(reference, clip_model="ViT-B-32", clip_pretrained="laion2b_s34b_b79k")
    assert asked == [
        ("ViT-B-16", "openai", None),
        ("ViT-B-16", "openai", True),
        ("ViT-B-32", "laion2b_s34b_b79k", True),
    ]
