#!/usr/bin/env python
"""Learn a POMP prompt over ImageNet-21K (or any ImageFolder tree) for a frozen CLIP text encoder.

python tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p --output output/pomp
torchrun --nproc_per_node 8 tools/pretrain_prompt.py --data DATA --vocabulary imagenet21k-p
python tools/pretrain_prompt.py --help       # every setting, with the paper's defaults
"""

import sys

from pomp_plugins.pretrain.cli import main
from pomp_plugins.prompt.cli import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
