"""Zero-shot classification: metrics on known logits, the template ensemble against open_clip, and the tool on
datasets whose accuracy is known in advance."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pomp_plugins.images import AccuracyCounts
from pomp_plugins.pretrain.synthetic import class_list, make_image_folder
from pomp_plugins.prompt import class_embeddings

ROOT = Path(__file__).resolve().parent.parent


def evaluate_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "eval_zeroshot.py"),
            "--clip-model",
            "pomp-tiny",
            "--clip-pretrained",
            "none",
            "--workers",
            "0",
            "--no-progress",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_accuracy_counts_on_known_logits():
    counts = AccuracyCounts(6)
    logits = torch.tensor(
        [
            [9, 1, 0, 0, 0, 0],  # label 0: top-1
            [1, 9, 8, 7, 6, 5],  # label 0: 6th of 6, missed by top-5
            [1, 9, 8, 7, 6, 5],  # label 4: 4th, a top-5 hit
            [0, 0, 9, 0, 0, 0],  # label 2: top-1
        ],
        dtype=torch.float,
    )
    counts.update(logits, torch.tensor([0, 0, 4, 2]))
    counts.update(logits[:1], torch.tensor([1]))  # label 1: 2nd, a top-5 hit
    summary = counts.summary()
    assert summary["top1"] == pytest.approx(100 * 2 / 5) and summary["top5"] == pytest.approx(100 * 4 / 5)
    # per class: 0 -> 1/2, 1 -> 0/1, 2 -> 1/1, 4 -> 0/1; classes 3 and 5 have no images and are left out
    assert summary["mean_per_class"] == pytest.approx(100 * (0.5 + 0 + 1 + 0) / 4)
    assert summary["classes_with_images"] == 4 and summary["images"] == 5


def test_openai_ensemble_is_the_mean_of_open_clips_template_embeddings(tiny_clip):
    names = ["cat", "traffic light"]
    ours = class_embeddings(names, clip=tiny_clip, cache=False, templates="openai")
    with torch.no_grad():
        expected = torch.stack(
            [
                F.normalize(
                    tiny_clip.model.encode_text(
                        open_clip.tokenize([t(name) for t in open_clip.OPENAI_IMAGENET_TEMPLATES]), normalize=True
                    ).mean(dim=0),
                    dim=0,
                )
                for name in names
            ]
        )
    assert torch.allclose(ours, expected, atol=1e-5)


def test_identical_images_in_every_class_give_exactly_one_class_right(tmp_path):
    # Every image is the same picture, so every image gets the same prediction: exactly one class of 8 is right
    # (top-1 = mean per class = 12.5%), and exactly 5 of 8 are in the top 5 (62.5%), whatever the model.
    make_image_folder(tmp_path / "src", ["red circle"], 1)
    picture = tmp_path / "src" / "red_circle" / "0000.png"
    for name in class_list(8):
        for i in range(3):
            (tmp_path / "data" / name.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
            shutil.copy(picture, tmp_path / "data" / name.replace(" ", "_") / f"{i}.png")
    (tmp_path / "data" / "red_circle" / "broken.png").write_bytes(b"\x89PNG truncated")
    result = evaluate_tool("--data", str(tmp_path / "data"), "--json", str(tmp_path / "r.json"), "--batch-size", "5")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["top1"], report["top5"], report["mean_per_class"]) == (12.5, 62.5, 12.5)
    assert report["images"] == 24 and report["classes"] == 8 and report["skipped_images"] == 1
    assert "top-1 12.50%" in result.stdout


def test_the_tool_agrees_with_open_clip_on_a_small_dataset(tmp_path, tiny_clip):
    names = class_list(4)
    make_image_folder(tmp_path, names, 5, size=40)
    (tmp_path / "names.tsv").write_text("".join(f"{n.replace(' ', '_')}\t{n}\n" for n in names))
    result = evaluate_tool(
        "--data",
        str(tmp_path),
        "--vocabulary",
        str(tmp_path / "names.tsv"),
        "--hard-prompt",
        "a photo of a",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())

    model, preprocess = tiny_clip.model, tiny_clip.preprocess
    with torch.no_grad():
        text = model.encode_text(open_clip.tokenize([f"a photo of a {n}." for n in names]), normalize=True)
        hits, per_class = 0, []
        for label, name in enumerate(names):
            files = sorted((tmp_path / name.replace(" ", "_")).iterdir())
            images = torch.stack([preprocess(Image.open(f)) for f in files])
            predicted = (model.encode_image(images, normalize=True) @ text.t()).argmax(dim=1)
            correct = int((predicted == label).sum())
            hits += correct
            per_class.append(100 * correct / len(files))
    assert report["top1"] == pytest.approx(100 * hits / 20)
    assert report["mean_per_class"] == pytest.approx(sum(per_class) / 4)
    assert report["top5"] == 100.0  # 4 classes
    assert list(report["per_class_top1"]) == sorted(n.replace(" ", "_") for n in names)


def test_unnamed_wordnet_folders_are_an_error_naming_them(tmp_path):
    make_image_folder(tmp_path / "data", ["red circle"], 1)
    (tmp_path / "data" / "red_circle").rename(tmp_path / "data" / "n99999999")
    result = evaluate_tool("--data", str(tmp_path / "data"), "--vocabulary", "imagenet21k-p")
    assert result.returncode == 2 and "n99999999" in result.stderr and "Traceback" not in result.stderr


def test_the_tool_uses_the_clip_the_prompt_file_records(tmp_path, capsys):
    """No --clip-* options: model, weights and activation come from the prompt file; asking for others warns."""
    from pomp_plugins.classification.cli import main
    from pomp_plugins.prompt import ClipMismatchWarning, Prompt, load_clip, save_prompt

    weights = tmp_path / "tiny_seed5.pt"
    torch.save(load_clip("pomp-tiny", None, seed=5).model.state_dict(), weights)
    prompt = tmp_path / "prompt.pt"
    save_prompt(Prompt(torch.randn(4, 64) * 0.02, "pomp-tiny", str(weights), clip_quick_gelu=True), prompt)
    names = class_list(3)
    make_image_folder(tmp_path / "data", names, 2, size=32)
    common = [
        "--data",
        str(tmp_path / "data"),
        "--vocabulary",
        ",".join(names),
        "--prompt",
        str(prompt),
        "--workers",
        "0",
        "--no-progress",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main(common) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["clip_model"], report["clip_pretrained"]) == ("pomp-tiny", str(weights))
    assert report["clip_activation"].startswith("QuickGELU")
    assert f"CLIP pomp-tiny, weights {weights}, QuickGELU" in capsys.readouterr().err

    with pytest.warns(ClipMismatchWarning, match="now random"):
        assert main(common + ["--clip-pretrained", "none"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["clip_pretrained"] is None
