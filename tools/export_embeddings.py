#!/usr/bin/env python
"""Export class embeddings as a ``.npy`` file ``[C, D]`` that Detic (and anything reading numpy) can load.

Example::

    python tools/export_embeddings.py --prompt pomp_vit_b16.pt --vocabulary lvis --out lvis_pomp.npy
    python tools/export_embeddings.py --clip-model ViT-B-16 --hard-prompt "a photo of a" --names "cat,dog" --out x.npy

Detic's own files are float16 and unnormalised (Detic normalises at load time); so are ours unless
``--normalize`` / ``--float32`` are given.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pomp_plugins.prompt import vocabulary_embeddings
from pomp_plugins.prompt.cli import (
    add_clip_arguments,
    add_prompt_arguments,
    add_vocabulary_arguments,
    clip_pretrained,
    prompt_from_args,
    run_tool,
    vocabulary_from_args,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_clip_arguments(parser)
    add_prompt_arguments(parser)
    add_vocabulary_arguments(parser)
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise each class embedding")
    parser.add_argument("--float32", action="store_true", help="write float32 instead of Detic's float16")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    vocabulary = vocabulary_from_args(args)
    embeddings = vocabulary_embeddings(
        vocabulary,
        **prompt_from_args(args),
        clip_model=args.clip_model,
        clip_pretrained=clip_pretrained(args),
        device=args.device,
        dtype=args.dtype,
        cache=not args.no_cache,
        normalize=args.normalize,
        progress=True,
    )
    array = embeddings.numpy().astype(np.float32 if args.float32 else np.float16)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, array)
    print(json.dumps({"out": str(out), "shape": list(array.shape), "dtype": str(array.dtype),
                      "vocabulary": vocabulary.name}))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
