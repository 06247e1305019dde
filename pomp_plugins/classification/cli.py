"""``tools/eval_zeroshot.py``: zero-shot accuracy of a CLIP with a prompt on an ImageFolder-style dataset."""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..images.accuracy import evaluate
from ..images.folder import ImageFolderIndex, ImageListDataset, collate_skipping
from ..prompt.cache import EmbeddingCache
from ..prompt.cli import add_clip_arguments, add_prompt_arguments, add_vocabulary_arguments, clip_pretrained
from ..prompt.embedder import DEFAULT_HARD_PROMPT, class_embeddings, load_for_prompt
from ..prompt.templates import TEMPLATE_SETS
from ..prompt.vocabularies import resolve_vocabulary

EXAMPLES = """examples:
  eval_zeroshot.py --data imagenet21k_resized/imagenet21k_val --vocabulary imagenet21k-p \\
      --prompt output/pomp/prompt.pt --device cuda --out results.json
  eval_zeroshot.py --data my_images --names-file names.txt --clip-model ViT-B-16 --templates openai
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
    add_vocabulary_arguments(parser, required=False)
    parser.add_argument(
        "--allow-unnamed",
        action="store_true",
        help="name a class folder that has no name by the folder name (with a warning) instead of "
        "stopping with an error",
    )
    add_clip_arguments(parser)
    add_prompt_arguments(parser, hard_prompt_default=DEFAULT_HARD_PROMPT)
    parser.add_argument(
        "--templates",
        choices=sorted(TEMPLATE_SETS),
        help="use a template ensemble instead of one prompt: 'openai' = the 80 templates of "
        "OpenAI's ImageNet zero-shot classifier",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=4, help="image-decoding processes (0: in the main process)")
    parser.add_argument(
        "--limit-per-class",
        type=int,
        default=None,
        help="evaluate at most this many images per class (a fixed, seeded choice)",
    )
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.templates and args.prompt:
        parser.error("--templates and --prompt exclude each other")
    return args


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
    vocabulary = None
    if args.vocabulary or args.names:
        vocabulary = resolve_vocabulary(args.vocabulary, args.names)
    dataset_tree = ImageFolderIndex.scan(args.data, vocabulary, args.names_file, args.allow_unnamed)
    paths, labels = dataset_tree.paths, dataset_tree.labels
    if args.limit_per_class:
        paths, labels = limit_per_class(paths, labels, args.limit_per_class)
    if not paths:
        raise FileNotFoundError(f"{args.data} has class folders but no images")

    clip, prompt = load_for_prompt(args.prompt, args.clip_model, clip_pretrained(args), args.device, args.dtype)
    print(clip.describe(), file=sys.stderr)
    if args.templates:
        prompt_kwargs, described = {"templates": args.templates}, f"{args.templates} template ensemble"
    elif prompt is not None:
        prompt_kwargs, described = {"prompt": prompt}, f"prompt file {args.prompt}"
    else:
        prompt_kwargs, described = {"hard_prompt": args.hard_prompt}, f"hard prompt '{args.hard_prompt} {{name}}.'"
    text_features = class_embeddings(
        dataset_tree.names, clip=clip, cache=EmbeddingCache(), progress=not args.no_progress, **prompt_kwargs
    ).to(clip.model.logit_scale.device)

    loader = DataLoader(
        ImageListDataset(paths, labels, clip.preprocess),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collate_skipping,
        pin_memory=torch.device(args.device).type == "cuda",
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
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
