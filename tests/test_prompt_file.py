import os
import pickle
import re
from pathlib import Path

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


def test_files_record_no_template_and_older_files_load_only_with_the_encoded_one(tmp_path):
    """The encoder builds "{ctx} {name}." only: files do not record a template any more, files that did load when
    it is that one, and one with any other template is refused (it would be encoded as it was not trained)."""
    save_prompt(Prompt(torch.randn(4, 8), "pomp-tiny"), tmp_path / "new.pt")
    assert "template" not in torch.load(tmp_path / "new.pt", weights_only=True)
    older = {"format": "pomp-prompt", "version": 1, "ctx": torch.randn(4, 8), "clip_model": "pomp-tiny"}
    torch.save({**older, "template": "{ctx} {name}."}, tmp_path / "old.pt")
    assert torch.equal(load_prompt(tmp_path / "old.pt").ctx, older["ctx"])
    torch.save({**older, "template": "{ctx} a photo of a {name}."}, tmp_path / "other.pt")
    with pytest.raises(PromptFileError, match=r"other.pt: template '\{ctx\} a photo of a \{name\}.'; this version"):
        load_prompt(tmp_path / "other.pt")


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


# --- released (reference) checkpoints: Dassl's layout, loaded without running pickled code -------------------


class ConstantWarmupScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Stands in for Dassl's scheduler of the same name: a constant warm-up LR, then its ``successor``. Its
    ``state_dict()`` (every attribute but the optimizer) therefore holds the successor *object*."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


def write_dassl_checkpoint(path, ctx):
    """A checkpoint written the way Dassl's ``save_checkpoint`` writes the reference's prompt learner."""
    param = torch.nn.Parameter(ctx.clone())
    optimizer = torch.optim.SGD([param], lr=0.002, momentum=0.9, weight_decay=5e-4)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    scheduler = ConstantWarmupScheduler(optimizer, successor, warmup_epoch=1, cons_lr=1e-5)
    param.grad = torch.ones_like(param)
    optimizer.step()
    scheduler.step()
    state_dict = {
        "ctx": ctx,
        "token_prefix": torch.zeros(3, 1, ctx.shape[1]).half(),
        "token_suffix": torch.zeros(3, 72, ctx.shape[1]).half(),
    }
    torch.save(
        {
            "state_dict": state_dict,
            "epoch": 5,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "val_result": 24.9,
        },
        path,
    )


def test_dassl_checkpoint_with_scheduler_object_loads(tmp_path):
    ctx = torch.randn(4, 512).half()
    path = tmp_path / "model.pth.tar-5"
    write_dassl_checkpoint(path, ctx)
    with pytest.raises(pickle.UnpicklingError):  # what torch's safe mode says about it
        torch.load(path, weights_only=True)
    loaded = load_prompt(path)
    assert torch.equal(loaded.ctx, ctx.float()) and loaded.meta["epoch"] == 5
    assert loaded.clip_model is None and loaded.clip_quick_gelu is True  # the reference only used OpenAI CLIP


def test_released_checkpoint_names_say_their_clip(tmp_path):
    for filename, model in [
        ("vit_b16_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar", "ViT-B-16"),
        ("vit_b32_ep20_randaug2_unc1000_16shots_nctx16_cscFalse_ctpend_seed42.pth.tar", "ViT-B-32"),
        ("vit_l14_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar", "ViT-L-14"),
    ]:
        write_dassl_checkpoint(tmp_path / filename, torch.randn(4, 768 if "l14" in filename else 512).half())
        loaded = load_prompt(tmp_path / filename)
        assert (loaded.clip_model, loaded.clip_pretrained) == (model, "openai")


class RunsCode:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class CallsGetattr:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # getattr(Path(marker), "touch") rebuilt, then called by pickle's REDUCE
        return getattr, (Path(self.marker), "touch")


def test_pickled_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth.tar"
    torch.save(
        {
            "state_dict": {"ctx": torch.ones(4, 8)},
            "scheduler": RunsCode(f"echo ran > {marker}"),
            "hook": CallsGetattr(marker),
        },
        path,
    )
    loaded = load_prompt(path)
    assert torch.equal(loaded.ctx, torch.ones(4, 8))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proof that the file does run code when unpickled plainly
    assert marker.exists()


def test_placeholders_keep_what_the_file_held(tmp_path):
    from pomp_plugins.prompt.safe_load import Opaque, safe_torch_load

    path = tmp_path / "evil.pt"
    torch.save({"x": RunsCode("true"), "t": torch.arange(3)}, path)
    obj = safe_torch_load(path)
    assert isinstance(obj["x"], Opaque) and obj["x"].global_name == "posix.system" and obj["x"].args == ("true",)
    assert torch.equal(obj["t"], torch.arange(3))


