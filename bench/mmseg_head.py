#!/usr/bin/env python
"""Cost per image of our mmseg heads against mmseg's stock heads on the same backbone features.

Pairs (each head reads random backbone features of the shape its backbone gives for an ``--size`` input):
- ``ZSSegHead`` vs ``UPerHead`` on ResNet-101 levels (strides 4-32, 256-2048 channels), as in the ZSSeg configs;
- ``TextClassifierHead`` over ``FCNHead`` vs stock ``FCNHead`` on ResNet-50-D8 (stride 8, 2048 channels), the
  drop-in example, and ``TextClassifierHead`` over ``UPerHead`` vs stock ``UPerHead`` on the ResNet-101 levels.
Class embeddings: random ``[171, D]`` COCO-Stuff embeddings from a file (``D`` of ``--clip-model``), as real ones
cost the same. Reports parameters, inference ms/image (no grad) and training ms/image (forward + loss + backward)
as JSON; the CLIP region stage (``--clip-stage``, 100 ViT crops per image) is optional, as it dominates. The labels
follow the zero-shot split (unseen classes ignored, their logits masked in training); every timed training loss is
checked to be finite (the run stops otherwise) and its last value is reported.

    python bench/mmseg_head.py --device cpu --size 256 --json bench/results/mmseg_head_cpu.json      # ~2 min, 2 cores
    python bench/mmseg_head.py --device cuda --size 512 --batch 8 --clip-stage --json bench/results/mmseg_head_h100.json
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakMemory, machine, time_call, write_result  # noqa: E402

from pomp_plugins.mmseg import load_split  # noqa: E402  (importing it registers the heads)
from pomp_plugins.prompt import get_vocabulary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZSSEG_MODEL = ROOT / "mmseg_configs" / "_base_" / "models" / "zsseg_r101c.py"
PAIRS = {  # ratio name: (our head, the stock head it is compared with)
    "zsseg_vs_uper": ("zsseg_r101", "stock_uper_r101"),
    "text_classifier_vs_fcn": ("text_classifier_fcn_r50d8", "stock_fcn_r50d8"),
    "text_classifier_vs_uper": ("text_classifier_uper_r101", "stock_uper_r101"),
}


def zsseg_head_config(text: dict, clip_stage: bool) -> dict:
    """The decode head of the ZSSeg model config (R101c levels), with our class embeddings."""
    from mmengine.config import Config

    head = Config.fromfile(str(ZSSEG_MODEL)).model.decode_head.to_dict()
    return dict(
        head, text_classifier=dict(text, temperature=100.0), clip_stage=dict(weight=0.8) if clip_stage else None
    )


def head_configs(args, embedding_file: str) -> dict:
    text = dict(
        classes="coco-stuff",
        split="coco-stuff-156-15",
        embedding_file=embedding_file,
        clip_model=args.clip_model,
        clip_pretrained="none",
    )
    bn = dict(type="BN", requires_grad=True)
    fcn = dict(
        in_channels=2048,
        in_index=3,
        channels=512,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        norm_cfg=bn,
        align_corners=False,
    )
    uper = dict(
        in_channels=[256, 512, 1024, 2048],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        norm_cfg=bn,
        align_corners=False,
    )
    return {
        "zsseg_r101": (lambda: zsseg_head_config(text, args.clip_stage), "r101"),
        "stock_uper_r101": (dict(uper, type="UPerHead", num_classes=171), "r101"),
        "text_classifier_uper_r101": (
            dict(uper, type="TextClassifierHead", head_type="UPerHead", text_classifier=text),
            "r101",
        ),
        "text_classifier_fcn_r50d8": (
            dict(fcn, type="TextClassifierHead", head_type="FCNHead", text_classifier=text),
            "r50d8",
        ),
        "stock_fcn_r50d8": (dict(fcn, type="FCNHead", num_classes=171), "r50d8"),
    }


def features(kind: str, batch: int, size: int, device: torch.device) -> list:
    if kind == "r101":
        shapes = [(256, 4), (512, 8), (1024, 16), (2048, 32)]
    else:  # ResNet-50-D8: every stage after the first at stride 8
        shapes = [(256, 4), (512, 8), (1024, 8), (2048, 8)]
    return [torch.randn(batch, c, size // s, size // s, device=device) for c, s in shapes]


def samples(batch: int, size: int, device: torch.device) -> list:
    """Random blocky COCO-Stuff label maps with the unseen classes ignored, as the zero-shot pipeline leaves them."""
    _, unseen = load_split("coco-stuff-156-15").masks(get_vocabulary("coco-stuff"))
    out = []
    for _ in range(batch):
        labels = torch.randint(0, 171, (1, size // 32, size // 32), device=device)
        labels = torch.nn.functional.interpolate(labels[None].float(), size=(size, size), mode="nearest")[0].long()
        labels[unseen.to(device)[labels]] = 255
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=labels)
        out.append(sample)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512, help="input image side")
    parser.add_argument("--batch", type=int, default=2, help="images per call (BN heads need 2 to train)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-model", default="ViT-B-16")
    parser.add_argument("--clip-stage", action="store_true", help="add ZSSeg's CLIP region stage to inference")
    parser.add_argument(
        "--heads",
        nargs="+",
        default=[
            "zsseg_r101",
            "stock_uper_r101",
            "text_classifier_uper_r101",
            "text_classifier_fcn_r50d8",
            "stock_fcn_r50d8",
        ],
        help="which heads to time (default: all)",
    )
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    register_all_modules()
    device = torch.device(args.device)
    torch.manual_seed(0)
    metas = [dict(img_shape=(args.size, args.size), pad_shape=(args.size, args.size))] * args.batch
    images = torch.rand(args.batch, 3, args.size, args.size, device=device) * 255
    gt = samples(args.batch, args.size, device)
    embedding_file = Path(tempfile.mkdtemp()) / "coco_stuff_random.npy"
    dim = open_clip.get_model_config(args.clip_model)["embed_dim"]
    np.save(embedding_file, torch.randn(171, dim).numpy())
    calls, train_losses = {}, {}
    configs = head_configs(args, str(embedding_file))
    unknown = set(args.heads) - set(configs)
    if unknown:
        parser.error(f"unknown heads {sorted(unknown)}; known: {sorted(configs)}")
    for name in args.heads:
        cfg, kind = configs[name]
        head = MODELS.build(cfg() if callable(cfg) else cfg).to(device)
        feats = features(kind, args.batch, args.size, device)
        extra = {"images": images} if name.startswith("zsseg") else {}

        @torch.no_grad()
        def infer(head=head, feats=feats, extra=extra):
            head.eval()
            return head.predict(feats, metas, None, **extra)

        def train_step(head=head, feats=feats, name=name):
            head.train()
            losses = head.loss(feats, gt, None)
            total = sum(v for k, v in losses.items() if "loss" in k)
            if not torch.isfinite(total):
                raise FloatingPointError(f"{name}: the training loss is {float(total)} ({losses})")
            total.backward()
            train_losses[name] = float(total.detach())

        calls[name] = (head, infer, train_step)

    # Rounds visit every head in turn, so a change of machine load hits all of them alike. Per head: the median and
    # the fastest round (the least disturbed by other processes; the ratios use it).
    results = {}
    for name, (head, infer, train_step) in calls.items():
        with PeakMemory(device) as infer_memory:
            infer()
        with PeakMemory(device) as train_memory:
            train_step()
        results[name] = {
            "params_m": sum(p.numel() for p in head.parameters()) / 1e6,
            "infer_peak_gib": infer_memory.gib,
            "train_peak_gib": train_memory.gib,
        }
    times = {name: {"infer": [], "train": []} for name in calls}
    for _ in range(args.repeats):
        for name, (_, infer, train_step) in calls.items():
            times[name]["infer"].append(time_call(infer, device, repeats=1, warmup=0))
            times[name]["train"].append(time_call(train_step, device, repeats=1, warmup=0))
    for name, measured in times.items():
        for kind, values in measured.items():
            results[name][f"{kind}_ms_per_image"] = 1000 * float(np.median(values)) / args.batch
            results[name][f"{kind}_ms_per_image_fastest"] = 1000 * min(values) / args.batch
        results[name]["last_train_loss"] = train_losses[name]

    result = {
        "benchmark": "mmseg_head",
        "machine": machine(device),
        "input": [args.batch, 3, args.size, args.size],
        "classes": 171,
        "clip_stage": args.clip_stage,
        "all_train_losses_finite": True,  # train_step raises on the first non-finite loss
        "heads": results,
        "ratios": {
            f"{pair}_{kind}": results[ours][f"{kind}_ms_per_image_fastest"]
            / results[stock][f"{kind}_ms_per_image_fastest"]
            for pair, (ours, stock) in PAIRS.items()
            if ours in results and stock in results
            for kind in ("infer", "train")
        },
    }
    write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
