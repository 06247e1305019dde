#!/usr/bin/env python
"""Pre-training end to end: ``tools/pretrain_prompt.py`` on a generated JPEG tree, at 1..N data-loading workers.

Generates ImageNet-like JPEGs (default 400x350, smooth random content plus noise, quality 90) in CLASSES folders,
then runs the real tool for ``--steps`` steps (after one start-up step, which is not timed) once per worker count,
and reads the run's ``throughput.json``: images/s end to end (decode, augmentation, transfer, image tower, text
step) and the share of the step's time spent waiting for the data loader. A share near 0 means the step is the
bottleneck; near 1, decoding and augmentation on the CPU are, and more workers (or ``--cache-image-features``)
would help.

    python bench/pretrain_e2e.py --workers 0,1,2 --json bench/results/pretrain_e2e_<machine>.json   # tiny CLIP, CPU
    python bench/pretrain_e2e.py --model ViT-B-16 --device cuda --workers 1,2,4,8,16 --json pretrain_e2e_h200.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def make_jpeg_tree(root: Path, classes: int, per_class: int, width: int, height: int, seed: int = 0) -> int:
    """``root/class_<c>/<i>.jpg``: smooth random colour fields (upsampled 8x8 noise) with pixel noise; returns the
    total bytes written (natural photos of this size are ~100 KB; these are in the same range)."""
    rng = np.random.default_rng(seed)
    total = 0
    for c in range(classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
                (width, height), Image.BICUBIC
            )
            pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-25, 26, (height, width, 3))
            path = folder / f"{i:04d}.jpg"
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
            total += path.stat().st_size
    return total


def run_once(data: Path, output: Path, workers: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        str(ROOT / "tools" / "pretrain_prompt.py"),
        "--data",
        str(data),
        "--output",
        str(output),
        "--clip-model",
        args.model,
        "--clip-pretrained",
        "none",
        "--device",
        args.device,
        "--workers",
        str(workers),
        "--no-progress",
        "--val-per-class",
        "0",
        "--shots",
        str(args.per_class),
        "--group-size",
        str(args.group_size),
        "--global-batch",
        str(args.global_batch),
        "--views",
        str(args.views),
        "--num-sampled",
        str(args.num_sampled),
        "--epochs",
        "1000",
        "--stop-after-steps",
        str(args.steps + 1),
    ]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"pretrain_prompt.py failed with {workers} workers:\n{result.stderr[-3000:]}")
    throughput = json.loads((output / "throughput.json").read_text())
    return {"workers": workers, "process_seconds": time.perf_counter() - started, **throughput}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pomp-tiny", help="open_clip model (random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--workers", default=None, help="comma-separated worker counts (default: 1, 2, 4, ... up to the CPU count)"
    )
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting (after 1 start-up step)")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=8, help="images per class (all used: --shots)")
    parser.add_argument("--size", default="400x350", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--num-sampled", type=int, default=20)
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.workers:
        workers = [int(w) for w in args.workers.split(",")]
    else:
        workers = sorted({min(2**k, cpus) for k in range(cpus.bit_length() + 1)})
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        started = time.perf_counter()
        size = make_jpeg_tree(data, args.classes, args.per_class, width, height)
        generated = time.perf_counter() - started
        rows = [run_once(data, Path(folder) / f"run_{w}", w, args) for w in workers]

    best = max(rows, key=lambda row: row["images_per_s_all_processes"])
    result = {
        "benchmark": "pretrain_e2e",
        "machine": f"{os.uname().machine}, {cpus} CPUs available",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "device": args.device,
        "model": f"{args.model} (random weights)",
        "data": {
            "classes": args.classes,
            "images": args.classes * args.per_class,
            "size": f"{width}x{height}",
            "mean_jpeg_kb": size / 1024 / (args.classes * args.per_class),
            "generate_seconds": generated,
        },
        "step": {
            "group_size": args.group_size,
            "global_batch": args.global_batch,
            "views": args.views,
            "num_sampled": args.num_sampled,
            "timed_steps": args.steps,
        },
        "results": rows,
        "best": {
            "workers": best["workers"],
            "images_per_s": best["images_per_s_all_processes"],
            "data_wait_share": best["data_wait_share"],
        },
        "notes": [
            "images_per_s: end to end, training images (each as `views` augmented views) per second of "
            "steps, the first (start-up) step excluded",
            "data_wait_share: share of that time the training loop was blocked on the data loader",
            "workers 0 loads data in the training process itself",
        ],
    }
    write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
