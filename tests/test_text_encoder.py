"""The prompted encoder against open_clip's own encode_text, the independent reference."""

import open_clip
import pytest
import torch

from pomp_plugins.prompt import (
    FrozenTextTower,
    HardPromptEncoder,
    PromptedTextEncoder,
    PromptWidthError,
    load_clip,
)

NAMES = ["dog", "golden retriever", "aerosol can", "a-very-long-class-name " * 30, "Ü ñ 日本"]


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("model_name", ["pomp-tiny", "ViT-B-16"])
def test_phrase_ctx_reproduces_encode_text(model_name):
    clip = load_clip(model_name, None, dtype="fp32")
    encoder = PromptedTextEncoder.from_clip(clip.model, init="a photo of a")
    assert encoder.n_ctx == 4
    with torch.no_grad():
        ours = encoder.encode_names(NAMES, batch_size=2, normalize=False)
        reference = clip.model.encode_text(open_clip.tokenize([f"a photo of a {n}." for n in NAMES]))
    assert relative_error(ours, reference) < 1e-5


def test_hard_prompt_encoder_reproduces_encode_text(tiny_clip):
    texts = ["a bad photo of the dog.", "itap of a cat.", "x"]
    with torch.no_grad():
        ours = HardPromptEncoder(FrozenTextTower(tiny_clip.model)).encode_texts(texts, normalize=True)
        reference = tiny_clip.model.encode_text(open_clip.tokenize(texts), normalize=True)
    assert relative_error(ours, reference) < 1e-5


def test_batching_and_length_sorting_do_not_change_results(tiny_clip, capsys):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, n_ctx=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one_by_one = encoder.encode_names(NAMES, batch_size=1)
        all_at_once = encoder.encode_names(NAMES, batch_size=len(NAMES))
    assert capsys.readouterr().err == ""  # no progress bar unless asked
    assert torch.allclose(one_by_one, all_at_once, atol=1e-6)
    assert torch.allclose(one_by_one.norm(dim=-1), torch.ones(len(NAMES)))


def test_batches_are_cut_after_their_last_eot(tiny_clip):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, n_ctx=4)
    prompts = encoder.tokenize(["dog", "golden retriever"])
    batch = prompts.select(torch.tensor([0]))
    # [SOT] + 4 ctx + "dog" + "." + [EOT]
    assert batch.ids.shape[1] == 8 and batch.eot.tolist() == [7]


def test_random_init_statistics_and_only_ctx_learns(tiny_clip):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, n_ctx=16, generator=torch.Generator().manual_seed(0))
    assert encoder.ctx.shape == (16, 64) and encoder.ctx.dtype == torch.float32
    assert abs(encoder.ctx.std().item() - 0.02) < 0.005
    encoder.encode_names(["cat", "dog"]).sum().backward()
    assert encoder.ctx.grad is not None and encoder.ctx.grad.abs().sum() > 0
    assert [n for n, p in encoder.named_parameters() if p.requires_grad] == ["ctx"]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_weights_keep_an_fp32_ctx(dtype):
    low = load_clip("pomp-tiny", None, dtype=dtype)
    full = load_clip("pomp-tiny", None, dtype="fp32")
    encoder = PromptedTextEncoder.from_clip(low.model, init="a photo of a")
    assert encoder.tower.dtype != torch.float32 and encoder.ctx.dtype == torch.float32
    ours = encoder.encode_names(["cat", "dog"])
    ours.sum().backward()
    assert encoder.ctx.grad.dtype == torch.float32
    with torch.no_grad():
        reference = PromptedTextEncoder.from_clip(full.model, init="a photo of a").encode_names(["cat", "dog"])
    assert (ours.detach() - reference).abs().max() < 0.05


def test_wrong_width_names_both_widths(tiny_clip):
    with pytest.raises(PromptWidthError, match=r"width 512.*width 64"):
        PromptedTextEncoder(FrozenTextTower(tiny_clip.model), torch.zeros(4, 512))


def test_tower_sizes_a_linear_projection_and_the_room_left_for_a_name(tiny_clip):
    import copy

    from pomp_plugins.prompt.tokenization import tokenize

    tower = FrozenTextTower(tiny_clip.model)
    assert (tower.width, tower.context_length, tower.output_dim, tower.dtype) == (64, 77, 64, torch.float32)
    # a text tower that projects with nn.Linear (as some open_clip towers do) gives the same features
    model = copy.deepcopy(tiny_clip.model)
    weight = model.text_projection.detach().clone()
    del model.text_projection
    model.text_projection = torch.nn.Linear(64, 32, bias=False)
    model.text_projection.weight.data.copy_(weight[:, :32].t())
    linear = FrozenTextTower(model)
    assert linear.output_dim == 32
    prompts = tokenize(["a dog."])
    with torch.no_grad():
        ours = HardPromptEncoder(linear)(prompts)
        reference = tiny_clip.model.encode_text(open_clip.tokenize(["a dog."]))[:, :32]
    assert relative_error(ours, reference) < 1e-5
    assert tokenize(["a b c"], n_ctx=74).ids.shape == (1, 77)  # one name token still fits: [SOT] 74 x, "a", [EOT]
    with pytest.raises(ValueError, match="n_ctx=75 leaves no room"):
        tokenize(["a"], n_ctx=75)
    with pytest.raises(ValueError, match="no prompts to encode"):
        PromptedTextEncoder.from_clip(tiny_clip.model, 4).encode_names([])


def test_towers_that_pool_a_class_token_are_refused(tiny_clip):
    import copy

    model = copy.deepcopy(tiny_clip.model)
    model.cls_emb = torch.nn.Parameter(torch.zeros(64))  # CoCa-style: pools a class token, not the EOT
    with pytest.raises(NotImplementedError, match="OpenAI-style text tower"):
        FrozenTextTower(model)
