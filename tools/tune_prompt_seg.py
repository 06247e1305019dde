#!/usr/bin/env python
"""POMP's prompt-tuning stage for segmentation: fine-tune a POMP prompt on crops of seen-class ground-truth masks of
a segmentation config's training set, and write the tuned prompt file that the segmentation configs then use frozen.

    .venv/bin/python tools/tune_prompt_seg.py mmseg_configs/zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py \\
        --prompt prompts/pomp_vit_b16_ctx16.pt --output prompts/pomp_vit_b16_ctx16_coco-stuff-156.pt  # 16k iterations
    .venv/bin/python tools/tune_prompt_seg.py mmseg_configs/zsseg_r101c_8xb2-20k_voc12aug-15-5-512x512.py \\
        --prompt prompts/pomp_vit_b16_ctx16.pt --output prompts/pomp_vit_b16_ctx16_voc-15.pt --recipe voc
    .venv/bin/python tools/train.py mmseg_configs/zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py

The written files are the ones the COCO-Stuff and VOC configs read (``prompts/...``); elsewhere, point a config at
one with ``--cfg-options model.decode_head.text_classifier.prompt=FILE``.

The config gives the data (train_dataloader.dataset, read without its augmentations), the classes, the split and the
CLIP (model.decode_head.text_classifier). Prints one JSON line per --log-interval iterations and a summary.
"""

import argparse
import dataclasses
import json
import sys

from mmengine.config import Config, DictAction

from pomp_plugins.mmseg.prompt_tuning import FILLS, TuningRecipe, tune_prompt_for_config
from pomp_plugins.prompt.cli import (
    add_device_argument,
    add_dtype_argument,
    add_output_argument,
    resolve_device,
    run_tool,
)

RECIPES = {"coco-stuff": TuningRecipe(), "voc": TuningRecipe(iters=3200, sample_per_class=128)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="mmseg segmentation config with a ZSSegHead or TextClassifierHead and a split")
    add_output_argument(parser, "the tuned prompt file to write")
    init = parser.add_argument_group("initial prompt (default: the config's prompt)").add_mutually_exclusive_group()
    init.add_argument("--prompt", help="the pre-trained POMP prompt file to start from, or hf-hub:ORG/REPO[/FILE]")
    init.add_argument(
        "--ctx-init", metavar="PHRASE", help="start from the token embeddings of a phrase, e.g. 'a photo of a'"
    )
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="coco-stuff",
        help="POMP's settings for this dataset (default: %(default)s)",
    )
    for field in ("iters", "batch_size", "lr", "sample_per_class", "seed"):
        parser.add_argument(
            f"--{field.replace('_', '-')}",
            type=type(getattr(TuningRecipe(), field)),
            help=f"override the recipe's {field}",
        )
    parser.add_argument("--fill", choices=FILLS, help="what replaces pixels outside the mask (default: reference)")
    parser.add_argument(
        "--index-file",
        help="JSON cache of the classes in each label map (read if present, else "
        "written): scanning a large dataset takes minutes",
    )
    add_device_argument(parser)
    add_dtype_argument(parser)
    parser.add_argument("--num-workers", type=int, default=4, help="data loading processes (default: %(default)s)")
    parser.add_argument("--log-interval", type=int, default=20)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    overrides = {
        k: getattr(args, k)
        for k in ("iters", "batch_size", "lr", "sample_per_class", "seed", "fill")
        if getattr(args, k) is not None
    }
    recipe = dataclasses.replace(RECIPES[args.recipe], **overrides)
    summary = tune_prompt_for_config(
        cfg,
        args.output,
        recipe,
        init=args.prompt,
        init_phrase=args.ctx_init,
        device=resolve_device(args.device),
        dtype=args.dtype,
        index_file=args.index_file,
        num_workers=args.num_workers,
        log_interval=args.log_interval,
        log=lambda record: print(json.dumps(record), flush=True),
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, extra_errors=(ValueError,)))
