#!/usr/bin/env python
"""Inference cost of the POMP zero-shot box classifier against detectron2's linear one, and the vocabulary swap.

Both ROI heads are built from detectron2_configs/Base-C2_L_R5021k_640b64_4x.yaml (Detic's: P3-P5 pooling, 2 FC of
1024, LVIS's 1,203 classes, sigmoid scores), once with detectron2's own heads (linear ``cls_score`` and box
regression) and once with ours (Detic's: zero-shot ``cls_score``, MLP box regression), and run in
eval mode on the same random FPN features and proposals of one image. Timed: the whole ROI-head forward
(pooling, box heads, predictors of every stage, scores, boxes, per-class NMS) with the score threshold above any
sigmoid score, so the NMS workload (which depends on trained scores) is empty for both; the mask head is off (it
is the same in both and would only dilute the difference). Also timed: the classifier layers alone, and the
vocabulary swap, from precomputed embeddings and from class names through CLIP (random ViT-B-16 weights, cold and
warm embedding cache). Prints JSON.

    python bench/detectron2_head.py --device cpu --threads 1 \\
        --json bench/results/detectron2_head_cpu_x86_64-1thread.json
    python bench/detectron2_head.py --device cuda --proposals 1000
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads
from detectron2.structures import Boxes, Instances

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, time_call, write_result  # noqa: E402

from pomp_plugins.detectron2 import add_pomp_config, set_class_embeddings, set_vocabulary  # noqa: E402
from pomp_plugins.prompt import PromptedTextEncoder, get_vocabulary, load_clip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STRIDES = {"p3": 8, "p4": 16, "p5": 32}


def config(heads: str, device: str, embedding_file: str):
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_file(str(ROOT / "detectron2_configs" / "Base-C2_L_R5021k_640b64_4x.yaml"))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.MASK_ON = False
    cfg.MODEL.ROI_HEADS.NAME = heads
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 1.0  # no sigmoid score exceeds it: an empty NMS for both heads
    cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False  # training only
    cfg.MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS = True
    cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH = embedding_file
    cfg.MODEL.POMP.VOCABULARY = ""  # the training classifier from the .npy
    cfg.MODEL.POMP.PROMPT = ""  # swaps use the hard prompt: no prompt file needed
    cfg.MODEL.POMP.CLIP_PRETRAINED = "none"
    return cfg


def interleaved(calls: dict, device: torch.device, rounds: int) -> dict:
    """Median milliseconds of every ``calls[kind][part]``, timed in alternation round after round, so that load
    from other processes falls on all of them alike."""
    times = {kind: {part: [] for part in parts} for kind, parts in calls.items()}
    for round in range(rounds + 2):  # the first two rounds warm up
        for kind, parts in calls.items():
            for part, fn in parts.items():
                seconds = time_call(fn, device, 1, warmup=0)
                if round >= 2:
                    times[kind][part].append(seconds)
    return {kind: {part: 1e3 * float(np.median(t)) for part, t in parts.items()} for kind, parts in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--proposals", type=int, default=1000, help="proposals of the image (detectron2: 1000)")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (median)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (1 on a shared machine: busy cores make every multi-threaded op wait)",
    )
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["POMP_CACHE_DIR"] = str(Path(tmp) / "cache")  # a cold cache for the swap timing
        embedding_file = str(Path(tmp) / "lvis.npy")
        np.save(embedding_file, (np.random.default_rng(0).standard_normal((1203, 512)) * 10).astype(np.float16))

        features = {
            k: torch.randn(1, 256, args.height // s, args.width // s, device=device) for k, s in STRIDES.items()
        }
        shapes = {k: ShapeSpec(channels=256, stride=s) for k, s in STRIDES.items()}
        xy = torch.rand(args.proposals, 2, device=device) * torch.tensor(
            [args.width * 0.8, args.height * 0.8], device=device
        )
        wh = torch.rand(args.proposals, 2, device=device) * 200 + 8
        proposals = Instances((args.height, args.width))
        proposals.proposal_boxes = Boxes(torch.cat([xy, (xy + wh).clamp(max=args.width)], dim=1))
        proposals.objectness_logits = torch.rand(args.proposals, device=device)  # CenterNet's: probabilities

        result = {
            "benchmark": "detectron2_head",
            "machine": machine(device),
            "proposals": args.proposals,
            "image": [args.height, args.width],
            "classes": 1203,
            "embedding_dim": 512,
        }
        for name, (stock_name, ours_name) in {
            "cascade_3_stages": ("CascadeROIHeads", "PompCascadeROIHeads"),
            "standard": ("StandardROIHeads", "PompStandardROIHeads"),
        }.items():
            calls = {}
            for kind, heads in (("linear", stock_name), ("zero_shot", ours_name)):
                roi_heads = build_roi_heads(config(heads, args.device, embedding_file), shapes).to(device).eval()
                classifier = (
                    roi_heads.box_predictor[0].cls_score
                    if name.startswith("cascade")
                    else roi_heads.box_predictor.cls_score
                )
                region_features = torch.randn(args.proposals, 1024, device=device)
                calls[kind] = {
                    "roi_heads_ms": lambda h=roi_heads: h(None, features, [proposals]),
                    "classifier_ms": lambda c=classifier, x=region_features: c(x),
                }
            with torch.no_grad():
                timings = interleaved(calls, device, args.repeats)
            timings["zero_shot_overhead_of_roi_heads"] = (
                timings["zero_shot"]["roi_heads_ms"] / timings["linear"]["roi_heads_ms"] - 1
            )
            result[name] = timings

        # Vocabulary swap on the cascade (3 stages): from embeddings, and from names through CLIP (ViT-B-16 with
        # random weights): its parts (CLIP build, text encoding) and end to end through the embedding cache.
        cfg = config("PompCascadeROIHeads", args.device, embedding_file)
        model = torch.nn.Module()
        model.roi_heads = build_roi_heads(cfg, shapes).to(device)
        coco = torch.randn(80, 512)
        swap = {"from_embeddings_ms": 1e3 * time_call(lambda: set_class_embeddings(model, coco), device, args.repeats)}
        clip = {}
        swap["clip_build_ms"] = 1e3 * time_call(
            lambda: clip.update(c=load_clip("ViT-B-16", None, device)), device, 1, warmup=0
        )
        encoder = PromptedTextEncoder.from_clip(clip["c"].model, init="a photo of a")
        for vocabulary in ("coco", "lvis"):
            names = get_vocabulary(vocabulary).names
            with torch.no_grad():
                swap[f"encode_{vocabulary}_{len(names)}_names_ms"] = 1e3 * time_call(
                    lambda names=names: encoder.encode_names(names), device, 1, warmup=1
                )
        for cache in ("cold_cache", "warm_cache"):  # warm: CLIP is still built, to fingerprint it for the cache key
            swap[f"coco_end_to_end_{cache}_ms"] = 1e3 * time_call(
                lambda: set_vocabulary(model, cfg, "coco"), device, 1, warmup=0
            )
        result["vocabulary_swap"] = swap

    write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
