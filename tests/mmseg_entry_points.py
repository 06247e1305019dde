"""What mmseg 1.2.2's own ``tools/train.py`` and ``tools/test.py`` do (the pip package does not ship ``tools/``),
step for step, so the tests can run our configs the way users do from an mmsegmentation checkout:

    python tests/mmseg_entry_points.py train CONFIG --work-dir DIR [--resume] [--cfg-options k=v ...]
    python tests/mmseg_entry_points.py test CONFIG CHECKPOINT --work-dir DIR [--cfg-options k=v ...]

It imports nothing of this repository: the config's ``custom_imports`` loads the plugin, as with mmseg's tools.
"""

import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def config_from(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tool", choices=["train", "test"])
    parser.add_argument("config")
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--work-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = config_from(args)
    if args.tool == "train":
        cfg.resume = args.resume
        runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
        runner.train()
    else:
        cfg.load_from = args.checkpoint
        runner = Runner.from_cfg(cfg)
        runner.test()
    return 0


if __name__ == "__main__":
    sys.exit(main())
