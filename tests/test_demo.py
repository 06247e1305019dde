"""The README's demo, end to end: generated data, pre-training with the tiny CLIP, zero-shot evaluation, then the
same prompt file as the classifier of the toy detector (detectron2) and the toy segmenter (mmseg), one picture each.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pomp_plugins.prompt import load_prompt

ROOT = Path(__file__).resolve().parent.parent
DETECTION_CLASSES = ["red square", "green square", "blue square", "yellow square", "white square", "black square"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--output", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout, json.loads((out / "summary.json").read_text())


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def text_embeddings(**text_source) -> torch.Tensor:
    """``[6, D]`` embeddings of the detection classes, from the mmseg adapter's classifier (another path than the
    detectron2 one under test)."""
    from pomp_plugins.mmseg.classifier import VocabularyClassifier

    classifier = VocabularyClassifier(
        classes=DETECTION_CLASSES, clip_model="pomp-tiny", clip_pretrained="none", **text_source
    )
    return classifier.class_embeddings


@pytest.mark.slow
def test_demo_learns_a_prompt_that_beats_the_hard_prompt(demo):
    out, stdout, summary = demo
    accuracy = summary["accuracy"]
    learned, hard = accuracy["POMP prompt (learned)"], accuracy["hard prompt 'a photo of a {name}.'"]
    assert learned["images"] == hard["images"] == 80
    # a random-weight CLIP reads no words, so the hard prompt is near chance (12.5%); the learned prompt is not
    assert learned["top1"] > hard["top1"] + 20
    prompt = load_prompt(out / "pretrain" / "prompt.pt")
    assert prompt.clip_model == "pomp-tiny" and prompt.n_ctx == 16
    assert summary["prompt"] == str(out / "pretrain" / "prompt.pt")
    assert "zero-shot accuracy on 80 test images" in stdout


@pytest.mark.slow
def test_demo_detector_draws_its_best_detections_with_the_pretrained_prompt(demo):
    out, stdout, summary = demo
    prompt = out / "pretrain" / "prompt.pt"
    detection = summary["detection"]
    # the detector was trained with the prompt file pre-training wrote, and its classifier is that prompt's
    config = yaml.safe_load((out / "detection" / "model" / "config.yaml").read_text())
    assert config["MODEL"]["POMP"]["PROMPT"] == str(prompt)
    assert config["MODEL"]["POMP"]["VOCABULARY"] == ",".join(DETECTION_CLASSES)
    weights = torch.load(out / "detection" / "model" / "model_final.pth", map_location="cpu", weights_only=True)
    zs_weight = weights["model"]["roi_heads.box_predictor.0.cls_score.zs_weight"]  # [D, C + 1], background last
    torch.testing.assert_close(zs_weight[:, :-1].T, text_embeddings(prompt=str(prompt)), atol=1e-5, rtol=0)
    assert (zs_weight[:, :-1].T - text_embeddings(hard_prompt="a photo of a")).abs().max() > 0.1

    # the picture: the test image 4x larger, with the detections at the printed threshold drawn on it
    picture = png(out / "detections.png")
    scene = png(out / "detection" / "scene.png")
    assert picture.shape == scene.shape and scene.shape[:2] in ((384, 512), (512, 384))
    test_images = sorted((out / "detection" / "toy" / "images").glob("val_*.png"))
    assert any(np.array_equal(scene[::4, ::4], png(image)) for image in test_images)
    changed = (np.abs(picture.astype(int) - scene).sum(axis=2) > 30).mean()
    assert 0.01 < changed < 0.9, changed  # boxes and labels drawn, the image still there
    assert 1 <= len(detection["detections"]) <= 6
    assert all(d["score"] >= detection["threshold"] for d in detection["detections"])
    assert {d["class"] for d in detection["detections"]} <= set(DETECTION_CLASSES)
    assert f"--confidence-threshold {detection['threshold']}" in stdout
    assert f"score threshold {detection['threshold']:.3f}" in stdout
    assert "detections.png" in stdout


@pytest.mark.slow
def test_demo_segmenter_segments_a_scene_with_the_pretrained_prompt(demo):
    out, stdout, summary = demo
    prompt = out / "pretrain" / "prompt.pt"
    segmentation = summary["segmentation"]
    dumped = (out / "segmentation" / "model" / "tiny_fcn_text-classifier_cpu.py").read_text()
    assert f"prompt='{prompt}'" in dumped and "hard_prompt=None" in dumped  # the config it trained with
    segment_command = next(line for line in stdout.splitlines() if line.startswith("$ python tools/segment_demo.py"))
    assert f"model.decode_head.text_classifier.prompt={prompt}" in shlex.split(segment_command)

    # the picture: the 256x256 scene with the colour overlay, and a legend on its right
    picture = png(out / "segmentation.png")
    scene = png(out / "segmentation" / "scene.png")
    assert scene.shape == (256, 256, 3)
    assert picture.shape[0] == 256 and picture.shape[1] > 256 + 100
    overlay = picture[:, :256].astype(int)
    assert np.abs(overlay - scene).sum(axis=2).mean() > 20  # coloured over
    assert len(np.unique(overlay.reshape(-1, 3) // 32, axis=0)) >= 3  # several classes, not one flat colour
    assert set(segmentation["found"]) <= set(segmentation["vocabulary"]) and len(segmentation["found"]) >= 2
    assert sum(segmentation["found"].values()) == pytest.approx(1, abs=1e-3)
    assert "segmentation.png" in stdout


def test_demo_help_names_the_options_and_writes_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert all(option in result.stdout for option in ("--output DIR", "--device", "--seed"))
    assert list(tmp_path.iterdir()) == []
