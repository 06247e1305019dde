import pytest
import torch

from pomp_plugins.prompt import (
    Prompt,
    PromptFileError,
    PromptWidthError,
    load_prompt,
    prompted_encoder,
    save_prompt,
)


def test_round_trip_is_small_and_self_describing(tmp_path):
    ctx = torch.randn(4, 512)
    path = tmp_path / "prompt.pt"
    save_prompt(Prompt(ctx, "ViT-B-16", "openai", meta={"epoch": 5}), path)
    assert path.stat().st_size < 16_000
    loaded = load_prompt(path)
    assert torch.equal(loaded.ctx, ctx)
    assert (loaded.clip_model, loaded.clip_pretrained, loaded.n_ctx) == ("ViT-B-16", "openai", 4)
    assert loaded.class_token_position == "end" and loaded.meta == {"epoch": 5}
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "pomp-prompt" and raw["version"] == 1 and raw["n_ctx"] == 4


def test_reference_checkpoint_format_loads(tmp_path):
    ctx = torch.randn(16, 512).half()
    path = tmp_path / "model.pth.tar-5"
    torch.save({"state_dict": {"ctx": ctx}, "epoch": 5, "optimizer": {"state": {}}}, path)
    loaded = load_prompt(path)
    assert loaded.ctx.dtype == torch.float32 and loaded.n_ctx == 16
    assert torch.equal(loaded.ctx, ctx.float())
    assert loaded.clip_model is None and loaded.meta["epoch"] == 5


def test_not_a_prompt_says_what_was_found(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(PromptFileError, match=r"expected a POMP prompt file.*found a dict with keys \['model'\]"):
        load_prompt(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PromptFileError, match="cannot be read"):
        load_prompt(garbage)
    flat = tmp_path / "flat.pt"
    torch.save({"state_dict": {"ctx": torch.zeros(512)}}, flat)
    with pytest.raises(PromptFileError, match=r"found shape \(512,\)"):
        load_prompt(flat)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt(tmp_path / "missing.pt")


def test_prompt_for_another_clip_width_is_a_clear_error(tmp_path, tiny_clip):
    path = tmp_path / "vit_b16_prompt.pt"
    torch.save({"state_dict": {"ctx": torch.zeros(4, 512).half()}}, path)
    with pytest.raises(PromptWidthError, match=r"vit_b16_prompt.pt does not fit CLIP pomp-tiny.*width 512.*width 64"):
        prompted_encoder(tiny_clip, prompt=path)


def test_a_crash_while_saving_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "prompt.pt"
    save_prompt(Prompt(torch.ones(2, 8)), path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_prompt(Prompt(torch.zeros(2, 8)), path)
    assert torch.equal(load_prompt(path).ctx, torch.ones(2, 8))
    assert [p.name for p in tmp_path.iterdir()] == ["prompt.pt"]
