"""Zero-shot splits as data, class lists from configs and datasets, and the unseen-pixel transform."""

import numpy as np
import pytest
from mmseg.datasets import ADE20KDataset, COCOStuffDataset, PascalVOCDataset

from pomp_plugins.mmseg import IgnoreUnseenClasses, available_splits, load_split, resolve_classes
from pomp_plugins.prompt import VocabularyError, get_vocabulary

# ZegFormer / ZSSeg's 15 unseen COCO-Stuff classes and ZS3Net / ZSSeg's 5 unseen VOC classes, typed from the papers.
COCO_STUFF_UNSEEN = {
    "frisbee",
    "skateboard",
    "cardboard",
    "carrot",
    "scissors",
    "suitcase",
    "giraffe",
    "cow",
    "road",
    "wall-concrete",
    "tree",
    "grass",
    "river",
    "clouds",
    "playingfield",
}
VOC_UNSEEN = {"pottedplant", "sheep", "sofa", "train", "tvmonitor"}


def test_shipped_splits_match_the_papers_and_mmseg_class_names():
    assert {"coco-stuff-156-15", "voc-15-5"} <= set(available_splits())
    coco = load_split("coco-stuff-156-15")
    assert set(coco.unseen) == COCO_STUFF_UNSEEN and len(coco.seen) == 156
    assert set(coco.seen) | set(coco.unseen) == set(COCOStuffDataset.METAINFO["classes"])
    voc = load_split("voc-15-5")
    assert set(voc.unseen) == VOC_UNSEEN and len(voc.seen) == 15
    assert set(voc.seen) | set(voc.unseen) == set(PascalVOCDataset.METAINFO["classes"]) - {"background"}


def test_split_masks_follow_vocabulary_order():
    vocabulary = get_vocabulary("voc")
    seen, unseen = load_split("voc-15-5").masks(vocabulary)
    assert [vocabulary.keys[i] for i in np.flatnonzero(unseen.numpy())] == [
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ]
    assert (seen ^ unseen).all()


def test_classes_from_dataset_metainfo_keep_keys_and_clean_prompt_names():
    vocabulary = resolve_classes(dict(dataset="ADE20KDataset"))
    assert vocabulary.keys == tuple(ADE20KDataset.METAINFO["classes"])
    assert vocabulary.names[vocabulary.keys.index("bed ")] == "bed"
    assert resolve_classes(["cat", "dog"]).names == ("cat", "dog")


def test_bad_classes_and_splits_are_named():
    with pytest.raises(VocabularyError, match="no class names"):
        resolve_classes(None)
    with pytest.raises(VocabularyError, match="not registered"):
        resolve_classes(dict(dataset="NoSuchDataset"))
    with pytest.raises(VocabularyError, match=r"\['unicorn'\] are not in vocabulary"):
        load_split(dict(unseen=["unicorn"])).masks(get_vocabulary("voc"))
    with pytest.raises(VocabularyError, match="unknown split"):
        load_split("no-such-split")


def test_ignore_unseen_classes_sets_unseen_pixels_to_ignore():
    transform = IgnoreUnseenClasses(split="voc-15-5")
    vocabulary = get_vocabulary("voc")
    labels = np.array(
        [
            [vocabulary.index("sheep"), vocabulary.index("cat"), 255],
            [vocabulary.index("sofa"), vocabulary.index("person"), vocabulary.index("tvmonitor")],
        ],
        np.uint8,
    )
    out = transform(dict(gt_seg_map=labels.copy()))["gt_seg_map"]
    expected = np.array([[255, vocabulary.index("cat"), 255], [255, vocabulary.index("person"), 255]], np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8
