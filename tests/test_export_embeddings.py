import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pomp_plugins.prompt import Prompt, save_prompt

ROOT = Path(__file__).resolve().parent.parent


def export(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "export_embeddings.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_export_a_prompt_over_a_named_vocabulary_in_detics_format(tmp_path):
    prompt = tmp_path / "prompt.pt"
    save_prompt(Prompt(torch.randn(4, 64) * 0.02, "pomp-tiny", None), prompt)
    out = tmp_path / "voc.npy"
    info = export("--prompt", str(prompt), "--clip-pretrained", "none", "--vocabulary", "voc", "--output", str(out))
    array = np.load(out)
    assert info["shape"] == [20, 64] and array.shape == (20, 64) and array.dtype == np.float16
    assert not np.allclose(np.linalg.norm(array.astype(np.float32), axis=1), 1.0)  # unnormalised, as Detic's


def test_export_hard_prompt_custom_names_normalised(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\n# a comment\ndog\n\ntraffic light\n")
    out = tmp_path / "x.npy"
    export(
        "--clip-model",
        "pomp-tiny",
        "--clip-pretrained",
        "none",
        "--hard-prompt",
        "a photo of a",
        "--vocabulary",
        str(names),
        "--normalize",
        "--float32",
        "--output",
        str(out),
    )
    array = np.load(out)
    assert array.shape == (3, 64) and array.dtype == np.float32
    assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vocabulary", "cat,,dog"], "empty class name"),
        (["--vocabulary", "cat,dog,cat"], "appears twice"),
        (["--vocabulary", "imagenet42k"], "unknown vocabulary 'imagenet42k'"),
        (["--vocabulary", "missing.txt"], "names file 'missing.txt' does not exist"),
    ],
)
def test_bad_class_lists_are_clear_errors(tmp_path, args, message):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "export_embeddings.py"),
            "--clip-model",
            "pomp-tiny",
            "--clip-pretrained",
            "none",
            "--hard-prompt",
            "a",
            *args,
            "--output",
            str(tmp_path / "x.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and message in result.stderr


def test_export_takes_the_clip_from_the_prompt_and_warns_when_told_otherwise(tmp_path):
    from pomp_plugins.prompt import ClipMismatchWarning, load_clip

    weights = tmp_path / "tiny_seed3.pt"
    torch.save(load_clip("pomp-tiny", None, seed=3).model.state_dict(), weights)
    prompt = tmp_path / "prompt.pt"
    save_prompt(Prompt(torch.randn(4, 64) * 0.02, "pomp-tiny", str(weights), clip_quick_gelu=False), prompt)
    out = tmp_path / "x.npy"
    info = export("--prompt", str(prompt), "--vocabulary", "cat,dog", "--output", str(out), "--float32", "--no-cache")
    assert (info["clip_model"], info["clip_pretrained"]) == ("pomp-tiny", str(weights))
    assert info["clip_activation"].startswith("GELU (the activation the prompt was trained with")
    from pomp_plugins.prompt import class_embeddings

    expected = class_embeddings(["cat", "dog"], prompt=prompt, cache=False, normalize=False)
    assert np.allclose(np.load(out), expected.numpy(), atol=1e-5)

    spec = importlib.util.spec_from_file_location("export_embeddings", ROOT / "tools" / "export_embeddings.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.warns(ClipMismatchWarning, match="now random"):
        assert (
            tool.main(
                ["--prompt", str(prompt), "--clip-pretrained", "none", "--vocabulary", "cat,dog", "--output", str(out)]
            )
            == 0
        )
