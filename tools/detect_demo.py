#!/usr/bin/env python
"""Detect any classes in an image with a POMP detector and draw them with detectron2's Visualizer.

    .venv/bin/python tools/detect_demo.py \\
        --config-file detectron2_configs/Detic_LbaseI_POMP_R5021k_640b64_4x_ft4x_max-size.yaml \\
        --input photo.jpg --output detections.png --vocabulary "cat,remote control,sofa" MODEL.WEIGHTS model_final.pth
    .venv/bin/python tools/detect_demo.py --config-file detectron2_configs/POMP-Tiny-CPU.yaml \\
        --input datasets/toy/images/val_0000.png --output demo_output/toy.png --vocabulary lvis

The classes come from --vocabulary, else from the config's (TEST_)VOCABULARY. --device sets MODEL.DEVICE (a
MODEL.DEVICE pair among the trailing KEY VALUE overrides wins). Prints a JSON summary (detections kept, their
classes and scores, the output file).
"""

import argparse
import json
import sys
from pathlib import Path

from detectron2.config import get_cfg
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer

from pomp_plugins.detectron2 import add_pomp_config, config_metadata, set_vocabulary, use_pomp_names
from pomp_plugins.detectron2.cli import run_tool
from pomp_plugins.prompt.cli import (
    add_device_argument,
    add_input_argument,
    add_output_argument,
    add_vocabulary_argument,
    resolve_device,
    vocabulary_from_args,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    add_input_argument(parser)
    add_output_argument(parser, "the picture to write (PNG)")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="draw detections scoring at least this (default: %(default)s)",
    )
    add_vocabulary_argument(parser, required=False, default_help="default: the config's classes")
    add_device_argument(parser, " (sets MODEL.DEVICE)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.MODEL.DEVICE = resolve_device(args.device)
    cfg.merge_from_list(args.opts)
    cfg = use_pomp_names(cfg)  # Detic's configs work too
    cfg.freeze()
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"input image {args.input!r} does not exist")

    predictor = DefaultPredictor(cfg)
    if args.vocabulary is not None:
        metadata = set_vocabulary(predictor.model, cfg, vocabulary_from_args(args))
    else:
        metadata = config_metadata(cfg)

    image = read_image(args.input, format="BGR")
    instances = predictor(image)["instances"].to("cpu")
    instances = instances[instances.scores >= args.confidence_threshold]
    drawing = Visualizer(image[:, :, ::-1], metadata).draw_instance_predictions(instances)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    drawing.save(args.output)
    print(
        json.dumps(
            {
                "output": args.output,
                "classes": len(metadata.thing_classes),
                "detections": [
                    {"class": metadata.thing_classes[c], "score": round(float(s), 4)}
                    for c, s in zip(instances.pred_classes.tolist(), instances.scores.tolist())
                ],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
