"""mmseg's own entry points (a copy of their logic, in a subprocess) and the repo's tools, on the tiny drop-in config
and a generated dataset: train a few iterations, save a checkpoint, test it under torch's ``weights_only`` loading."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from pomp_plugins.mmseg.checkpoint import CHECKPOINT_GLOBALS
from pomp_plugins.mmseg.toy_data import make_toy_dataset

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mmseg_configs" / "tiny_fcn_text-classifier_cpu.py"
ENTRY_POINTS = ROOT / "tests" / "mmseg_entry_points.py"
ITERS = 8


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"pomp_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_options(root: Path) -> list[str]:
    return [
        f"{loader}.dataset.data_root={root}" for loader in ("train_dataloader", "val_dataloader", "test_dataloader")
    ]


def run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mmseg's train entry point on our config: ITERS iterations on one fixed batch of 2 images, then a checkpoint."""
    data = make_toy_dataset(tmp_path_factory.mktemp("toy"), num_train=2, num_val=2)
    work_dir = tmp_path_factory.mktemp("work")
    result = run(
        ENTRY_POINTS,
        "train",
        CONFIG,
        "--work-dir",
        work_dir,
        "--cfg-options",
        *data_options(data),
        f"train_cfg.max_iters={ITERS}",
        f"train_cfg.val_interval={ITERS}",
        f"param_scheduler.0.end={ITERS}",
        f"default_hooks.checkpoint.interval={ITERS}",
        "train_dataloader.sampler.shuffle=False",
        "default_hooks.logger.interval=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, data


@pytest.mark.slow
def test_mmseg_train_entry_point_trains_the_drop_in_with_a_finite_falling_loss(trained):
    work_dir, _ = trained
    (scalars,) = work_dir.glob("*/vis_data/scalars.json")
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = np.array([r["loss"] for r in records if "loss" in r])
    assert len(losses) == ITERS and np.isfinite(losses).all()
    assert losses[-2:].mean() < losses[:2].mean(), losses
    assert any("hIoU" in r for r in records)  # the validation at the end ran our metric


@pytest.mark.slow
def test_mmseg_test_entry_point_loads_the_checkpoint_with_torch_defaults(trained, tmp_path):
    work_dir, data = trained
    result = run(
        ENTRY_POINTS,
        "test",
        CONFIG,
        work_dir / f"iter_{ITERS}.pth",
        "--work-dir",
        tmp_path,
        "--cfg-options",
        *data_options(data),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "Load checkpoint from" in log and "hIoU" in log and "| water |" in log


def test_checkpoints_unpickle_with_weights_only_and_nothing_else_does(trained, tmp_path):
    checkpoint = trained[0] / f"iter_{ITERS}.pth"
    state = torch.load(checkpoint)  # torch's default: weights_only=True
    assert isinstance(state["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)
    assert np.isfinite(state["message_hub"]["log_scalars"]["train/loss"].data[0]).all()
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint))
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in CHECKPOINT_GLOBALS}
    assert needed <= allowed, needed - allowed

    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}, "meta": {"hook": pickle.PickleError()}}, other)
    with pytest.raises(pickle.UnpicklingError, match="PickleError"):
        torch.load(other)
    torch.save({"meta": AttributeOf(HistoryBuffer, "__init__")}, other)
    with pytest.raises(pickle.UnpicklingError, match="'__init__'.* is not allowed"):
        torch.load(other)


class AttributeOf:
    """Pickles as ``getattr(owner, name)``."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def test_our_test_tool_writes_the_metrics(trained, tmp_path):
    work_dir, data = trained
    out = tmp_path / "metrics.json"
    tool = load_tool("test")
    assert (
        tool.main(
            [
                str(CONFIG),
                str(work_dir / f"iter_{ITERS}.pth"),
                "--work-dir",
                str(tmp_path),
                "--json",
                str(out),
                "--cfg-options",
                *data_options(data),
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert {"mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "aAcc"} <= set(metrics)
    assert all(0 <= metrics[k] <= 100 for k in ("mIoU", "mIoU_seen", "aAcc"))


def test_demo_segments_with_a_vocabulary_chosen_at_test_time(trained, tmp_path, capsys):
    work_dir, data = trained
    out = tmp_path / "demo.png"
    demo = load_tool("segment_demo")
    assert (
        demo.run_tool(
            demo.main,
            [
                str(CONFIG),
                str(work_dir / f"iter_{ITERS}.pth"),
                "--input",
                str(data / "img_dir/val/000.png"),
                "--vocabulary",
                "sky,grass,lava,road,snow,water",
                "--output",
                str(out),
            ],
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["classes"] == 6 and set(summary["found"]) <= {"sky", "grass", "lava", "road", "snow", "water"}
    assert abs(sum(summary["found"].values()) - 1) < 1e-3
    import cv2

    image = cv2.imread(str(out))
    assert image.shape[0] >= 64 and image.shape[1] > 64  # the segmentation plus its legend

    bad = demo.run_tool(
        demo.main,
        [
            str(CONFIG),
            str(work_dir / f"iter_{ITERS}.pth"),
            "--input",
            str(data / "img_dir/val/000.png"),
            "--vocabulary",
            "sky,sky",
            "--output",
            str(tmp_path / "x.png"),
        ],
    )
    assert bad == 2 and "error: class name 'sky' appears twice" in capsys.readouterr().err
