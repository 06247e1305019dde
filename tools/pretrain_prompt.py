#!/usr/bin/env python
"""Learn a POMP prompt over ImageNet-21K (or any ImageFolder tree) for a frozen CLIP text encoder.

.venv/bin/python tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p --output output/pomp_vit_b16_ctx4
.venv/bin/torchrun --nproc-per-node 8 tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p
.venv/bin/python tools/pretrain_prompt.py --help       # every setting, with the paper's defaults
"""

import sys

from pomp_plugins.pretrain.cli import main
from pomp_plugins.prompt.cli import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
