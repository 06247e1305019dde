import time

import torch

from pomp_plugins.prompt import (
    EmbeddingCache,
    Prompt,
    PromptedTextEncoder,
    class_embeddings,
    load_clip,
    save_prompt,
    vocabulary_embeddings,
)


def test_second_request_reads_the_cache(tmp_path, tiny_clip, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, init="a photo of a")
    names = ["cat", "dog", "zebra"]
    first = class_embeddings(encoder, names, cache)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cache was missed")

    monkeypatch.setattr(PromptedTextEncoder, "encode_names", must_not_run)
    start = time.perf_counter()
    second = class_embeddings(encoder, names, cache)
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
    bf16 = PromptedTextEncoder(PromptedTextEncoder.from_clip(load_clip("pomp-tiny", None, dtype="bf16").model).tower,
                               other.ctx)
    assert cache.key(bf16, ["cat"]) != cache.key(other, ["cat"])


def test_vocabulary_embeddings_end_to_end(tmp_path, tiny_clip):
    prompt_path = tmp_path / "p.pt"
    save_prompt(Prompt(torch.randn(4, 64) * 0.02, "pomp-tiny", None), prompt_path)
    weights = vocabulary_embeddings(["cat", "dog"], prompt=prompt_path, clip_pretrained=None, cache=False)
    assert weights.shape == (2, 64) and torch.allclose(weights.norm(dim=-1), torch.ones(2))


def test_fingerprint_of_large_tensors_stays_in_bounds():
    """ViT-B-16's token embedding has 25,296,896 values: float32 index arithmetic would step past the end."""
    from pomp_plugins.prompt.cache import tensor_fingerprint

    module = torch.nn.Embedding(49408, 512)
    first = tensor_fingerprint(module)
    with torch.no_grad():
        module.weight[-1, -1] += 1.0  # the last value is always sampled
    assert tensor_fingerprint(module) != first
