#!/usr/bin/env python
"""Write pomp_plugins/data/vocabularies.json from the toolkits that ship the class lists, or compare our
ImageNet-21K-P names with the reference's.

    .venv/bin/python tools/make_vocabularies.py
    .venv/bin/python tools/make_vocabularies.py --compare-imagenet21k-p imagenet21k_miil_tree.pth

The prompt core must not import detectron2 or mmseg, so it reads the stored copy; tests/test_vocabularies.py
checks that the copy still equals what this script collects.

The POMP reference names the ImageNet-21K-P classes by ``class_description`` of Alibaba-MIIL's semantic tree
(``imagenet21k_miil_tree.pth``, winter'21), with ``_`` turned into spaces. ``--compare-imagenet21k-p`` reads
that tree (or datadings' ``ImageNet21k_synsets.json.xz``, the same tree as JSON) and lists every class whose
prompt name differs from ours.
"""

import argparse
import json
import lzma
import sys
from pathlib import Path

from pomp_plugins.prompt.safe_load import safe_torch_load
from pomp_plugins.prompt.vocabularies import STORED_VOCABULARIES, get_vocabulary


def _entry(keys, **extra) -> dict:
    return {"keys": list(keys), "names": [k.strip().replace("_", " ") for k in keys], **extra}


def collect() -> dict:
    """Vocabulary name -> {"keys", "names", optional "frequency"/"synonyms", "source"}."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
    from mmseg.datasets import ADE20KDataset, COCOStuffDataset, PascalContextDataset59, PascalVOCDataset

    lvis = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
    from centernet.data.datasets.objects365 import categories_v1

    voc = [c for c in PascalVOCDataset.METAINFO["classes"] if c != "background"]
    return {
        "lvis": _entry(
            [c["name"] for c in lvis],
            frequency=[c["frequency"] for c in lvis],
            synonyms=[c["synonyms"] for c in lvis],
            source="detectron2.data.datasets.lvis_v1_categories.LVIS_CATEGORIES",
        ),
        "coco": _entry(
            [c["name"] for c in COCO_CATEGORIES if c["isthing"]],
            source="detectron2.data.datasets.builtin_meta.COCO_CATEGORIES (things)",
        ),
        "coco-stuff": _entry(COCOStuffDataset.METAINFO["classes"], source="mmseg COCOStuffDataset.METAINFO"),
        "voc": _entry(voc, source="mmseg PascalVOCDataset.METAINFO without background"),
        "ade20k": _entry(ADE20KDataset.METAINFO["classes"], source="mmseg ADE20KDataset.METAINFO"),
        "pascal-context": _entry(
            PascalContextDataset59.METAINFO["classes"], source="mmseg PascalContextDataset59.METAINFO"
        ),
        "objects365": _entry(
            [c["name"] for c in sorted(categories_v1, key=lambda c: c["id"])],
            source="centernet.data.datasets.objects365.categories_v1 (Objects365 v1)",
        ),
    }


def reference_imagenet21k_names(path: Path) -> dict:
    """WordNet id -> the reference's prompt name: the tree's ``class_description`` with ``_`` as spaces
    (``trainers/pomp.py`` does that replacement). ``path``: the MIIL tree (``.pth``, read without running any
    pickled code) or datadings' JSON copy (``.json`` / ``.json.xz``)."""
    if path.suffix == ".xz":
        with lzma.open(path, "rt", encoding="utf-8") as f:
            tree = json.load(f)
    elif path.suffix == ".json":
        tree = json.loads(path.read_text())
    else:
        tree = safe_torch_load(path)
    descriptions = tree.get("class_description") if isinstance(tree, dict) else None
    if not isinstance(descriptions, dict):
        raise ValueError(f"{path}: expected a semantic tree with a 'class_description' dict")
    return {wnid: str(text).replace("_", " ") for wnid, text in descriptions.items()}


def compare_imagenet21k_p(path: Path) -> list:
    """``(wnid, ours, reference)`` for every class where our ``imagenet21k-p`` name (or class set) differs."""
    reference = reference_imagenet21k_names(path)
    ours = dict(zip(get_vocabulary("imagenet21k-p").keys, get_vocabulary("imagenet21k-p").names))
    return [
        (wnid, ours.get(wnid), reference.get(wnid))
        for wnid in sorted(set(ours) | set(reference))
        if ours.get(wnid) != reference.get(wnid)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--compare-imagenet21k-p",
        metavar="TREE",
        type=Path,
        help="compare our imagenet21k-p names with this MIIL tree / datadings JSON instead",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=STORED_VOCABULARIES,
        metavar="PATH",
        help="the vocabularies file to write (default: the package's pomp_plugins/data/vocabularies.json)",
    )
    args = parser.parse_args(argv)
    if args.compare_imagenet21k_p:
        differences = compare_imagenet21k_p(args.compare_imagenet21k_p)
        for wnid, ours, reference in differences:
            print(f"{wnid}\tours: {ours!r}\treference: {reference!r}")
        print(f"{len(differences)} of {len(get_vocabulary('imagenet21k-p'))} classes differ")
        return 1 if differences else 0
    args.output.write_text(json.dumps(collect(), indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
