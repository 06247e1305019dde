#!/usr/bin/env python
"""Export class embeddings as a ``.npy`` file ``[C, D]`` that Detic (and anything reading numpy) can load.

Example::

    python tools/export_embeddings.py --prompt pomp_vit_b16.pt --vocabulary lvis --out lvis_pomp.npy
    python tools/export_embeddings.py --clip-model ViT-B-16 --hard-prompt "a photo of a" --names "cat,dog" --out x.npy
    python tools/export_embeddings.py --vocabulary lvis --out lvis_pomp_b32.npy --prompt \\
        hf-hub:ShuhuaiRen/POMP-ViT-Base-32/vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar

The CLIP (model, weights, activation) is the one the prompt file records unless --clip-model/--clip-pretrained
say otherwise (then with a warning); the CLIP used is printed on stderr and in the JSON summary.

Detic's own files are float16 and unnormalised (Detic normalises at load time); so are ours unless
``--normalize`` / ``--float32`` are given.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pomp_plugins.prompt import class_embeddings, load_for_prompt
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
    clip, prompt = load_for_prompt(args.prompt, args.clip_model, clip_pretrained(args), args.device, args.dtype)
    print(clip.describe(), file=sys.stderr)
    source = {"prompt": prompt} if prompt is not None else {"hard_prompt": prompt_from_args(args)["hard_prompt"]}
    embeddings = class_embeddings(
        vocabulary, clip=clip, normalize=args.normalize, cache=not args.no_cache, progress=True, **source
    )
    array = embeddings.numpy().astype(np.float32 if args.float32 else np.float16)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, array)
    print(
        json.dumps(
            {
                "out": str(out),
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "vocabulary": vocabulary.name,
                "clip_model": clip.name,
                "clip_pretrained": clip.pretrained,
                "clip_activation": clip.activation,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
