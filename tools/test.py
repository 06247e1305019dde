#!/usr/bin/env python
"""Test an mmseg checkpoint (mmengine ``Runner``): prints the test metrics, e.g. seen / unseen mIoU and hIoU.

    .venv/bin/python tools/test.py mmseg_configs/zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py CHECKPOINT
    .venv/bin/python tools/test.py mmseg_configs/zsseg_r101c_coco-stuff164k-171-to-ade20k-150-512x512.py CHECKPOINT
    .venv/bin/torchrun --nproc-per-node 8 tools/test.py CONFIG CHECKPOINT --launcher pytorch

The same as mmseg's own ``tools/test.py`` (same arguments, same Runner calls; mmseg's own script runs our configs
too), plus ``--json``: also write the metrics as one JSON object.
"""

import argparse
import json
import sys
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import Runner

from pomp_plugins.mmseg.runner_args import add_runner_arguments, load_runner_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="test config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--out", help="save the predicted label maps (PNG) in this folder")
    parser.add_argument("--show-dir", help="save images with the prediction drawn on them in this folder")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    add_runner_arguments(parser)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    cfg = load_runner_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        cfg.default_hooks.visualization.update(draw=True, interval=1, show=False)
        cfg.visualizer.save_dir = args.show_dir
    if args.out:
        cfg.test_evaluator.update(output_dir=args.out)
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    runner = Runner.from_cfg(build_config(args))
    metrics = runner.test()
    if args.json and runner.rank == 0:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
