"""The few-shot split: which images of each class train and which are held out for validation.

Drawn once from a seed, per class (``random.Random(f"{seed}:{class}")``, so a class's draw does not depend on the
other classes), written to a JSON file by the first process, and read back by every process and every rerun, so
all ranks and all resumed runs train on the same images. Validation images come from the training folder, never
from ``ROOT/val`` (the test split).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..images.folder import ImageFolderIndex
from ..prompt.atomic import atomic_write_text
from ..prompt.vocabularies import get_vocabulary
from .config import PretrainError

FORMAT = "pomp-fewshot-split"
VERSION = 1


def image_root(data: str | os.PathLike) -> Path:
    """``DATA/train`` when it exists (ImageNet-21K-P layout), else ``DATA``."""
    data = Path(data)
    return data / "train" if (data / "train").is_dir() else data


@dataclass
class FewShotSplit:
    """Class ``keys`` (folders) and ``names``; ``train``/``val``: ``[path relative to the image root, label]``.

    ``settings`` records what the split was drawn with; ``empty_classes`` the folders without any image.
    """

    keys: list[str]
    names: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    settings: dict
    empty_classes: list[str] = field(default_factory=list)
    image_root: str = "."

    def paths(self, data: str | os.PathLike, part: str) -> tuple[list[str], list[int]]:
        """Absolute paths and labels of ``part`` (``train`` or ``val``) under the dataset root ``data``."""
        root = Path(data) / self.image_root
        items = getattr(self, part)
        return [str(root / path) for path, _ in items], [label for _, label in items]

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)}) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> FewShotSplit:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PretrainError(f"{path} is not a few-shot split file (format {FORMAT!r})")
        if data["version"] > VERSION:
            raise PretrainError(f"{path}: split format version {data['version']} is newer than {VERSION}")
        data.pop("format"), data.pop("version")
        data["train"] = [tuple(item) for item in data["train"]]
        data["val"] = [tuple(item) for item in data["val"]]
        return cls(**data)


def draw_split(
    data: str | os.PathLike,
    shots: int,
    val_per_class: int,
    seed: int,
    vocabulary: str | None = None,
    names_file: str | None = None,
    allow_unnamed: bool = False,
) -> FewShotSplit:
    """Scan ``data`` and draw ``shots`` training and ``val_per_class`` validation images per class.

    A class with fewer images trains on what it has; validation takes only what is left after the shots.
    """
    root = image_root(data)
    tree = ImageFolderIndex.scan(root, get_vocabulary(vocabulary) if vocabulary else None, names_file, allow_unnamed)
    by_class: list[list[str]] = [[] for _ in tree.keys]
    for path, label in zip(tree.paths, tree.labels):
        by_class[label].append(os.path.relpath(path, root))
    train, val = [], []
    for label, (key, files) in enumerate(zip(tree.keys, by_class)):
        drawn = random.Random(f"{seed}:{key}").sample(files, len(files))
        train += [(path, label) for path in drawn[:shots]]
        val += [(path, label) for path in drawn[shots : shots + val_per_class]]
    settings = {
        "seed": seed,
        "shots": shots,
        "val_per_class": val_per_class,
        "vocabulary": vocabulary,
        "names_file": names_file,
        "allow_unnamed": allow_unnamed,
    }
    return FewShotSplit(tree.keys, tree.names, train, val, settings, tree.empty_classes, os.path.relpath(root, data))


def prepare_split(path: str | os.PathLike, data: str | os.PathLike, is_main: bool, barrier, **settings) -> FewShotSplit:
    """The split at ``path``: drawn and written by the main process if missing, then read by every process.

    ``settings`` are ``draw_split``'s keyword arguments; an existing file drawn with other settings is an error
    (delete it or choose another ``path``). ``barrier`` waits for all processes.
    """
    path = Path(path)
    if is_main:
        if path.is_file():
            existing = FewShotSplit.load(path).settings
            different = {k: (existing.get(k), v) for k, v in settings.items() if existing.get(k) != v}
            if different:
                raise PretrainError(
                    f"split file {path} was drawn with other settings {different} (file, now); "
                    "delete it or give another --split-file"
                )
        else:
            draw_split(data, **settings).save(path)
    barrier()
    return FewShotSplit.load(path)
