"""CUDA graphs train what eager steps train: 30 steps of 2 groups, several captured shapes, a partial last group
(``bench/pretrain_cuda_graphs.py`` holds the schedule and the comparison; run on a GPU, this test writes its numbers
to ``bench/results/pretrain_cuda_graphs_<gpu>.json``)."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import pretrain_cuda_graphs as check  # noqa: E402


def test_the_fixed_shape_layout_trains_like_the_packed_one_on_the_cpu():
    """What the graphs replay, run eagerly: the same trajectory; and the schedule does give several shapes."""
    fixed, packed = check.trajectory("cpu", "fp32", True), check.trajectory("cpu", "fp32", False)
    full_rows = check.GROUP * check.VIEWS
    assert len({tokens for rows, tokens in fixed["shapes"] if rows == full_rows}) >= 2  # two token buckets
    assert check.LAST_GROUP * check.VIEWS in {rows for rows, _ in fixed["shapes"]}
    numbers = check.compare(fixed, packed)
    assert numbers["ctx_max_abs_movement"] > numbers["ctx_max_abs_start"]  # ctx really trained
    assert numbers["ctx_max_abs_difference"] <= 1e-4 * numbers["ctx_max_abs_movement"]


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: CUDA graphs cannot be captured on a "
    "CPU (the layout they replay is compared on the CPU by the test above)",
)
def test_cuda_graphs_train_what_eager_steps_train():
    result = check.check_on_gpu()
    out = ROOT / "bench" / "results" / f"pretrain_cuda_graphs_{check.gpu_short_name()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    assert result["passed"], json.dumps(result, indent=2)
