#!/usr/bin/env python
"""Export class embeddings as a ``.npy`` file ``[C, D]`` that Detic (and anything reading numpy) can load.

Example::

    .venv/bin/python tools/export_embeddings.py --prompt prompts/pomp_vit_b16_ctx16.pt --vocabulary lvis \\
        --output lvis_pomp.npy
    .venv/bin/python tools/export_embeddings.py --clip-model ViT-B-16 --hard-prompt "a photo of a" \\
        --vocabulary "cat,dog" --output x.npy
    .venv/bin/python tools/export_embeddings.py --vocabulary lvis --output lvis_pomp_b32.npy --prompt \\
        hf-hub:ShuhuaiRen/POMP-ViT-Base-32/vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar

The CLIP (model, weights, activation) is the one the prompt file records unless --clip-model/--clip-pretrained
say otherwise (then with a warning); the CLIP used is printed on stderr and in the JSON summary.

Detic's own files are float16 and unnormalised (Detic normalises at load time); so are ours unless
``--normalize`` / ``--float32`` are given (a template ensemble is always normalised). Prints a JSON summary.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pomp_plugins.prompt import class_embeddings, load_for_prompt
from pomp_plugins.prompt.cli import (
    add_clip_arguments,
    add_output_argument,
    add_prompt_arguments,
    add_vocabulary_argument,
    clip_pretrained,
    describe_text,
    prompt_from_args,
    resolve_device,
    run_tool,
    vocabulary_from_args,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_vocabulary_argument(parser)
    add_prompt_arguments(parser)
    add_clip_arguments(parser)
    add_output_argument(parser, "the .npy file to write, [C, D]")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise each class embedding")
    parser.add_argument("--float32", action="store_true", help="write float32 instead of Detic's float16")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    vocabulary = vocabulary_from_args(args)
    text = prompt_from_args(args)
    device = resolve_device(args.device)
    clip, prompt = load_for_prompt(text["prompt"], args.clip_model, clip_pretrained(args), device, args.dtype)
    print(clip.describe(), file=sys.stderr)
    embeddings = class_embeddings(
        vocabulary,
        clip=clip,
        normalize=args.normalize,
        cache=not args.no_cache,
        progress=True,
        **(text | {"prompt": prompt}),
    )
    array = embeddings.numpy().astype(np.float32 if args.float32 else np.float16)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, array)
    print(
        json.dumps(
            {
                "output": str(out),
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "vocabulary": vocabulary.name,
                "text": describe_text(text),
                "clip_model": clip.name,
                "clip_pretrained": clip.pretrained,
                "clip_activation": clip.activation,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
