"""The packed, shared-prefix text path that training uses, against open_clip's own modules at 77 tokens."""

import warnings

import open_clip
import pytest
import torch

from pomp_plugins.prompt import FrozenTextTower, PromptedTextEncoder, get_vocabulary, load_clip

NAMES = ["dog", "golden retriever", "Ü ñ 日本", "x " * 80, "aerosol can"]


def reference_features(clip_model, ctx: torch.Tensor, names) -> torch.Tensor:
    """CoOp's way: splice ctx into the 77-token embeddings of "X X X X {name}." and run open_clip's transformer."""
    n_ctx = ctx.shape[0]
    tokens = open_clip.tokenize([" ".join(["X"] * n_ctx) + f" {name}." for name in names])
    embedding = clip_model.token_embedding(tokens)
    x = torch.cat([embedding[:, :1], ctx.expand(len(names), -1, -1), embedding[:, 1 + n_ctx :]], dim=1)
    x = clip_model.transformer(x + clip_model.positional_embedding, attn_mask=clip_model.attn_mask)
    x = clip_model.ln_final(x)
    return x[torch.arange(len(names)), tokens.argmax(dim=-1)] @ clip_model.text_projection


def assert_matches_open_clip(clip_model, encoder: PromptedTextEncoder, prompts, names) -> None:
    """Features of ``prompts`` (their first ``len(names)`` rows) and the ctx gradient, to 1e-5 of CoOp's way."""
    weights = torch.randn(len(names), encoder.tower.output_dim, generator=torch.Generator().manual_seed(1))
    ours = encoder(prompts)[: len(names)]
    (ours * weights).sum().backward()
    ctx = encoder.ctx.detach().clone().requires_grad_(True)
    reference = reference_features(clip_model, ctx, names)
    (reference * weights).sum().backward()
    assert ((ours.detach() - reference.detach()).abs().max() / reference.abs().max()) < 1e-5
    assert ((encoder.ctx.grad - ctx.grad).abs().max() / ctx.grad.abs().max()) < 1e-5


@pytest.mark.parametrize("n_ctx", [4, 16])
def test_features_and_ctx_gradient_match_open_clip(tiny_clip, n_ctx):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, n_ctx, generator=torch.Generator().manual_seed(0))
    assert encoder.tower.packable
    assert_matches_open_clip(tiny_clip.model, encoder, encoder.tokenize(NAMES), NAMES)


@pytest.mark.parametrize("n_ctx", [4, 16])
def test_the_fixed_shape_layout_matches_open_clip(tiny_clip, n_ctx):
    """CUDA graphs need few shapes: padded prompt rows and padding tokens must not change the real features."""
    from pomp_plugins.prompt.packed_attention import PackedPrompts

    names = [name for name in NAMES if len(name) < 100]  # room for padding inside CLIP's 77 positions
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, n_ctx, generator=torch.Generator().manual_seed(0))
    prompts = encoder.tokenize(names)
    longest = int(prompts.eot.max()) - n_ctx  # suffix tokens of the longest prompt
    fixed = PackedPrompts.fixed(prompts, 1 + n_ctx, rows=len(names) + 3, length=longest + 2, bucket=16)
    assert len(fixed.ids) % 16 == 0 and len(fixed.ids) > len(encoder.pack(prompts).ids)
    assert fixed.attention_rows == len(names) + 3 + 2  # 16 padding slots need 2 rows of longest + 2
    assert_matches_open_clip(tiny_clip.model, encoder, fixed, names)
    with pytest.raises(ValueError, match="do not fit a fixed layout"):
        PackedPrompts.fixed(prompts, 1 + n_ctx, rows=len(names), length=longest - 1, bucket=16)


def test_the_generic_path_for_other_blocks_gives_the_same_features(tiny_clip, monkeypatch):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, 4, generator=torch.Generator().manual_seed(0))
    names = list(get_vocabulary("imagenet21k-p").names[:50])
    with torch.no_grad():
        packed = encoder.encode_names(names, batch_size=16)
        monkeypatch.setattr(FrozenTextTower, "packable", property(lambda self: False))
        generic = encoder.encode_names(names, batch_size=16)
    assert torch.allclose(packed, generic, atol=1e-6)


