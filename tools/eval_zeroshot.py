#!/usr/bin/env python
"""Zero-shot classification accuracy of a CLIP with a POMP prompt, a hard prompt or OpenAI's template ensemble.

    python tools/eval_zeroshot.py --data DATA/val --vocabulary imagenet21k-p --prompt prompt.pt --device cuda
    python tools/eval_zeroshot.py --data my_images --names-file names.txt --templates openai --out result.json

Prints top-1, top-5 and mean per-class accuracy; ``--out`` also writes them (and per-class accuracy) as JSON.
"""

import sys

from pomp_plugins.classification.cli import main
from pomp_plugins.prompt.cli import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
