"""ImageFolder-style trees (``ROOT/<class>/<image>``): their classes, class names and images, and the datasets
that read those images.

Class names come from, in this order: a names file (``key<TAB>name`` lines or a JSON object maps folder names to
names; a plain list is matched to the sorted folders by position), a vocabulary (folders matched by key, e.g.
WordNet id, or by name), or, without either, the WordNet lemma for folders named like ``n01440764`` and the folder
name itself (``_`` read as a space) for any other tree.

Unreadable images never stop a run: datasets built here yield a ``Skipped`` record instead, the collate function
drops it from the batch and reports the path, and the caller counts and reports them.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..prompt.vocabularies import Vocabulary, VocabularyError, read_names_file, wordnet_lemmas

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
WNID = re.compile(r"^n\d{8}$")
# What PIL raises for a missing, truncated, undecodable or oversized image.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the sub-folders of ``root``; each is one class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    keys = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not keys:
        raise FileNotFoundError(f"{root} has no class sub-folders: expected ROOT/<class>/<image files>")
    return keys


def list_images(folder: str | os.PathLike) -> list[str]:
    """Sorted file names of the images directly inside ``folder`` (by extension, case-insensitive)."""
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS) and not entry.name.startswith(".")
    )


def read_class_mapping(path: str | os.PathLike, keys: Sequence[str] = ()) -> dict[str, str] | None:
    """``{folder: name}`` from a JSON object, ``key<TAB>name`` lines, or ``key<space>name`` lines whose first field is
    one of the class folders ``keys`` (ImageNet's ``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca``);
    ``None`` if the file is a plain list of names.

    Raises:
        VocabularyError: some lines start with a class folder and others do not (neither form); the first such
            line is named.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"names file {str(path)!r} does not exist")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines and all("\t" in line for line in lines):
        return dict(tuple(part.strip() for part in line.split("\t", 1)) for line in lines)
    fields = [line.split(None, 1) for line in lines]
    keyed = [len(parts) == 2 and parts[0] in set(keys) for parts in fields]
    if lines and all(keyed):
        return {key: name.strip() for key, name in fields}
    if any(keyed):
        bad = lines[keyed.index(False)]
        raise VocabularyError(
            f"{path}: some lines start with a class folder and some do not, e.g. {bad!r}; give "
            "'folder name' (or folder<TAB>name) lines for every class, or a plain list of names"
        )
    return None


def class_names(
    keys: Sequence[str],
    vocabulary: Vocabulary | None = None,
    names_file: str | os.PathLike | None = None,
    allow_unnamed: bool = False,
) -> list[str]:
    """The prompt name of each class folder in ``keys`` (see the module docstring for the rules).

    Raises:
        VocabularyError: a folder has no name (the first ones are listed), or a plain names list has a different
            length than the number of folders. With ``allow_unnamed`` an unnamed folder is named by its own key,
            with a warning, instead.
    """
    mapping: dict[str, str] | None = None
    source = "the folder names"
    if names_file is not None:
        mapping = read_class_mapping(names_file, keys)
        source = str(names_file)
        if mapping is None:
            names = read_names_file(names_file)
            if len(names) != len(keys):
                raise VocabularyError(
                    f"{names_file} lists {len(names)} names but there are {len(keys)} class "
                    "folders; give one name per folder (in sorted folder order) or key<TAB>name "
                    "lines"
                )
            return [name.strip() for name in names]
    elif vocabulary is not None:
        source = f"vocabulary {vocabulary.name!r}"
        mapping = dict(zip(vocabulary.names, vocabulary.names)) | dict(zip(vocabulary.keys, vocabulary.names))
        is_name_list = vocabulary.keys == vocabulary.names
        if is_name_list and len(vocabulary) == len(keys) and not any(key in mapping for key in keys):
            return list(vocabulary.names)  # a plain list of names, matched to the sorted folders by position
    elif keys and all(WNID.match(key) for key in keys):
        mapping, source = wordnet_lemmas(), "the WordNet lemmas of ImageNet-21K"
    else:
        return [key.replace("_", " ") for key in keys]

    missing = [key for key in keys if not mapping.get(key)]
    if missing:
        message = (
            f"{len(missing)} of {len(keys)} class folders have no name in {source}, e.g. {', '.join(missing[:10])}"
        )
        if not allow_unnamed:
            raise VocabularyError(
                message + "; give a names file with key<TAB>name lines, or allow falling back to "
                "the folder name (--allow-unnamed)"
            )
        warnings.warn(message + "; using the folder names for them", stacklevel=2)
    return [mapping.get(key) or key for key in keys]


def load_rgb(path: str | os.PathLike) -> Image.Image | None:
    """The image at ``path`` decoded as RGB, or ``None`` if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except UNREADABLE:
        return None


@dataclass
class Sample:
    """One dataset item: ``data`` (an image tensor, views or features) and its class ``label``."""

    data: torch.Tensor
    label: int


@dataclass
class Skipped:
    """An item whose image could not be read."""

    path: str


@dataclass
class Batch:
    """``data``: the stacked samples ``[B, ...]``; ``labels``: ``[B]`` int64; ``skipped``: unreadable paths."""

    data: torch.Tensor
    labels: torch.Tensor
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def collate_skipping(items: Sequence[Sample | Skipped]) -> Batch:
    """Stack the readable samples and list the skipped paths (a batch may be empty)."""
    samples = [item for item in items if isinstance(item, Sample)]
    skipped = [item.path for item in items if isinstance(item, Skipped)]
    if not samples:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped)
    return Batch(torch.stack([s.data for s in samples]), torch.tensor([s.label for s in samples]), skipped)


class ImageListDataset(Dataset):
    """Images at ``paths`` with ``labels``, each turned into a tensor by ``transform`` (e.g. CLIP's preprocess)."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Callable[[Image.Image], torch.Tensor]):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample | Skipped:
        image = load_rgb(self.paths[index])
        if image is None:
            return Skipped(self.paths[index])
        return Sample(self.transform(image), self.labels[index])


@dataclass
class ImageFolderIndex:
    """The index of an ImageFolder-style tree: sorted class ``keys`` (folder names), their prompt ``names``, and the
    ``paths`` and ``labels`` of every image. Not a dataset: ``ImageListDataset(index.paths, index.labels, ...)``
    reads the images."""

    root: Path
    keys: list[str]
    names: list[str]
    paths: list[str]
    labels: list[int]

    @property
    def empty_classes(self) -> list[str]:
        present = set(self.labels)
        return [key for i, key in enumerate(self.keys) if i not in present]

    @classmethod
    def scan(
        cls,
        root: str | os.PathLike,
        vocabulary: Vocabulary | None = None,
        names_file: str | os.PathLike | None = None,
        allow_unnamed: bool = False,
    ) -> ImageFolderIndex:
        """List the class folders of ``root``, name them (see the module docstring) and list their images."""
        root = Path(root)
        keys = class_folders(root)
        names = class_names(keys, vocabulary, names_file, allow_unnamed)
        paths, labels = [], []
        for label, key in enumerate(keys):
            files = list_images(root / key)
            paths += [str(root / key / name) for name in files]
            labels += [label] * len(files)
        return cls(root, keys, names, paths, labels)
