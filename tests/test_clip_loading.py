import copy
import logging

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


def test_none_means_random_weights_in_the_python_api_too():
    for spelling in ("none", "None", "NONE", ""):
        loaded = load_clip(TINY_MODEL, spelling)
        assert loaded.pretrained is None and loaded.activation == "GELU (random weights)"


def reference_model(quick_gelu: bool, state_dict: dict) -> torch.nn.Module:
    """open_clip's own model with the given activation and weights: the reference for what must be loaded."""
    model = open_clip.create_model(TINY_MODEL, pretrained=None, force_quick_gelu=quick_gelu)
    model.load_state_dict(state_dict)
    return model.eval()


def text_features(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(open_clip.tokenize(["a photo of a cat.", "a dog"]))


def test_openai_state_dict_file_gets_quickgelu(tmp_path, tiny_clip, caplog):
    """A plain state dict saved from OpenAI's archive keeps OpenAI's extra entries: that layout means QuickGELU."""
    state = dict(tiny_clip.model.state_dict())
    path = tmp_path / "tiny-openai-state.pt"
    torch.save(
        {
            **state,
            "input_resolution": torch.tensor(32),
            "context_length": torch.tensor(77),
            "vocab_size": torch.tensor(49408),
        },
        path,
    )
    with caplog.at_level(logging.INFO, logger="pomp_plugins.prompt.clip"):
        loaded = load_clip(TINY_MODEL, str(path))
    assert loaded.quick_gelu and "OpenAI's state-dict layout" in loaded.activation
    assert "QuickGELU (OpenAI's state-dict layout" in caplog.text
    expected = text_features(reference_model(True, state))
    assert torch.allclose(text_features(loaded.model), expected, atol=1e-6)
    assert not torch.allclose(text_features(reference_model(False, state)), expected, atol=1e-4)


def test_plain_state_dict_activation(tmp_path, tiny_clip, caplog):
    """No OpenAI marks: GELU with a warning, unless the caller's prompt (or the caller) says otherwise."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="pomp_plugins.prompt.clip"):
        plain = load_clip(TINY_MODEL, str(path))
    assert not plain.quick_gelu and "cannot tell" in caplog.text
    hinted = load_clip(TINY_MODEL, str(path), prompt_quick_gelu=True)
    assert hinted.quick_gelu and "the prompt was trained with" in hinted.activation
    forced = load_clip(TINY_MODEL, str(path), quick_gelu=True, prompt_quick_gelu=False)
    assert forced.quick_gelu and forced.activation == "QuickGELU (asked for)"
    assert torch.allclose(
        text_features(hinted.model), text_features(reference_model(True, tiny_clip.model.state_dict())), atol=1e-6
    )


def test_auto_is_for_prompt_files():
    with pytest.raises(ValueError, match="load_for_prompt"):
        load_clip(TINY_MODEL, "auto")