def test_corrupt_or_truncated_files_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    save_prompt(Prompt(torch.randn(4, 64), "pomp-tiny", None), good)
    data = good.read_bytes()
    variants = {
        "empty.pt": b"",
        "half.pt": data[: len(data) // 2],
        "tail.pt": data[len(data) // 2 :],
        "noise.pt": bytes(range(256)) * 8,
        "pickle_stack.pt": b"\x80\x02t.",
    }
    flipped = bytearray(data)
    for i in range(200, len(flipped) - 200, 97):
        flipped[i] ^= 0xFF
    variants["flipped.pt"] = bytes(flipped)
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(PromptFileError, match=rf"^{re.escape(str(tmp_path / name))}: .*cannot be read"):
            load_prompt(tmp_path / name)
    directory = tmp_path / "folder.pt"
    directory.mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt(directory)


def test_non_prompt_contents_are_named(tmp_path):
    cases = {
        "list.pt": [1, 2],
        "int_ctx.pt": {"state_dict": {"ctx": torch.zeros(4, 8, dtype=torch.long)}},
        "nan.pt": {"state_dict": {"ctx": torch.full((4, 8), float("nan"))}},
        "newer.pt": {"format": "pomp-prompt", "version": 99, "ctx": torch.zeros(4, 8)},
    }
    messages = {
        "list.pt": "found a list",
        "int_ctx.pt": "floating-point ctx",
        "nan.pt": "NaN",
        "newer.pt": "version 99",
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(PromptFileError, match=rf"{name}: .*{messages[name]}"):
            load_prompt(tmp_path / name)


# --- hf-hub:ORG/REPO[/FILE] --------------------------------------------------------------------------------------

B32_FILES = (
    "vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar",
    "vit_b32_ep20_randaug2_unc1000_16shots_nctx16_cscFalse_ctpend_seed42.pth.tar",
)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline hub cache laid out as huggingface_hub writes it, holding POMP-ViT-Base-32's two prompts and a
    repository with a single one."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    contents = {}
    for repo, files in [("ShuhuaiRen/POMP-ViT-Base-32", B32_FILES), ("someone/one-prompt", ("prompt.pt",))]:
        revision = f"{len(contents):040x}"
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(revision)
        snapshot = folder / "snapshots" / revision
        snapshot.mkdir(parents=True)
        for filename in files:
            ctx = torch.randn(16 if "nctx16" in filename else 4, 512).half()
            if filename == "prompt.pt":
                save_prompt(Prompt(ctx.float(), "ViT-B-16", "openai"), snapshot / filename)
            else:
                write_dassl_checkpoint(snapshot / filename, ctx)
            contents[f"{repo}/{filename}"] = ctx.float()
    return contents


def test_hf_hub_prompt_loads_from_the_cache_offline(hub_cache):
    name = f"ShuhuaiRen/POMP-ViT-Base-32/{B32_FILES[1]}"
    loaded = load_prompt(f"hf-hub:{name}")
    assert torch.equal(loaded.ctx, hub_cache[name]) and loaded.n_ctx == 16
    assert (loaded.clip_model, loaded.clip_pretrained) == ("ViT-B-32", "openai")
    single = load_prompt("hf-hub:someone/one-prompt")
    assert torch.equal(single.ctx, hub_cache["someone/one-prompt/prompt.pt"])


def test_hf_hub_errors_say_what_to_do(hub_cache):
    with pytest.raises(PromptFileError, match=r"name one prompt file.*nctx16.*nctx4"):
        load_prompt("hf-hub:ShuhuaiRen/POMP-ViT-Base-32")
    with pytest.raises(
        FileNotFoundError,
        match=r"(?s)cannot get prompt 'hf-hub:ShuhuaiRen/POMP-ViT-Large-14/x.pt'.*"
        r"local path",
    ):
        load_prompt("hf-hub:ShuhuaiRen/POMP-ViT-Large-14/x.pt")
    with pytest.raises(PromptFileError, match="expected hf-hub:ORG/REPO"):
        load_prompt("hf-hub:just-a-name")


def test_hf_hub_prompt_works_where_a_prompt_file_does(hub_cache, tiny_clip):
    with pytest.raises(PromptWidthError, match=r"hf-hub:someone/one-prompt does not fit CLIP pomp-tiny.*512.*64"):
        prompted_encoder(tiny_clip, prompt="hf-hub:someone/one-prompt")
