"""The training loop end to end on a tiny CLIP: resume = uninterrupted, crash-safe checkpoints, feature-cache
mode, and a 2-process torchrun run through the real entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pomp_plugins.images.folder import Sample
from pomp_plugins.pretrain import PretrainConfig, pretrain
from pomp_plugins.pretrain.checkpoint import load_checkpoint, save_checkpoint
from pomp_plugins.pretrain.config import PretrainError
from pomp_plugins.pretrain.data import CACHE_EPOCH, MultiViewDataset, train_augmentation
from pomp_plugins.pretrain.feature_cache import FeatureCache
from pomp_plugins.pretrain.split import FewShotSplit
from pomp_plugins.pretrain.synthetic import class_list, make_image_folder
from pomp_plugins.prompt import load_clip, load_prompt

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    clip_model="pomp-tiny",
    clip_pretrained=None,
    device="cpu",
    workers=0,
    progress=False,
    group_size=2,
    global_batch=4,
    views=2,
    num_sampled=3,
    shots=4,
    val_per_class=1,
    epochs=2,
    warmup_epochs=0,
    lr=0.5,
    log_every=2,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to gain from threads, and the CI machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 classes; 'black circle' holds 3 images and a corrupt file, so every epoch meets the corrupt one."""
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root, class_list(3), 6, size=24)
    make_image_folder(root, ["black circle"], 3, size=24)
    (root / "black_circle" / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    return root


def train(data: Path, output: Path, **settings) -> Path | None:
    return pretrain(PretrainConfig(data=str(data), output=str(output), **{**TINY, **settings}))


def test_resume_ends_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    uninterrupted = train(data, tmp_path / "full")
    interrupted = tmp_path / "interrupted"
    assert train(data, interrupted, stop_after_steps=3, checkpoint_every_steps=2) is None
    state = load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)  # mid-epoch
    assert not (interrupted / "prompt.pt").exists()
    # continue with a data-loading process this time: batches and views must not depend on it
    resumed = train(data, interrupted, resume="auto", workers=1)

    full, again = load_prompt(uninterrupted), load_prompt(resumed)
    assert torch.equal(full.ctx, again.ctx)
    epoch_1, epoch_2 = (load_prompt(tmp_path / "full" / "prompts" / f"epoch_{e}.pt").ctx for e in (1, 2))
    assert not torch.equal(epoch_1, epoch_2) and torch.equal(epoch_2, full.ctx)  # it did learn something
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (tmp_path / "full", interrupted)]
    assert [s["skipped_paths"] for s in summaries] == [[str(data / "black_circle" / "broken.jpg")]] * 2
    assert [h["train_loss"] for h in summaries[0]["history"]] == [h["train_loss"] for h in summaries[1]["history"]]
    assert summaries[0]["history"][-1]["validation"]["images"] == 3  # one held-out image per full class
    assert full.clip_model == "pomp-tiny" and full.meta["n_ctx"] == 4 and full.meta["num_sampled"] == 3
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["lr"] == 0.5 and saved["epochs"] == 2 and saved["momentum"] == 0.9


def test_resume_auto_without_a_checkpoint_starts_from_scratch(data, tmp_path, capsys):
    fresh = train(data, tmp_path / "fresh", resume="auto", epochs=1)
    assert "no checkpoint at" in capsys.readouterr().out
    assert torch.equal(load_prompt(fresh).ctx, load_prompt(train(data, tmp_path / "plain", epochs=1)).ctx)


