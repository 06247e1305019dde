#!/usr/bin/env python
"""Put a POMP prompt where the configs and examples read it (``prompts/<name>.pt``), in this package's format.

    # a released prompt from the model hub (ViT-B/32, n_ctx 4)
    .venv/bin/python tools/fetch_prompt.py --output prompts/pomp_vit_b32_ctx4.pt \\
        hf-hub:ShuhuaiRen/POMP-ViT-Base-32/vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar
    # a released ViT-B/16 prompt downloaded by hand (Google Drive links in the reference's docs/MODELS.md)
    .venv/bin/python tools/fetch_prompt.py --output prompts/pomp_vit_b16_ctx16.pt \\
        vit_b16_ep20_randaug2_unc1000_16shots_nctx16_cscFalse_ctpend_seed42.pth.tar
    # the result of a pre-training run
    .venv/bin/python tools/fetch_prompt.py output/pomp_vit_b16_ctx4/prompt.pt --output prompts/pomp_vit_b16_ctx4.pt

SOURCE is anything a tool's ``--prompt`` takes: a prompt file of ours, a released reference (Dassl) checkpoint, or
``hf-hub:ORG/REPO[/FILE]``. The written file holds the prompt's ``ctx`` and the CLIP it belongs to (a released
checkpoint's CLIP comes from its file name; give ``--clip-model`` for a renamed one), a few KB. Reading never runs
code from the file. Prints a JSON summary.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from pomp_plugins.prompt import load_prompt, save_prompt
from pomp_plugins.prompt.cli import add_output_argument, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a prompt file (ours or a released checkpoint) or hf-hub:ORG/REPO[/FILE]")
    add_output_argument(parser, "the prompt file to write, e.g. prompts/pomp_vit_b16_ctx4.pt")
    parser.add_argument(
        "--clip-model",
        default=None,
        help="the open_clip model the prompt belongs to, for a source that does not record it (e.g. a renamed "
        "released checkpoint); it is recorded with OpenAI's weights unless --clip-pretrained says otherwise",
    )
    parser.add_argument("--clip-pretrained", default="openai", help="with --clip-model (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    prompt = load_prompt(args.source)
    if args.clip_model is not None:
        if prompt.clip_model is not None and prompt.clip_model != args.clip_model:
            print(
                f"error: {args.source} records CLIP {prompt.clip_model}, not {args.clip_model}; leave out --clip-model",
                file=sys.stderr,
            )
            return 2
        if prompt.clip_model is None:
            prompt = dataclasses.replace(prompt, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained)
    prompt = dataclasses.replace(prompt, meta={**prompt.meta, "fetched_from": args.source})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_prompt(prompt, args.output)
    print(
        json.dumps(
            {
                "output": args.output,
                "source": args.source,
                "n_ctx": prompt.n_ctx,
                "width": prompt.ctx.shape[1],
                "clip_model": prompt.clip_model,
                "clip_pretrained": prompt.clip_pretrained,
            }
        )
    )
    if prompt.clip_model is None:
        print(
            f"warning: {args.source} does not say which CLIP it belongs to; the tools will assume ViT-B-16 with "
            "OpenAI's weights (give --clip-model to record another)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
