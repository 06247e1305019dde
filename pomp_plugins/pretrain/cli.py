"""``tools/pretrain_prompt.py``: learn a POMP prompt, on one process or under torchrun."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .config import PretrainError, build_parser, config_from_args
from .trainer import pretrain

DESCRIPTION = """Learn a POMP soft prompt for a frozen CLIP text encoder (local contrast + local correction).

Every default follows the paper's recipe (ViT-B/16, n_ctx 4, 16 shots, 4 views with Dassl's randaugment2, steps
of 256 images in groups of 32 that draw their own K-1=999 negatives, on any number of processes, SGD 0.002,
cosine, one warm-up epoch at 1e-5); the run writes its settings to OUTPUT/config.json."""

EPILOG = """examples (from the repository root):
  # one GPU, ImageNet-21K-P (DATA/train/<wnid>/*.JPEG; DATA/val is never read): output/pomp_vit_b16_ctx4/prompt.pt
  .venv/bin/python tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p --output output/pomp_vit_b16_ctx4
  # 8 GPUs
  .venv/bin/torchrun --nproc-per-node 8 tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p \\
      --output output/pomp_vit_b16_ctx4
  # continue an interrupted run
  .venv/bin/python tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p --output output/pomp_vit_b16_ctx4 \\
      --resume auto
  # text side only, from cached image features of 4 fixed views per image
  .venv/bin/python tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p --cache-image-features
  # where the configs and examples read it
  mkdir -p prompts && cp output/pomp_vit_b16_ctx4/prompt.pt prompts/pomp_vit_b16_ctx4.pt
"""


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv, build_parser(DESCRIPTION, EPILOG))
    try:
        pretrain(config)
    except PretrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
