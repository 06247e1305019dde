#!/usr/bin/env python
"""Segment an image with any vocabulary: a colour-coded PNG with a legend (mmseg's SegLocalVisualizer).

    .venv/bin/python tools/segment_demo.py mmseg_configs/zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py \\
        CHECKPOINT --input street.jpg --vocabulary "car,bus,road,tree,sky,person" --output street_seg.png
    .venv/bin/python tools/segment_demo.py CONFIG CHECKPOINT --input x.jpg --vocabulary ade20k --output x_seg.png

Without --vocabulary the config's classes are used. A new vocabulary has no seen/unseen
split, so a CLIP stage weighs every class as unseen (as ZSSeg does). Prints JSON: the classes found and the
fraction of the image each covers.
"""

import argparse
import colorsys
import json
import sys

import mmcv
import numpy as np
from mmengine.config import Config, DictAction
from mmseg.apis import inference_model, init_model
from mmseg.visualization import SegLocalVisualizer

from pomp_plugins.mmseg import text_classifier_of
from pomp_plugins.prompt import VOCABULARY_NAMES
from pomp_plugins.prompt.cli import (
    add_device_argument,
    add_input_argument,
    add_output_argument,
    add_vocabulary_argument,
    resolve_device,
    run_tool,
    vocabulary_from_args,
)

LEGEND_ROW = 22  # pixels per legend entry


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="mmseg config with a ZSSegHead or TextClassifierHead")
    parser.add_argument("checkpoint", help="checkpoint file")
    add_input_argument(parser)
    add_output_argument(parser, "the picture to write (PNG): the segmentation and its legend")
    add_vocabulary_argument(parser, required=False, default_help="default: the config's classes")
    add_device_argument(parser)
    parser.add_argument("--opacity", type=float, default=0.6, help="opacity of the colour overlay, 0..1")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys")
    return parser.parse_args(argv)


def palette(count: int) -> list[list[int]]:
    """``count`` distinct RGB colours (hues spread by the golden ratio)."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    return [[int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)] for h in hues]


def draw_legend(visualizer: SegLocalVisualizer, height: int, entries: list[tuple[str, list[int]]]) -> np.ndarray:
    """A white ``[max(height, rows), width, 3]`` RGB panel with one colour swatch and label per entry."""
    width = 16 + 9 * max((len(text) for text, _ in entries), default=10) + 30
    canvas = np.full((max(height, LEGEND_ROW * len(entries) + 8), width, 3), 255, np.uint8)
    visualizer.set_image(canvas)
    if entries:
        tops = 6 + LEGEND_ROW * np.arange(len(entries))
        boxes = np.stack([np.full_like(tops, 6), tops, np.full_like(tops, 22), tops + 16], axis=1)
        colours = [tuple(colour) for _, colour in entries]
        visualizer.draw_bboxes(boxes, edge_colors="black", face_colors=colours, alpha=1.0)
        visualizer.draw_texts(
            [text for text, _ in entries],
            np.stack([np.full_like(tops, 28), tops], axis=1),
            colors="black",
            font_sizes=10,
        )
    return visualizer.get_image()


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    text_classifier = cfg.model.decode_head.get("text_classifier")
    if text_classifier is None:
        raise ValueError(f"{args.config}: the decode head has no text_classifier (use ZSSegHead or TextClassifierHead)")
    if args.vocabulary is not None:
        vocabulary = vocabulary_from_args(args)
        named = args.vocabulary.strip() in VOCABULARY_NAMES  # by name, the head keeps mmseg's class keys
        text_classifier.update(classes=vocabulary.name if named else list(vocabulary.keys), split=None)
    model = init_model(cfg, args.checkpoint, device=resolve_device(args.device))
    names = list(text_classifier_of(model.decode_head).vocabulary.names)

    result = inference_model(model, args.input)
    image = mmcv.imread(args.input, channel_order="rgb")
    colours = palette(len(names))
    visualizer = SegLocalVisualizer(name="pomp_segment_demo", alpha=args.opacity)
    visualizer.set_dataset_meta(classes=names, palette=colours)
    visualizer.add_datasample("prediction", image, result, draw_gt=False, with_labels=False)
    overlay = visualizer.get_image()

    labels = result.pred_sem_seg.data[0].cpu().numpy()
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)
    found = {names[i]: round(float(c) / labels.size, 4) for i, c in zip(ids[order], counts[order])}
    legend = draw_legend(
        visualizer, overlay.shape[0], [(f"{names[i]} {100 * found[names[i]]:.0f}%", colours[i]) for i in ids[order]]
    )
    canvas = np.full((legend.shape[0], overlay.shape[1] + legend.shape[1], 3), 255, np.uint8)
    canvas[: overlay.shape[0], : overlay.shape[1]] = overlay
    canvas[:, overlay.shape[1] :] = legend
    mmcv.imwrite(canvas[..., ::-1], args.output)  # mmcv writes BGR
    print(json.dumps({"output": args.output, "classes": len(names), "found": found}))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
