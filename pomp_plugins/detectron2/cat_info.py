"""Write Detic's class-frequency file (``MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH``) of a training json::

    python -m pomp_plugins.detectron2.cat_info datasets/lvis/lvis_v1_train.json \\
        -o datasets/metadata/lvis_v1_train_cat_info.json

The output is Detic's ``lvis_v1_train_cat_info.json`` format: the json's categories, each with ``image_count`` and
``instance_count`` counted from its annotations. Use the FULL training set (Detic's federated loss samples rare
classes as negatives by these counts, also when training on LVIS base); for OV-COCO, the seen-classes json gives
the unseen classes a zero count, which ``MODEL.ROI_BOX_HEAD.IGNORE_ZERO_CATS`` then leaves out of the loss.
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import run_tool
from .data import write_cat_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="an LVIS- or COCO-format json with annotations")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="output file (default: JSON with _cat_info.json in place of .json, as Detic names it)",
    )
    args = parser.parse_args(argv)
    output = args.output or args.json[: -len(".json")] + "_cat_info.json"
    info = write_cat_info(args.json, output)
    print(
        json.dumps(
            {"output": output, "categories": len(info), "zero_image_count": sum(c["image_count"] == 0 for c in info)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