def test_resume_refuses_a_run_with_other_settings(data, tmp_path):
    train(data, tmp_path, stop_after_steps=1)
    with pytest.raises(PretrainError, match=r"other settings \{'lr': \(0.5, 0.1\)\}"):
        train(data, tmp_path, resume="auto", lr=0.1)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"ctx": torch.ones(2)})

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"ctx": torch.zeros(2)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["ctx"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_feature_cache_holds_the_image_towers_features_of_fixed_views(data, tmp_path):
    prompt = train(data, tmp_path, cache_image_features=True)
    folder = tmp_path / "feature_cache"
    cache = FeatureCache(folder)
    split = FewShotSplit.load(tmp_path / "split.json")
    paths, labels = split.paths(data, "train")
    assert cache.features.shape == (len(paths), 2, 64) and cache.features.dtype == np.float16
    broken = paths.index(str(data / "black_circle" / "broken.jpg"))
    assert not cache.valid[broken] and cache.valid.sum() == len(paths) - 1

    # independently: the same fixed views through open_clip's own encode_image
    clip = load_clip("pomp-tiny", None)
    views = MultiViewDataset(paths, labels, train_augmentation(32), views=2, seed=1)
    mean = torch.tensor(clip.model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(clip.model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    for index in (0, len(paths) - 1):
        item = views[(CACHE_EPOCH, index)]
        assert isinstance(item, Sample)
        with torch.no_grad():
            expected = F.normalize(clip.model.encode_image((item.data / 255.0 - mean) / std), dim=-1)
        assert torch.allclose(torch.from_numpy(np.array(cache.features[index])).float(), expected, atol=2e-3)

    written = (folder / "features.npy").stat().st_mtime_ns
    again = train(data, tmp_path, cache_image_features=True)  # a fresh run over the same data reuses the cache
    assert (folder / "features.npy").stat().st_mtime_ns == written
    assert torch.equal(load_prompt(prompt).ctx, load_prompt(again).ctx)


@pytest.mark.slow
def test_two_processes_under_torchrun_train_what_one_process_trains(data, tmp_path):
    """Steps of 8 images in 4 groups of 2: one process runs all 4 groups, each of 2 processes runs 2 (same groups,
    same negatives, same mean gradient). A run started on 1 process and continued mid-epoch on 2 under torchrun
    ends with the prompt and losses of an uninterrupted 1-process run, up to the order of float sums."""
    one = train(data, tmp_path / "one", group_size=2, global_batch=8)
    assert train(data, tmp_path / "two", group_size=2, global_batch=8, stop_after_steps=1) is None  # mid-epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "tools" / "pretrain_prompt.py"),
        "--data",
        str(data),
        "--output",
        str(tmp_path / "two"),
        "--clip-model",
        "pomp-tiny",
        "--clip-pretrained",
        "none",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
        "--group-size",
        "2",
        "--global-batch",
        "8",
        "--views",
        "2",
        "--num-sampled",
        "3",
        "--shots",
        "4",
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
        "--lr",
        "0.5",
        "--log-every",
        "2",
        "--resume",
        "auto",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["ctx_sha256_by_rank"]) == 2 and len(set(summary["ctx_sha256_by_rank"])) == 1
    assert summary["steps"] == 2 * 2  # 16 images in steps of 8: 2 steps per epoch
    assert summary["skipped_paths"] == [str(data / "black_circle" / "broken.jpg")]
    assert load_prompt(tmp_path / "two" / "prompt.pt").meta["world_size"] == 2
    assert "2 process(es)" in result.stderr + result.stdout and "resumed from step 1" in result.stderr + result.stdout

    one_summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    two_ctx, one_ctx = load_prompt(tmp_path / "two" / "prompt.pt").ctx, load_prompt(one).ctx
    epoch_1 = load_prompt(tmp_path / "one" / "prompts" / "epoch_1.pt").ctx
    assert not torch.allclose(one_ctx, epoch_1, atol=1e-3)  # the second epoch moved it: agreeing means something
    assert torch.allclose(two_ctx, one_ctx, atol=1e-5, rtol=1e-4)
    assert [h["train_loss"] for h in summary["history"]] == pytest.approx(
        [h["train_loss"] for h in one_summary["history"]], rel=1e-5
    )


def test_the_tool_reports_a_bad_checkpoint_in_one_line(data, tmp_path):
    not_a_checkpoint = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, not_a_checkpoint)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "pretrain_prompt.py"),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "out"),
            "--clip-model",
            "pomp-tiny",
            "--clip-pretrained",
            "none",
            "--resume",
            str(not_a_checkpoint),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "is not a POMP pre-training checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_compiled_image_tower_trains_like_the_eager_one(data, tmp_path):
    eager = load_prompt(train(data, tmp_path / "eager", epochs=1, val_per_class=0)).ctx
    compiled = load_prompt(train(data, tmp_path / "compiled", epochs=1, val_per_class=0, compile_image_tower=True)).ctx
    assert torch.allclose(compiled, eager, atol=1e-4) and not torch.equal(eager, torch.zeros_like(eager))
