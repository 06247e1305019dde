"""Which classes a segmentor scores, and which of them are unseen in training.

A class list in a config (``classes=``) is one of:

- a vocabulary spec of the core (:func:`~pomp_plugins.prompt.parse_vocabulary`): a named vocabulary
  (``'coco-stuff'``, ``'voc'``, ``'ade20k'``, ``'pascal-context'``...), a names file or comma-separated names;
- a list of class names, e.g. ``['cat', 'dog', 'traffic light']``;
- ``dict(dataset='ADE20KDataset')``: the ``METAINFO['classes']`` of a dataset registered in mmseg;
- ``dict(names_file='classes.txt')``: one name per line (or a JSON list).

Dataset class names are the keys of the returned ``Vocabulary``; the prompt text comes from the core's vocabulary
with the same keys when there is one (ADE20K's ``'bed '`` is prompted as ``'bed'``), else from the stripped names.

Zero-shot splits are data: ``pomp_plugins/data/splits/<name>.json`` holds ``seen`` and ``unseen`` class keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from mmseg.registry import DATASETS

from pomp_plugins.prompt import (
    VOCABULARY_NAMES,
    Vocabulary,
    VocabularyError,
    custom_vocabulary,
    get_vocabulary,
    parse_vocabulary,
    read_names_file,
)

SPLITS_DIR = Path(__file__).resolve().parent.parent / "data" / "splits"
ClassesSpec = str | Sequence[str] | Mapping | Vocabulary
SplitSpec = Union[str, os.PathLike, Mapping, "ZeroShotSplit"]  # noqa: UP007 (a forward reference)

CLASSES_HELP = (
    "a vocabulary name (" + ", ".join(VOCABULARY_NAMES) + "), a names file, comma-separated names, a list of names, "
    "dict(dataset='<mmseg dataset type>') or dict(names_file='<file>')"
)


def vocabulary_for_keys(keys: Sequence[str], name: str = "custom") -> Vocabulary:
    """The core vocabulary whose keys are exactly ``keys``, else a custom one keyed by ``keys`` as given."""
    keys = tuple(keys)
    for known in VOCABULARY_NAMES:
        if known.startswith("imagenet"):
            continue  # thousands of classes, never a segmentation dataset's list; skip reading them
        vocabulary = get_vocabulary(known)
        if vocabulary.keys == keys:
            return vocabulary
    names = custom_vocabulary(keys, name=name).names
    return Vocabulary(name, names, keys)


def resolve_classes(classes: ClassesSpec | None) -> Vocabulary:
    """The ``Vocabulary`` a ``classes=`` config value names (see the module docstring).

    Raises:
        VocabularyError: no classes given, an unknown vocabulary or dataset name, or a bad class list.
    """
    if classes is None:
        raise VocabularyError(f"no class names given: set classes= to {CLASSES_HELP}")
    if isinstance(classes, Vocabulary):
        return classes
    if isinstance(classes, (str, os.PathLike)):
        return parse_vocabulary(classes)
    if isinstance(classes, Mapping):
        if set(classes) == {"dataset"}:
            dataset = DATASETS.get(classes["dataset"])
            if dataset is None:
                raise VocabularyError(f"dataset type {classes['dataset']!r} is not registered in mmseg")
            keys = dataset.METAINFO.get("classes")
            if not keys:
                raise VocabularyError(f"dataset {classes['dataset']} has no METAINFO['classes']")
            return vocabulary_for_keys(keys, name=classes["dataset"])
        if set(classes) == {"names_file"}:
            return vocabulary_for_keys(read_names_file(classes["names_file"]), Path(classes["names_file"]).stem)
        raise VocabularyError(f"classes={dict(classes)!r}: expected {CLASSES_HELP}")
    if isinstance(classes, Sequence):
        return vocabulary_for_keys(list(classes))
    raise VocabularyError(f"classes={classes!r}: expected {CLASSES_HELP}")


@dataclass(frozen=True)
class ZeroShotSplit:
    """Seen (trained) and unseen (test-only) classes, by class key. ``seen=None`` means every other class;
    ``vocabulary``: the core vocabulary the split was made for, if any."""

    name: str
    unseen: tuple[str, ...]
    seen: tuple[str, ...] | None = None
    vocabulary: str | None = None

    def __post_init__(self):
        both = set(self.unseen) & set(self.seen or ())
        if both:
            raise VocabularyError(f"split {self.name!r} lists {sorted(both)} as both seen and unseen")

    def _indices(self, keys: Sequence[str], vocabulary: Vocabulary, role: str) -> list[int]:
        missing = [k for k in keys if k not in vocabulary.keys and k not in vocabulary.names]
        if missing:
            raise VocabularyError(
                f"split {self.name!r}: {role} class(es) {missing} are not in vocabulary "
                f"{vocabulary.name!r} ({len(vocabulary)} classes)"
            )
        return [vocabulary.index(k) for k in keys]

    def masks(self, vocabulary: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
        """``(seen, unseen)``: two ``[C]`` bool masks over ``vocabulary``'s classes.

        Raises:
            VocabularyError: a split class is not in the vocabulary (all such classes are named).
        """
        unseen = torch.zeros(len(vocabulary), dtype=torch.bool)
        unseen[self._indices(self.unseen, vocabulary, "unseen")] = True
        if self.seen is None:
            return ~unseen, unseen
        seen = torch.zeros(len(vocabulary), dtype=torch.bool)
        seen[self._indices(self.seen, vocabulary, "seen")] = True
        return seen, unseen


def available_splits() -> list[str]:
    """Names of the splits shipped in ``pomp_plugins/data/splits``."""
    return sorted(path.stem for path in SPLITS_DIR.glob("*.json"))


def load_split(split: SplitSpec) -> ZeroShotSplit:
    """A split from a shipped name (``'coco-stuff-156-15'``, ``'voc-15-5'``), a JSON file with ``seen``/``unseen``
    lists, or ``dict(unseen=[...], seen=[...])`` (``seen`` optional: every other class).

    A shipped split is also checked against the vocabulary it names.
    """
    if isinstance(split, ZeroShotSplit):
        return split
    if isinstance(split, Mapping):
        data, name = dict(split), "config"
    else:
        path = Path(split)
        if not path.suffix and (SPLITS_DIR / f"{split}.json").is_file():
            path = SPLITS_DIR / f"{split}.json"
        if not path.is_file():
            raise VocabularyError(
                f"unknown split {str(split)!r}: expected one of {available_splits()}, a JSON "
                "file with 'seen' and 'unseen' class lists, or dict(unseen=[...], seen=[...])"
            )
        data, name = json.loads(path.read_text()), path.stem
    if not data.get("unseen"):
        raise VocabularyError(f"split {name!r} lists no unseen classes")
    seen = data.get("seen")
    result = ZeroShotSplit(
        data.get("name", name), tuple(data["unseen"]), tuple(seen) if seen is not None else None, data.get("vocabulary")
    )
    if result.vocabulary:
        result.masks(get_vocabulary(result.vocabulary))
    return result
