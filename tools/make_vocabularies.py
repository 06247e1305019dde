#!/usr/bin/env python
"""Write pomp_plugins/data/vocabularies.json from the toolkits that ship the class lists.

The prompt core must not import detectron2 or mmseg, so it reads this stored copy; tests/test_vocabularies.py
checks that the copy still equals what this script collects.
"""
import json

from pomp_plugins.prompt.vocabularies import STORED_VOCABULARIES


def _entry(keys, **extra) -> dict:
    return {"keys": list(keys), "names": [k.strip().replace("_", " ") for k in keys], **extra}


def collect() -> dict:
    """Vocabulary name -> {"keys", "names", optional "frequency"/"synonyms", "source"}."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
    from mmseg.datasets import ADE20KDataset, COCOStuffDataset, PascalContextDataset59, PascalVOCDataset

    lvis = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
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
    }


if __name__ == "__main__":
    STORED_VOCABULARIES.write_text(json.dumps(collect(), indent=1) + "\n")
    print(f"wrote {STORED_VOCABULARIES}")
