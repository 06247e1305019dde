#!/usr/bin/env python
"""Do CUDA graphs train what eager steps train? 30 steps of 2 groups, several captured shapes, a partial last group.

The bug this guards against: a captured ``backward()`` wrote ``ctx.grad`` into the graph's own memory, so with
several shapes (or a DDP average that replaced ``ctx.grad``) the optimiser read stale gradients, while every
single-shape check still passed. Graphs and eager steps must end with the same ``ctx``: in fp32 to float
tolerance, in bf16 to bf16 tolerance (both relative to how far ``ctx`` moved). ``tests/test_pretrain_cuda_graphs.py``
runs this (on a GPU; on a CPU it compares the padded fixed-shape layout the graphs replay, run eagerly).

    python bench/pretrain_cuda_graphs.py --json bench/results/pretrain_cuda_graphs_<gpu>.json     # needs CUDA
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from pomp_plugins.pretrain import PompStep, group_negatives, image_feature_function
from pomp_plugins.prompt import PromptedTextEncoder, get_vocabulary, load_clip

NAMES = list(get_vocabulary("imagenet21k-p").names[:300])
# K=124 puts a group's packed prompt tokens around 512: with TOKEN_BUCKET 256, the 60 groups (seeds below) need
# two token buckets (36 at 512, 24 at 768), and the partial last group (1 image) one more shape.
K, GROUP, VIEWS, GROUPS_PER_STEP, STEPS, LAST_GROUP = 124, 4, 2, 2, 30, 1
LR, MOMENTUM, WEIGHT_DECAY = 2e-3, 0.9, 5e-4  # the paper's SGD
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}  # of the largest change of a ctx entry over the 30 steps


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
    """Train ``ctx`` of the tiny CLIP through the schedule: its start and end, the group losses, captured shapes."""
    clip = load_clip("pomp-tiny", None, device=device, dtype=dtype)
    encoder = PromptedTextEncoder.from_clip(clip.model, 4, generator=torch.Generator().manual_seed(0))
    start = encoder.ctx.detach().cpu().clone()
    optimizer = torch.optim.SGD([encoder.ctx], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    step = PompStep(
        encoder,
        encoder.tokenize(NAMES, device="cpu"),
        clip.logit_scale,
        K,
        10.0,
        optimizer,
        cuda_graphs=cuda_graphs,
        max_positives=GROUP,
    )
    on_gpu = cuda_graphs and device == "cuda"
    features = image_feature_function(clip.model, None, on_gpu)
    tower_dtype = next(clip.model.visual.parameters()).dtype
    losses, shapes = [], set()
    for groups in schedule(clip.image_size):
        for labels, pixels, negatives in groups:
            inputs = step.prepare(labels, negatives)
            shapes.add((len(labels), inputs.prompts.ids.shape[0]))
            losses.append(step.accumulate(features(pixels.to(device, tower_dtype)), inputs))
        step.apply()
    return {
        "start": start,
        "end": encoder.ctx.detach().cpu().clone(),
        "losses": torch.stack(losses).float().cpu(),
        "text_graphs": step.captured_shapes,
        "image_graphs": len(features.graphs) if on_gpu else 0,
        "shapes": sorted(shapes),
    }


def compare(graphs: dict, eager: dict) -> dict:
    return {
        "ctx_max_abs_difference": float((graphs["end"] - eager["end"]).abs().max()),
        "ctx_max_abs_movement": float((eager["end"] - eager["start"]).abs().max()),
        "ctx_max_abs_start": float(eager["start"].abs().max()),
        "loss_max_rel_difference": float(((graphs["losses"] - eager["losses"]).abs() / eager["losses"]).max()),
    }


def check_on_gpu() -> dict:
    """Graphs vs eager on CUDA in fp32 (TF32 off) and bf16; ``passed`` says whether every criterion held."""
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here (the patch-embedding convolution)
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {
        "check": "pretrain_cuda_graphs",
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "steps": STEPS,
        "groups_per_step": GROUPS_PER_STEP,
        "num_sampled": K,
        "lr": LR,
    }
    passed = True
    for dtype in ("fp32", "bf16"):
        graphs, eager = trajectory("cuda", dtype, True), trajectory("cuda", dtype, False)
        numbers = {
            **compare(graphs, eager),
            "text_graphs": graphs["text_graphs"],
            "image_graphs": graphs["image_graphs"],
            "tolerance": TOLERANCE[dtype],
        }
        numbers["criteria"] = {
            "at_least_3_text_graphs": numbers["text_graphs"] >= 3,  # 2 token buckets + the partial group
            "at_least_2_image_graphs": numbers["image_graphs"] >= 2,
            "ctx_moved_more_than_its_start": numbers["ctx_max_abs_movement"] > numbers["ctx_max_abs_start"],
            "ctx_agrees": numbers["ctx_max_abs_difference"] <= TOLERANCE[dtype] * numbers["ctx_max_abs_movement"],
        }
        passed = passed and all(numbers["criteria"].values())
        result[dtype] = numbers
    result["passed"] = passed
    return result


def gpu_short_name() -> str:
    name = re.search(r"\b([a-z]{1,2}\d{2,4})\b", torch.cuda.get_device_name().lower())
    return name.group(1) if name else "gpu"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--json", default=None, help="JSON file (default: bench/results/pretrain_cuda_graphs_<gpu>.json)"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU", file=sys.stderr)
        return 1
    result = check_on_gpu()
    default = Path(__file__).resolve().parent / "results" / f"pretrain_cuda_graphs_{gpu_short_name()}.json"
    out = Path(args.json or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
