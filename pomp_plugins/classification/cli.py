"""``tools/eval_zeroshot.py``: zero-shot accuracy of a CLIP with a prompt on an ImageFolder-style dataset."""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from ..images.accuracy import evaluate
from ..images.folder import ImageFolderIndex, ImageListDataset, collate_skipping
from ..prompt.cache import EmbeddingCache
from ..prompt.cli import (
    IMAGE_FOLDER_CLASSES_HELP,
    add_clip_arguments,
    add_json_argument,
    add_prompt_arguments,
    add_vocabulary_argument,
    clip_pretrained,
    describe_text,
    image_folder_classes,
    prompt_from_args,
    resolve_device,
    write_json,
)
from ..prompt.embedder import class_embeddings, load_for_prompt

EXAMPLES = """examples:
  eval_zeroshot.py --data DATA/val --vocabulary imagenet21k-p --prompt prompts/pomp_vit_b16_ctx4.pt \\
      --json results.json
  eval_zeroshot.py --data my_images --vocabulary names.txt --clip-model ViT-B-16 --templates openai
  eval_zeroshot.py --data DATA/val --vocabulary imagenet1k --prompt \\
      hf-hub:ShuhuaiRen/POMP-ViT-Base-32/vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar

The CLIP (model, weights, activation) is the one the prompt file records unless --clip-model/--clip-pretrained
say otherwise (then with a warning).
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Zero-shot classification accuracy (top-1, top-5, mean per class) of a CLIP with a POMP prompt, "
        "a hard prompt (default: 'a photo of a {name}.') or OpenAI's 80-template ensemble, on an "
        "ImageFolder-style dataset (DATA/<class>/<images>).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="the folder to evaluate: one sub-folder of images per class")
    add_vocabulary_argument(parser, required=False, default_help=IMAGE_FOLDER_CLASSES_HELP)
    parser.add_argument(
        "--allow-unnamed",
        action="store_true",
        help="name a class folder that has no name by the folder name (with a warning) instead of "
        "stopping with an error",
    )
    add_clip_arguments(parser)
    add_prompt_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=4, help="image-decoding processes (0: in the main process)")
    parser.add_argument(
        "--limit-per-class",
        type=int,
        default=None,
        help="evaluate at most this many images per class (a fixed, seeded choice)",
    )
    add_json_argument(parser, help="also write the results (with per-class top-1) as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def limit_per_class(paths: list[str], labels: list[int], limit: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """At most ``limit`` images of each class, the same seeded choice on every run."""
    by_class: dict[int, list[str]] = {}
    for path, label in zip(paths, labels):
        by_class.setdefault(label, []).append(path)
    kept = [
        (path, label)
        for label, files in sorted(by_class.items())
        for path in sorted(random.Random(f"{seed}:{label}").sample(files, min(limit, len(files))))
    ]
    return [p for p, _ in kept], [label for _, label in kept]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    vocabulary, names_file = image_folder_classes(args.vocabulary)
    dataset_tree = ImageFolderIndex.scan(args.data, vocabulary, names_file, args.allow_unnamed)
    paths, labels = dataset_tree.paths, dataset_tree.labels
    if args.limit_per_class:
        paths, labels = limit_per_class(paths, labels, args.limit_per_class)
    if not paths:
        raise FileNotFoundError(f"{args.data} has class folders but no images")

    device = resolve_device(args.device)
    text = prompt_from_args(args)
    clip, prompt = load_for_prompt(text["prompt"], args.clip_model, clip_pretrained(args), device, args.dtype)
    print(clip.describe(), file=sys.stderr)
    described = describe_text(text)
    text_features = class_embeddings(
        dataset_tree.names,
        clip=clip,
        cache=EmbeddingCache(),
        progress=not args.no_progress,
        **(text | {"prompt": prompt}),
    ).to(clip.model.logit_scale.device)

    loader = DataLoader(
        ImageListDataset(paths, labels, clip.preprocess),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collate_skipping,
        pin_memory=torch.device(device).type == "cuda",
    )
    counts, skipped = evaluate(clip, text_features, loader, progress=not args.no_progress, total=len(loader))

    per_class = counts.per_class()
    result = {
        **counts.summary(),
        "skipped_images": len(skipped),
        "skipped_paths": skipped,
        "empty_classes": dataset_tree.empty_classes,
        "data": str(args.data),
        "prompt": described,
        "clip_model": clip.name,
        "clip_pretrained": clip.pretrained,
        "clip_activation": clip.activation,
        "per_class_top1": {
            key: None if acc != acc else 100.0 * acc for key, acc in zip(dataset_tree.keys, per_class.tolist())
        },
    }
    print(
        f"{clip.name} + {described} on {args.data}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
        f"mean per class {result['mean_per_class']:.2f}%  ({result['images']} images, {result['classes']} classes"
        + (f", {len(skipped)} unreadable images skipped" if skipped else "")
        + ")"
    )
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable images, e.g. {skipped[:3]}", file=sys.stderr)
    write_json(args.json, json.dumps(result, indent=2) + "\n")
    return 0
