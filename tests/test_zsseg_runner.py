"""The tiny ZSSeg config end to end through mmengine's Runner (mmseg's train/test entry points) on the toy data."""

import math
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from pomp_plugins.mmseg.toy_data import make_toy_dataset

CONFIG = Path(__file__).resolve().parent.parent / "mmseg_configs" / "tiny_zsseg_cpu.py"


@pytest.mark.slow
def test_tiny_zsseg_trains_on_a_fixed_batch_and_reports_seen_unseen_and_hiou(tmp_path):
    data = make_toy_dataset(tmp_path / "toy", num_train=2, num_val=3)
    cfg = Config.fromfile(str(CONFIG))
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(data)
    cfg.work_dir = str(tmp_path / "work")
    cfg.train_cfg.update(max_iters=20, val_interval=20)
    cfg.param_scheduler[0].end = 20
    cfg.train_dataloader.sampler.shuffle = False
    cfg.default_hooks.update(logger=dict(interval=1), checkpoint=dict(interval=20))
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = np.array(runner.message_hub.get_scalar("train/loss").data[0])
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert losses[-3:].mean() < 0.8 * losses[0], losses
    metrics = runner.test()
    assert {"mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "aAcc"} <= set(metrics)
    assert all(math.isfinite(metrics[k]) and 0 <= metrics[k] <= 100 for k in ("mIoU", "mIoU_seen", "aAcc"))
