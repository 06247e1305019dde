"""End to end through mmengine's Runner and the repo's tools, on the tiny config and a generated dataset."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from pomp_plugins.mmseg import trusted_local_checkpoints
from pomp_plugins.mmseg.toy_data import make_toy_dataset

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mmseg_configs" / "tiny_zsseg_cpu.py"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"pomp_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_options(root: Path) -> list[str]:
    return [f"{loader}.dataset.data_root={root}" for loader in ("train_dataloader", "val_dataloader", "test_dataloader")]


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the tiny config for 20 iterations on one fixed batch of 2 images; returns (work dir, data, losses)."""
    data = make_toy_dataset(tmp_path_factory.mktemp("toy"), num_train=2, num_val=4)
    work_dir = tmp_path_factory.mktemp("work")
    train = load_tool("train")
    args = train.parse_args([str(CONFIG), "--work-dir", str(work_dir), "--cfg-options", *data_options(data),
                             "train_cfg.max_iters=20", "train_cfg.val_interval=20", "param_scheduler.0.end=20",
                             "train_dataloader.sampler.shuffle=False", "default_hooks.logger.interval=1"])
    runner = Runner.from_cfg(train.build_config(args))
    with trusted_local_checkpoints():
        runner.train()
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    return work_dir, data, losses


@pytest.mark.slow
def test_training_through_the_runner_lowers_the_loss_on_a_fixed_batch(trained):
    _, _, losses = trained
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert losses[-3:].mean() < 0.7 * losses[0], losses


@pytest.mark.slow
def test_checkpoints_need_the_trusted_loader_under_torch_weights_only(trained):
    checkpoint = trained[0] / "iter_20.pth"
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(checkpoint)
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
    with trusted_local_checkpoints():
        assert "state_dict" in CheckpointLoader.load_checkpoint(str(checkpoint))
    assert CheckpointLoader._schemes[""] is load_from_local


@pytest.mark.slow
def test_tools_test_reports_seen_unseen_and_hiou(trained, tmp_path):
    work_dir, data, _ = trained
    out = tmp_path / "metrics.json"
    result = run_tool("test", CONFIG, work_dir / "iter_20.pth", "--work-dir", tmp_path, "--json", out,
                      "--cfg-options", *data_options(data))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert {"mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "aAcc"} <= set(metrics)
    assert all(0 <= metrics[k] <= 100 for k in ("mIoU", "mIoU_seen", "aAcc"))
    assert "| water |" in result.stdout + result.stderr  # the per-class table, unseen class included


@pytest.mark.slow
def test_demo_segments_with_a_vocabulary_chosen_at_test_time(trained, tmp_path):
    work_dir, data, _ = trained
    out = tmp_path / "demo.png"
    result = run_tool("segment_demo", CONFIG, work_dir / "iter_20.pth", "--image", data / "img_dir/val/000.png",
                      "--names", "sky,grass,lava,road,snow,water", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["classes"] == 6 and set(summary["found"]) <= {"sky", "grass", "lava", "road", "snow", "water"}
    assert abs(sum(summary["found"].values()) - 1) < 1e-3
    import cv2
    image = cv2.imread(str(out))
    assert image.shape[0] >= 64 and image.shape[1] > 64  # the segmentation plus its legend


@pytest.mark.slow
def test_demo_reports_a_bad_vocabulary_in_one_line(trained, tmp_path):
    work_dir, data, _ = trained
    result = run_tool("segment_demo", CONFIG, work_dir / "iter_20.pth", "--image", data / "img_dir/val/000.png",
                      "--names", "sky,sky", "--out", tmp_path / "x.png")
    assert result.returncode == 2 and "error: class name 'sky' appears twice" in result.stderr
