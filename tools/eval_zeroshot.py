#!/usr/bin/env python
"""Zero-shot classification accuracy of a CLIP with a POMP prompt, a hard prompt or OpenAI's template ensemble.

    .venv/bin/python tools/eval_zeroshot.py --data DATA/val --vocabulary imagenet21k-p \\
        --prompt prompts/pomp_vit_b16_ctx4.pt
    .venv/bin/python tools/eval_zeroshot.py --data my_images --vocabulary names.txt --templates openai \\
        --json result.json

Prints top-1, top-5 and mean per-class accuracy; ``--json`` also writes them (and per-class accuracy) as JSON.
"""

import sys

from pomp_plugins.classification.cli import main
from pomp_plugins.prompt.cli import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
