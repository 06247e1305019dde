"""CUDA graphs train what eager steps train: 30 steps of 2 groups, several captured shapes, a partial last group.

The bug this guards against: a captured ``backward()`` writes ``ctx.grad`` into the graph's own memory, so with
several shapes (or a DDP average that replaced ``ctx.grad``) the optimiser read stale gradients, while every
single-shape check still passed. Here graphs and eager steps must end with the same ``ctx`` (fp32: to float
tolerance; bf16: to bf16 tolerance). Needs a GPU; run on one, it writes its numbers to
``bench/results/pretrain_cuda_graphs_<gpu>.json``. ``trajectory`` is device-generic: on a CPU (with
``fixed_shapes``) it runs the padded fixed-shape layout eagerly, which the fast test below compares the same way.
"""
import json
import re
from pathlib import Path

import pytest
import torch

from pomp_plugins.prompt import PromptedTextEncoder, get_vocabulary, load_clip
from pomp_plugins.pretrain import PompStep, group_negatives, image_feature_function

ROOT = Path(__file__).resolve().parent.parent
NAMES = list(get_vocabulary("imagenet21k-p").names[:300])
# K=124 puts a group's packed prompt tokens around 512: with TOKEN_BUCKET 256, the 60 groups (seed below) need
# two token buckets (36 at 512, 24 at 768), and the partial last group (1 image) a third shape.
K, GROUP, VIEWS, GROUPS_PER_STEP, STEPS, LAST_GROUP = 124, 4, 2, 2, 30, 1
LR, MOMENTUM, WEIGHT_DECAY = 2e-3, 0.9, 5e-4  # the paper's SGD


def schedule(image_size: int) -> list:
    """``STEPS`` steps of ``GROUPS_PER_STEP`` groups ``(labels [R], images [R, 3, S, S], negatives [K-1])``."""
    generator = torch.Generator().manual_seed(0)
    steps = []
    for step in range(STEPS):
        groups = []
        for number in range(GROUPS_PER_STEP):
            images = LAST_GROUP if (step, number) == (STEPS - 1, GROUPS_PER_STEP - 1) else GROUP
            labels = torch.randint(len(NAMES), (images,), generator=generator).repeat_interleave(VIEWS)
            pixels = torch.randn(images * VIEWS, 3, image_size, image_size, generator=generator)
            groups.append((labels, pixels, group_negatives(len(NAMES), K, 1, step, number)))
        steps.append(groups)
    return steps


def trajectory(device: str, dtype: str, cuda_graphs: bool) -> dict:
    """Train ``ctx`` through the schedule; its start and end, the group losses, and the captured shapes."""
    clip = load_clip("pomp-tiny", None, device=device, dtype=dtype)
    encoder = PromptedTextEncoder.from_clip(clip.model, 4, generator=torch.Generator().manual_seed(0))
    start = encoder.ctx.detach().cpu().clone()
    optimizer = torch.optim.SGD([encoder.ctx], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    step = PompStep(encoder, encoder.tokenize(NAMES, device="cpu"), clip.logit_scale, K, 10.0, optimizer,
                    cuda_graphs=cuda_graphs, max_positives=GROUP)
    on_gpu = cuda_graphs and device == "cuda"
    features = image_feature_function(clip.model, None, on_gpu)
    tower_dtype = next(clip.model.visual.parameters()).dtype
    losses, token_counts = [], set()
    for groups in schedule(clip.image_size):
        for labels, pixels, negatives in groups:
            inputs = step.prepare(labels, negatives)
            token_counts.add((len(labels), inputs.prompts.ids.shape[0]))
            losses.append(step.accumulate(features(pixels.to(device, tower_dtype)), inputs))
        step.apply()
    return {"start": start, "end": encoder.ctx.detach().cpu().clone(), "losses": torch.stack(losses).float().cpu(),
            "text_graphs": step.captured_shapes, "image_graphs": len(features.graphs) if on_gpu else 0,
            "shapes": sorted(token_counts)}


def compare(graphs: dict, eager: dict) -> dict:
    moved = float((eager["end"] - eager["start"]).abs().max())
    return {"ctx_max_abs_difference": float((graphs["end"] - eager["end"]).abs().max()),
            "ctx_max_abs_movement": moved,
            "loss_max_rel_difference": float(((graphs["losses"] - eager["losses"]).abs() / eager["losses"]).max())}


def test_the_fixed_shape_layout_trains_like_the_packed_one_on_the_cpu():
    """What the graphs replay, run eagerly: the same trajectory, and the schedule does give several shapes."""
    fixed, packed = trajectory("cpu", "fp32", True), trajectory("cpu", "fp32", False)
    assert len({tokens for rows, tokens in fixed["shapes"] if rows == GROUP * VIEWS}) >= 2  # two token buckets
    assert (LAST_GROUP * VIEWS) in {rows for rows, _ in fixed["shapes"]}
    numbers = compare(fixed, packed)
    assert numbers["ctx_max_abs_movement"] > float(packed["start"].abs().max())  # ctx really trained
    assert numbers["ctx_max_abs_difference"] <= 1e-4 * numbers["ctx_max_abs_movement"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA graphs cannot be captured on a "
                    "CPU (the layout they replay is compared on the CPU by the test above)")
def test_cuda_graphs_train_what_eager_steps_train():
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 for the comparison (the patch-embedding conv)
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"test": "pretrain_cuda_graphs", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "steps": STEPS, "groups_per_step": GROUPS_PER_STEP, "num_sampled": K, "passed": False}
    name = re.search(r"\b([a-z]{1,2}\d{2,4})\b", torch.cuda.get_device_name().lower())
    out = ROOT / "bench" / "results" / f"pretrain_cuda_graphs_{name.group(1) if name else 'gpu'}.json"
    tolerance = {"fp32": 1e-3, "bf16": 5e-2}  # of how far ctx moved
    try:
        for dtype in ("fp32", "bf16"):
            graphs, eager = trajectory("cuda", dtype, True), trajectory("cuda", dtype, False)
            numbers = result[dtype] = {**compare(graphs, eager), "text_graphs": graphs["text_graphs"],
                                       "image_graphs": graphs["image_graphs"], "tolerance": tolerance[dtype]}
            assert graphs["text_graphs"] >= 3 and graphs["image_graphs"] >= 2  # 2 token buckets + partial group
            assert numbers["ctx_max_abs_movement"] > float(eager["start"].abs().max())
            assert numbers["ctx_max_abs_difference"] <= tolerance[dtype] * numbers["ctx_max_abs_movement"]
        result["passed"] = True
    finally:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
