#!/usr/bin/env python
"""Where a POMP step's GPU time goes: the trainer's step run eagerly under ``torch.profiler``.

Times the image tower, the host-side planning and the text forward+backward separately (CUDA events), and lists
the kernels with the most device time per step, as JSON:

    python bench/profile_pretrain_step.py --json bench/results/profile_pretrain_step_h200.json
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402
from pretrain_step import OursStep  # noqa: E402

from pomp_plugins.pretrain import group_negatives  # noqa: E402
from pomp_plugins.prompt import get_vocabulary, load_clip  # noqa: E402


def device_time_us(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--classes", type=int, default=None, help="first N classes of imagenet21k-p (default all)")
    parser.add_argument("--num-sampled", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--n-ctx", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = load_clip(args.model, None, device="cpu", dtype="fp32")
    names = list(get_vocabulary("imagenet21k-p").names[: args.classes])
    ctx = torch.randn(args.n_ctx, base.model.token_embedding.embedding_dim) * 0.02
    ours = OursStep(
        base.model,
        names,
        args.n_ctx,
        args.num_sampled,
        base.logit_scale,
        ctx,
        dtype,
        device,
        args.batch,
        cuda_graphs=False,
    )
    size = base.image_size
    images = torch.randn(args.batch * args.views, 3, size, size).to(device, dtype)
    labels = torch.randint(len(names), (args.batch,)).repeat_interleave(args.views)

    parts = {"image_tower": [], "prepare": [], "text_forward_backward_and_update": []}

    def step(i: int) -> None:
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(4)] if device.type == "cuda" else None
        if marks:
            marks[0].record()
        features = ours.image_features(images)
        if marks:
            marks[1].record()
        inputs = ours.step.prepare(labels, group_negatives(len(names), args.num_sampled, 0, i, 0))
        if marks:
            marks[2].record()
        ours.step(features, inputs)
        if marks:
            marks[3].record()
            torch.cuda.synchronize()
            for (_name, times), start, end in zip(parts.items(), marks[:-1], marks[1:]):
                times.append(start.elapsed_time(end))

    for i in range(3):
        step(i)
    for times in parts.values():
        times.clear()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(args.steps):
            step(3 + i)
    events = sorted(prof.key_averages(), key=device_time_us, reverse=True)
    result = {
        "benchmark": "profile_pretrain_step",
        "machine": machine(device),
        "torch": torch.__version__,
        "settings": {
            "model": args.model,
            "classes": len(names),
            "num_sampled": args.num_sampled,
            "images": args.batch,
            "views": args.views,
            "n_ctx": args.n_ctx,
            "cuda_graphs": False,
        },
        "ms_per_step_by_part": {name: sum(t) / len(t) for name, t in parts.items() if t},
        "top_kernels_device_ms_per_step": [
            {"name": e.key[:120], "ms": device_time_us(e) / 1e3 / args.steps, "calls_per_step": e.count / args.steps}
            for e in events[: args.top]
            if device_time_us(e) > 0
        ],
        "cpu_ops_per_step": sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / args.steps,
    }
    write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
