import copy

import open_clip
import pytest
import torch

from pomp_plugins.prompt import TINY_MODEL, WeightsUnavailableError, load_clip


def test_tiny_model_builds_offline_and_is_frozen(tiny_clip):
    assert tiny_clip.image_size == 32 and tiny_clip.pretrained is None
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())
    image = torch.rand(1, 3, 32, 32)
    assert tiny_clip.model.encode_image(image).shape == (1, 64)


def test_dtype_selection():
    model = load_clip(TINY_MODEL, None, dtype="bf16").model
    assert model.token_embedding.weight.dtype == torch.bfloat16
    assert load_clip(TINY_MODEL, None, dtype="auto").model.token_embedding.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_clip(TINY_MODEL, None, dtype="int8")


def test_missing_weights_file_fails_at_once(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_clip(TINY_MODEL, str(tmp_path / "nope.pt"))


def test_unservable_tag_says_what_to_do():
    # HF_HUB_OFFLINE=1 (conftest): the hub cannot be reached, so the request fails fast with advice.
    with pytest.raises(WeightsUnavailableError, match="pass the local file instead"):
        load_clip("RN50", "openai")


def test_unknown_names_and_tags():
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-Q-99'"):
        load_clip("ViT-Q-99", None)
    with pytest.raises(ValueError, match="neither a weights file nor a tag"):
        load_clip(TINY_MODEL, "laion-something")


def test_local_weights_file_loads(tmp_path, tiny_clip):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    loaded = load_clip(TINY_MODEL, str(path))
    assert loaded.pretrained == str(path)
    assert torch.equal(loaded.model.token_embedding.weight, tiny_clip.model.token_embedding.weight)


def test_openai_torchscript_file_loads_with_quickgelu(tmp_path, tiny_clip):
    """OpenAI releases TorchScript archives: they load from a file, and switch the model to QuickGELU."""
    model = copy.deepcopy(tiny_clip.model)
    del model._buffers["attn_mask"]  # OpenAI's archives keep the mask out of the state dict
    archive = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, 32, 32)})
    path = tmp_path / "ViT-tiny.pt"
    archive.save(str(path))

    loaded = load_clip(TINY_MODEL, str(path))
    assert isinstance(loaded.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert torch.equal(loaded.model.token_embedding.weight, tiny_clip.model.token_embedding.weight)


def test_random_weights_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a = load_clip(TINY_MODEL, None)
    assert torch.equal(torch.rand(1), expected_next)
    b = load_clip(TINY_MODEL, None)
    c = load_clip(TINY_MODEL, None, seed=1)
    assert torch.equal(a.model.token_embedding.weight, b.model.token_embedding.weight)
    assert not torch.equal(a.model.token_embedding.weight, c.model.token_embedding.weight)
