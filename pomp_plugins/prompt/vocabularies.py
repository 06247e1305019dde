"""Named class vocabularies and validated custom ones.

Sources, never re-typed by hand:
- ``imagenet21k-p`` (10,450 winter'21 classes POMP trains on), ``imagenet21k`` (21,843): timm's synset files,
  named by the first WordNet lemma of timm's ``imagenet_synset_to_lemma.txt``. For ``imagenet21k-p`` these are
  exactly the reference's names (``class_description`` of Alibaba-MIIL's semantic tree, ``_`` read as a space);
  ``tools/make_vocabularies.py --compare-imagenet21k-p`` checks that against the tree;
- ``imagenet1k``: open_clip's ``IMAGENET_CLASSNAMES`` (OpenAI's cleaned names), keyed by timm's synsets;
- ``lvis``, ``coco``: detectron2's metadata; ``objects365`` (v1): CenterNet2's; ``coco-stuff``,
  ``voc``, ``ade20k``, ``pascal-context``: mmseg's dataset ``METAINFO``. The core may not import the toolkits, so
  these are stored in ``data/vocabularies.json``, written by ``tools/make_vocabularies.py`` and checked against
  their sources by the tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

import open_clip

STORED_VOCABULARIES = Path(__file__).resolve().parent.parent / "data" / "vocabularies.json"
TIMM_VOCABULARIES = {
    "imagenet21k-p": "imagenet21k_miil_w21_synsets.txt",
    "imagenet21k": "imagenet21k_goog_synsets.txt",
}
VOCABULARY_NAMES = (
    "imagenet21k-p",
    "imagenet21k",
    "imagenet1k",
    "lvis",
    "coco",
    "coco-stuff",
    "voc",
    "ade20k",
    "pascal-context",
    "objects365",
)


class VocabularyError(ValueError):
    """An unknown vocabulary name, or a class list with empty or duplicate names."""


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of classes.

    ``names``: the text put into prompts, one per class. ``keys``: each class's identifier in its source
    (WordNet id, dataset class name); equal to ``names`` for custom lists. ``frequency``: LVIS's r/c/f group per
    class, ``None`` elsewhere. ``synonyms``: LVIS synonyms per class, ``None`` elsewhere.
    """

    name: str
    names: tuple[str, ...]
    keys: tuple[str, ...]
    frequency: tuple[str, ...] | None = None
    synonyms: tuple[tuple[str, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def index(self, key: str) -> int:
        """Position of the class whose key (or name) is ``key``."""
        for candidates in (self.keys, self.names):
            if key in candidates:
                return candidates.index(key)
        raise VocabularyError(f"class {key!r} is not in vocabulary {self.name!r}")


def _timm_lines(filename: str) -> list[str]:
    text = resources.files("timm.data._info").joinpath(filename).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def wordnet_lemmas() -> dict[str, str]:
    """WordNet id -> first lemma, for all 21,843 ImageNet-21K synsets (from timm)."""
    lemmas = {}
    for line in _timm_lines("imagenet_synset_to_lemma.txt"):
        wnid, _, words = line.partition("\t")
        lemmas[wnid] = words.split(",")[0].strip()
    return lemmas


@lru_cache(maxsize=1)
def _stored() -> dict:
    return json.loads(STORED_VOCABULARIES.read_text())


@cache
def get_vocabulary(name: str) -> Vocabulary:
    """The named vocabulary (one of ``VOCABULARY_NAMES``)."""
    if name in TIMM_VOCABULARIES:
        wnids = tuple(_timm_lines(TIMM_VOCABULARIES[name]))
        lemmas = wordnet_lemmas()
        return Vocabulary(name, tuple(lemmas[w] for w in wnids), wnids)
    if name == "imagenet1k":
        return Vocabulary(name, tuple(open_clip.IMAGENET_CLASSNAMES), tuple(_timm_lines("imagenet_synsets.txt")))
    stored = _stored().get(name)
    if stored is None:
        raise VocabularyError(f"unknown vocabulary {name!r}; known: {', '.join(VOCABULARY_NAMES)}")
    synonyms = stored.get("synonyms")
    return Vocabulary(
        name,
        tuple(stored["names"]),
        tuple(stored["keys"]),
        tuple(stored["frequency"]) if "frequency" in stored else None,
        tuple(map(tuple, synonyms)) if synonyms else None,
    )


def custom_vocabulary(names: Sequence[str], name: str = "custom") -> Vocabulary:
    """A vocabulary from a list of class names; surrounding whitespace is dropped.

    Raises:
        VocabularyError: the list is empty, a name is empty, or a name appears twice.
    """
    cleaned = tuple(n.strip() for n in names)
    if not cleaned:
        raise VocabularyError("the class list is empty")
    empty = [i for i, n in enumerate(cleaned) if not n]
    if empty:
        raise VocabularyError(f"empty class name at position(s) {empty}")
    seen: dict[str, int] = {}
    for i, n in enumerate(cleaned):
        if n in seen:
            raise VocabularyError(f"class name {n!r} appears twice (positions {seen[n]} and {i})")
        seen[n] = i
    return Vocabulary(name, cleaned, cleaned)


def read_names_file(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line, blank lines and ``#`` comments skipped) or a JSON list."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise VocabularyError(f"{path}: expected a JSON list of class names")
        return names
    return [line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


VocabularySpec = str | os.PathLike | Sequence[str] | Vocabulary
VOCABULARY_SPEC_HELP = (
    f"one of {', '.join(VOCABULARY_NAMES)}, a names file (.txt: one name per line; .json: a list), "
    "comma-separated names (one class: 'cat,'), or a list of names"
)


def parse_vocabulary(spec: VocabularySpec) -> Vocabulary:
    """The ``Vocabulary`` a vocabulary spec names: the one parser of class lists for every tool, config and plugin.

    ``spec`` is a ``Vocabulary`` (returned as it is); a list of names; or a string: a named vocabulary of
    ``VOCABULARY_NAMES``, a names file (``.txt``/``.json``, or any existing file, see :func:`read_names_file`), or
    comma-separated names (``"cat, dog ,traffic light"``; one class: ``"cat,"``). Names are stripped.

    Raises:
        VocabularyError: an unknown name (the accepted forms are listed), an empty list, an empty or repeated name.
        FileNotFoundError: ``spec`` names a ``.txt``/``.json`` file that does not exist.
    """
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, os.PathLike) or isinstance(spec, str) and Path(spec.strip()).is_file():
        return custom_vocabulary(read_names_file(spec), name=Path(spec).stem)
    if not isinstance(spec, str):
        return custom_vocabulary(list(spec))
    text = spec.strip()
    if text in VOCABULARY_NAMES:
        return get_vocabulary(text)
    if "," in text:
        names = text.split(",")
        return custom_vocabulary(names[:-1] if len(names) > 1 and not names[-1].strip() else names)
    if Path(text).suffix in (".txt", ".json"):
        raise FileNotFoundError(f"names file {text!r} does not exist")
    raise VocabularyError(f"unknown vocabulary {text!r}; expected {VOCABULARY_SPEC_HELP}")
