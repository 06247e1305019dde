import hashlib
import importlib.util
import json
import lzma
from pathlib import Path

import pytest
import torch

from pomp_plugins.prompt import VOCABULARY_NAMES, VocabularyError, custom_vocabulary, get_vocabulary, parse_vocabulary
from pomp_plugins.prompt.vocabularies import STORED_VOCABULARIES

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    "imagenet21k-p": 10_450,
    "imagenet21k": 21_843,
    "imagenet1k": 1000,
    "lvis": 1203,
    "coco": 80,
    "coco-stuff": 171,
    "voc": 20,
    "ade20k": 150,
    "pascal-context": 59,
    "objects365": 365,
}


@pytest.mark.parametrize("name", VOCABULARY_NAMES)
def test_named_vocabularies_have_their_published_sizes(name):
    vocabulary = get_vocabulary(name)
    assert len(vocabulary) == SIZES[name] == len(vocabulary.keys) == len(set(vocabulary.keys))
    assert all(n and n == n.strip() for n in vocabulary.names)


def test_stored_copies_equal_their_sources():
    """data/vocabularies.json must be exactly what detectron2 and mmseg ship today."""
    spec = importlib.util.spec_from_file_location("make_vocabularies", ROOT / "tools" / "make_vocabularies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(STORED_VOCABULARIES.read_text()) == json.loads(json.dumps(module.collect()))


def test_imagenet_names_come_from_wordnet_lemmas():
    vocabulary = get_vocabulary("imagenet21k-p")
    assert vocabulary.keys[0] == "n00005787" and vocabulary.names[0] == "benthos"
    assert get_vocabulary("imagenet1k").names[0] == "tench"


def test_lvis_carries_frequency_and_synonyms():
    lvis = get_vocabulary("lvis")
    assert lvis.keys[0] == "aerosol_can" and lvis.names[0] == "aerosol can"
    assert set(lvis.frequency) == {"r", "c", "f"} and lvis.frequency.count("r") == 337
    assert lvis.synonyms[0] == ("aerosol_can", "spray_can")
    assert lvis.index("aerosol_can") == 0 and lvis.index("aerosol can") == 0


def test_custom_lists_and_their_errors(tmp_path):
    assert custom_vocabulary([" cat", "dog "]).names == ("cat", "dog")
    with pytest.raises(VocabularyError, match="empty"):
        custom_vocabulary([])
    with pytest.raises(VocabularyError, match=r"empty class name at position\(s\) \[1\]"):
        custom_vocabulary(["cat", " "])
    with pytest.raises(VocabularyError, match=r"'cat' appears twice \(positions 0 and 2\)"):
        parse_vocabulary("cat,dog,cat")
    with pytest.raises(VocabularyError, match="unknown vocabulary 'imagenet42k'"):
        get_vocabulary("imagenet42k")
    names_json = tmp_path / "names.json"
    names_json.write_text('["a", "b"]')
    assert parse_vocabulary(str(names_json)).names == ("a", "b")
    names_json.write_text('{"a": 1}')
    with pytest.raises(VocabularyError, match="JSON list"):
        parse_vocabulary(names_json)


# sha256 of "wnid<TAB>name" lines, in class order, of the reference's ImageNet-21K-P prompt names: Alibaba-MIIL's
# winter'21 semantic tree ``class_description`` (as datadings 3.4.7 ships it in ImageNet21k_synsets.json.xz) with
# "_" replaced by " ", as the reference's trainers/pomp.py does before building prompts.
REFERENCE_IMAGENET21K_P_SHA256 = "460bd47b3b2b59b69def768f8ca53b125d3d4361e71af889076461b69788ef3b"


def test_imagenet21k_p_names_are_the_references():
    vocabulary = get_vocabulary("imagenet21k-p")
    lines = "\n".join(f"{key}\t{name}" for key, name in zip(vocabulary.keys, vocabulary.names))
    assert hashlib.sha256(lines.encode()).hexdigest() == REFERENCE_IMAGENET21K_P_SHA256
    # class_description 'rock_climbing', 'water_sport', 'person' -> the reference's prompt names
    for wnid, name in [("n00326094", "rock climbing"), ("n00441824", "water sport"), ("n00007846", "person")]:
        assert vocabulary.names[vocabulary.index(wnid)] == name
    assert len(set(vocabulary.names)) == 9_696  # 661 names stand for more than one class, as in the reference


def test_compare_with_a_reference_tree(tmp_path):
    spec = importlib.util.spec_from_file_location("make_vocabularies", ROOT / "tools" / "make_vocabularies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vocabulary = get_vocabulary("imagenet21k-p")
    descriptions = {key: name.replace(" ", "_") for key, name in zip(vocabulary.keys, vocabulary.names)}
    tree = tmp_path / "imagenet21k_miil_tree.pth"
    torch.save({"class_description": descriptions, "class_tree_list": [[0]] * len(descriptions)}, tree)
    assert module.compare_imagenet21k_p(tree) == []
    descriptions["n00326094"] = "rock_climb"
    del descriptions["n00007846"]
    as_json = tmp_path / "ImageNet21k_synsets.json.xz"
    with lzma.open(as_json, "wt") as f:
        json.dump({"class_description": descriptions}, f)
    assert module.compare_imagenet21k_p(as_json) == [
        ("n00007846", "person", None),
        ("n00326094", "rock climbing", "rock climb"),
    ]
