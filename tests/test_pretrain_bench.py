"""The training-step benchmark and the GPU suite, run as the lead runs them, at tiny sizes on the CPU."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_suite_dry_run_writes_both_results_and_the_steps_agree(tmp_path):
    env = {**os.environ, "SUITE_MODEL": "pomp-tiny", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_suite.sh"), str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    step = json.loads((tmp_path / "pretrain_step_cpu-dry-run.json").read_text())
    assert (
        step["preset"] == "gpu"
        and step["dry_run"]
        and set(step["results"]) == {"feature_cache_n_ctx_4", "n_ctx_4", "n_ctx_16"}
    )
    for n_ctx in (4, 16):
        row = step["results"][f"n_ctx_{n_ctx}"]
        # ours (packed, distinct classes) and the reference-style step (77 tokens, every view) compute one loss
        assert row["loss_abs_difference"] < 1e-5 * row["loss_first_batch_reference_style"]
        assert row["ours"]["ms_per_step"] > 0 and row["reference_style"]["images_per_s"] > 0
        # after the same steps, ours and the reference-style step (both fp32 on a CPU) hold the same ctx
        agreement = row["ctx_after_steps"]
        assert agreement["steps"] == 2 and agreement["max_abs_movement_ours"] > 0
        assert agreement["max_abs_difference_ours_vs_reference_style"] < 1e-3 * agreement["max_abs_movement_ours"]
    compiled = step["results"]["n_ctx_4"]["ours_compiled_image_tower"]
    assert "error" not in compiled and compiled["first_step_seconds_with_compile"] > 0
    vocab = json.loads((tmp_path / "encode_vocab_cpu-dry-run.json").read_text())
    assert vocab["classes"] == 200 and vocab["max_abs_difference"] < 1e-4
    assert (tmp_path / "environment_cpu-dry-run.txt").read_text().startswith("python")
    assert "the reference-style images/s" in result.stdout and "encode_vocab:" in result.stdout