def test_blocks_other_than_open_clips_standard_one_are_not_packed():
    clip = load_clip("pomp-tiny", None)
    tower = FrozenTextTower(clip.model)
    tower.transformer.resblocks[0].attn.add_zero_attn = True  # something the packed path does not implement
    assert not tower.packable


class WrappedAttention(torch.nn.Module):
    """An attention module that is not ``nn.MultiheadAttention`` (as open_clip after 3.3 builds its own)."""

    def __init__(self, attention: torch.nn.MultiheadAttention):
        super().__init__()
        self.attention = attention

    def forward(self, *args, **kwargs):
        return self.attention(*args, **kwargs)


def test_an_encoder_falling_back_from_the_packed_path_warns_once_per_reason_and_says_why(monkeypatch):
    from open_clip.transformer import ResidualAttentionBlock

    from pomp_plugins.prompt import HardPromptEncoder, SlowTextPathWarning, text_encoder

    monkeypatch.setattr(text_encoder, "_SLOW_PATH_REASONS_WARNED", set())  # as in a fresh process
    clip = load_clip("pomp-tiny", None)  # its own model: its blocks are changed below
    encoder = PromptedTextEncoder.from_clip(clip.model, 4, generator=torch.Generator().manual_seed(0))
    names = ["dog", "golden retriever", "aerosol can"]
    blocks = encoder.tower.transformer.resblocks

    def encode_twice() -> tuple[torch.Tensor, list[str]]:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            features = encoder.encode_names(names)
            assert torch.equal(encoder.encode_names(names), features)
            HardPromptEncoder(encoder.tower).encode_texts(["a photo of a dog."])
        return features, [str(w.message) for w in caught if issubclass(w.category, SlowTextPathWarning)]

    packed, messages = encode_twice()
    assert messages == []

    class OtherBlock(ResidualAttentionBlock):
        pass

    blocks[1].__class__ = OtherBlock
    fallback, messages = encode_twice()
    assert torch.allclose(fallback, packed, atol=1e-6)
    assert len(messages) == 1 and "text block 1 is" in messages[0] and "OtherBlock, not open_clip's" in messages[0]
    assert "slower cut-after-EOT path" in messages[0] and "tested with open_clip_torch 3.3.x" in messages[0]
    assert encode_twice()[1] == []  # once per process

    blocks[1].__class__ = ResidualAttentionBlock
    blocks[0].attn = WrappedAttention(blocks[0].attn)
    fallback, messages = encode_twice()
    assert torch.allclose(fallback, packed, atol=1e-6)
    assert len(messages) == 1
    assert (
        "attention of text block 0 is" in messages[0]
        and "WrappedAttention, not torch.nn.MultiheadAttention" in messages[0]
    )


def test_a_fixed_shape_step_computes_the_packed_steps_loss_and_update(tiny_clip):
    """The layout CUDA graphs replay (padded prompt rows, padded token count: few shapes) changes nothing."""
    from pomp_plugins.pretrain import PompStep, group_negatives

    names = list(get_vocabulary("imagenet21k-p").names[:300])
    labels = torch.tensor([3, 3, 150, 150, 299, 299])  # 3 images x 2 views
    features = torch.nn.functional.normalize(torch.randn(6, 64, generator=torch.Generator().manual_seed(2)), dim=-1)
    results = []
    for fixed in (False, True):
        encoder = PromptedTextEncoder.from_clip(tiny_clip.model, 4, generator=torch.Generator().manual_seed(0))
        step = PompStep(
            encoder,
            encoder.tokenize(names, device="cpu"),
            100.0,
            40,
            10.0,
            torch.optim.SGD([encoder.ctx], lr=0.1),
            cuda_graphs=fixed,
            max_positives=3,
        )
        inputs = step.prepare(labels, group_negatives(len(names), 40, 0, 0, 0))
        if fixed:  # 39 negatives + 3 images' labels; the longest prompt of all 300 names
            assert len(inputs.prompts.eot_rows) == 42 and len(inputs.plan.classes) == 42
        results.append((float(step(features, inputs)), encoder.ctx.detach().clone()))
    (packed_loss, packed_ctx), (fixed_loss, fixed_ctx) = results
    assert abs(packed_loss - fixed_loss) < 1e-5
    assert torch.allclose(packed_ctx, fixed_ctx, atol=1e-6)
