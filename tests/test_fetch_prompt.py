"""tools/fetch_prompt.py: any prompt (ours, a released Dassl checkpoint, hf-hub:...) written to prompts/ in our format,
with the CLIP it belongs to."""

import importlib.util
import json
from pathlib import Path

import torch

from pomp_plugins.prompt import Prompt, load_prompt, save_prompt

ROOT = Path(__file__).resolve().parent.parent
RELEASED_NAME = "vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar"


def tool():
    spec = importlib.util.spec_from_file_location("fetch_prompt", ROOT / "tools" / "fetch_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dassl_checkpoint(path: Path, ctx: torch.Tensor) -> Path:
    """A checkpoint in the released (Dassl) layout: ctx in fp16 among training state."""
    torch.save({"state_dict": {"ctx": ctx.half()}, "epoch": 5, "optimizer": {"state": {}}}, path)
    return path


def test_a_released_checkpoint_becomes_a_prompt_file_that_names_its_clip(tmp_path, capsys):
    ctx = torch.randn(4, 512) * 0.02
    source = dassl_checkpoint(tmp_path / RELEASED_NAME, ctx)
    fetch = tool()
    output = tmp_path / "prompts" / "pomp_vit_b32_ctx4.pt"
    assert fetch.run_tool(fetch.main, [str(source), "--output", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "output": str(output),
        "source": str(source),
        "n_ctx": 4,
        "width": 512,
        "clip_model": "ViT-B-32",
        "clip_pretrained": "openai",
    }
    prompt = load_prompt(output)  # our format now: the CLIP is recorded in the file, whatever its name
    assert (prompt.clip_model, prompt.clip_pretrained, prompt.clip_quick_gelu) == ("ViT-B-32", "openai", True)
    torch.testing.assert_close(prompt.ctx, ctx.half().float())
    assert prompt.meta["fetched_from"] == str(source) and output.stat().st_size < 20_000


def test_a_renamed_checkpoint_needs_its_clip_named_and_a_conflict_is_an_error(tmp_path, capsys):
    source = dassl_checkpoint(tmp_path / "model.pth.tar-5", torch.randn(4, 768))
    fetch = tool()
    output = tmp_path / "p.pt"
    assert fetch.run_tool(fetch.main, [str(source), "--output", str(output)]) == 0
    assert "does not say which CLIP" in capsys.readouterr().err and load_prompt(output).clip_model is None
    assert fetch.run_tool(fetch.main, [str(source), "--output", str(output), "--clip-model", "ViT-L-14"]) == 0
    assert load_prompt(output).clip_model == "ViT-L-14"

    ours = tmp_path / "ours.pt"
    save_prompt(Prompt(torch.randn(4, 64), "pomp-tiny", None), ours)
    assert fetch.run_tool(fetch.main, [str(ours), "--output", str(output), "--clip-model", "ViT-B-16"]) == 2
    assert "records CLIP pomp-tiny" in capsys.readouterr().err


def test_offline_hub_names_and_missing_files_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fetch = tool()
    output = tmp_path / "p.pt"
    status = fetch.run_tool(
        fetch.main, [f"hf-hub:ShuhuaiRen/POMP-ViT-Base-32/{RELEASED_NAME}", "--output", str(output)]
    )
    assert status == 2 and capsys.readouterr().err.startswith("error: ")
    assert fetch.run_tool(fetch.main, [str(tmp_path / "missing.pt"), "--output", str(output)]) == 2
    assert not output.exists()
