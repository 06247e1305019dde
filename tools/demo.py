#!/usr/bin/env python
"""The main job in a minute on a CPU: pre-train a POMP prompt, then classify zero-shot with it.

    .venv/bin/python tools/demo.py [--out demo_output]

1. writes class folders of generated pictures (coloured shapes; class "red circle", ...): ``OUT/data/train`` to
   pre-train on and ``OUT/data/val`` as the test split;
2. runs ``tools/pretrain_prompt.py`` with the tiny random-weight CLIP ``pomp-tiny`` (no download);
3. runs ``tools/eval_zeroshot.py`` on the test split with the learned prompt and with the hard prompt
   "a photo of a {name}.", and prints both accuracies.

A random-weight CLIP knows nothing about words, so the hard prompt scores about chance; the learned prompt shows
that pre-training really moves the class embeddings onto the images. The commands it runs are printed, so the same
steps can be repeated by hand or scaled up (a real CLIP, ImageNet-21K, a GPU).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from pomp_plugins.classification.cli import main as eval_zeroshot
from pomp_plugins.pretrain.cli import main as pretrain_prompt
from pomp_plugins.pretrain.synthetic import class_list, make_image_folder
from pomp_plugins.prompt.cli import run_tool

CLASSES = 8
TRAIN_IMAGES, TEST_IMAGES = 20, 10  # per class
TINY_CLIP = ["--clip-model", "pomp-tiny", "--clip-pretrained", "none", "--device", "cpu"]
# The paper's recipe, except what a random-weight model and 128 training images need: more epochs, a far larger
# learning rate without warm-up, 16 context vectors and gentler crops (the shapes must stay in the picture).
PRETRAIN = [
    "--n-ctx",
    "16",
    "--epochs",
    "40",
    "--lr",
    "0.3",
    "--warmup-epochs",
    "0",
    "--group-size",
    "8",
    "--global-batch",
    "8",
    "--crop-scale-min",
    "0.5",
    "--shots",
    "16",
    "--val-per-class",
    "4",
    "--workers",
    "0",
    "--no-progress",
]


def run(tool: str, main, argv: list[str]) -> None:
    print(f"\n$ python tools/{tool} {shlex.join(argv)}", flush=True)
    status = run_tool(main, argv)
    if status:
        sys.exit(status)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="where data and results go (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the tiny model's operations are too small to gain from threads
    started = time.perf_counter()
    out = Path(args.out)
    data = out / "data"
    names = class_list(CLASSES)
    make_image_folder(data / "train", names, TRAIN_IMAGES, seed=0)
    make_image_folder(data / "val", names, TEST_IMAGES, seed=1)
    print(
        f"wrote {CLASSES} classes ({', '.join(names)}) to {data}: {TRAIN_IMAGES} training and {TEST_IMAGES} test "
        "images each"
    )

    prompt = out / "pretrain" / "prompt.pt"
    run(
        "pretrain_prompt.py",
        pretrain_prompt,
        ["--data", str(data), "--output", str(prompt.parent), *TINY_CLIP, *PRETRAIN],
    )
    results = {}
    for label, prompt_args in (
        ("POMP prompt (learned)", ["--prompt", str(prompt)]),
        ("hard prompt 'a photo of a {name}.'", ["--hard-prompt", "a photo of a"]),
    ):
        report = out / f"eval_{'pomp' if '--prompt' in prompt_args else 'hard_prompt'}.json"
        run(
            "eval_zeroshot.py",
            eval_zeroshot,
            [
                "--data",
                str(data / "val"),
                *TINY_CLIP,
                *prompt_args,
                "--workers",
                "0",
                "--no-progress",
                "--out",
                str(report),
            ],
        )
        results[label] = json.loads(report.read_text())

    print(
        f"\nzero-shot accuracy on {results[next(iter(results))]['images']} test images of {CLASSES} classes "
        f"(chance: {100 / CLASSES:.1f}%):"
    )
    for label, result in results.items():
        print(
            f"  {label:36s} top-1 {result['top1']:5.1f}%   top-5 {result['top5']:5.1f}%   "
            f"mean per class {result['mean_per_class']:5.1f}%"
        )
    summary = {label: {k: r[k] for k in ("top1", "top5", "mean_per_class", "images")} for label, r in results.items()}
    (out / "summary.json").write_text(json.dumps({"prompt": str(prompt), "accuracy": summary}, indent=2) + "\n")
    print(f"prompt: {prompt}   summary: {out / 'summary.json'}   ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
