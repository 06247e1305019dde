#!/usr/bin/env python
"""Train an mmseg model from a config (mmengine ``Runner``), e.g. a POMP zero-shot segmentor.

    .venv/bin/python tools/train.py mmseg_configs/zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py \
        --work-dir work_dirs/zsseg
    .venv/bin/torchrun --nproc-per-node 8 tools/train.py CONFIG --launcher pytorch   # distributed (mmengine launcher)

The same as mmseg's own ``tools/train.py`` (same arguments, same Runner calls), for users without an
mmsegmentation source checkout; mmseg's own script runs our configs too.
"""

import argparse
import sys

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from pomp_plugins.mmseg.runner_args import add_runner_arguments, load_runner_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="train config file")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision")
    add_runner_arguments(parser)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    cfg = load_runner_config(args)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    cfg.resume = args.resume
    return cfg


def main(argv=None) -> int:
    cfg = build_config(parse_args(argv))
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    runner.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
