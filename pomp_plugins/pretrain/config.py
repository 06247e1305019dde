"""Every setting of a pre-training run, with the paper's recipe as defaults, in one place.

The command line of ``tools/pretrain_prompt.py`` is generated from ``PretrainConfig`` (``--n-ctx`` sets
``n_ctx``...), and each run writes its resolved config to ``OUTPUT/config.json``; ``--config FILE`` reads such a
file back as the defaults of a new run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..prompt.cli import AUTO_DEVICE, image_folder_classes, resolve_device
from ..prompt.embedder import AUTO, FALLBACK_PRETRAINED
from ..prompt.vocabularies import VocabularyError

# Settings that steer one invocation and may differ when a run is resumed; all others must match.
RUN_CONTROL = (
    "output",
    "resume",
    "workers",
    "checkpoint_every_steps",
    "stop_after_steps",
    "log_every",
    "progress",
    "device",
)


class PretrainError(ValueError):
    """A run that cannot start as asked: settings that contradict an existing split file or checkpoint."""


def _option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **argparse_kwargs})


def _optional(kind: type):
    """Parse ``none`` as ``None`` and anything else with ``kind``."""

    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = f"{kind.__name__} or none"
    return parse


def _log_base(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return math.e if text.lower() == "e" else float(text)


@dataclass
class PretrainConfig:
    """A POMP pre-training run. Defaults follow the paper and its released code (ViT-B/16, ImageNet-21K-P)."""

    # data
    data: str = _option(
        "",
        "dataset root: ROOT/<class>/<images>, or ROOT/train/<class>/<images> (ImageNet-21K-P "
        "layout; ROOT/val, the test split, is never read)",
        required=True,
    )
    output: str = _option(
        "output/pomp",
        "folder of the run: the result OUTPUT/prompt.pt, checkpoints, split file, logs and config",
        metavar="DIR",
    )
    vocabulary: str | None = _option(
        None,
        "the class folders' names: a vocabulary name (e.g. imagenet21k-p, which maps WordNet-id folders) or a "
        "names file ('folder name' or folder<TAB>name lines such as ImageNet's LOC_synset_mapping.txt, a JSON "
        "object folder -> name, or one name per sorted folder); default: WordNet lemmas for WordNet-id folders, "
        "else the folder names",
        type=_optional(str),
        metavar="SPEC",
    )
    names_file: str | None = _option(
        None, "set from --vocabulary FILE: the names file of the class folders", type=_optional(str), cli=False
    )
    allow_unnamed: bool = _option(
        False, "name a folder without a name by its id, with a warning, instead of stopping with an error"
    )
    split_file: str | None = _option(
        None,
        "few-shot split file (default OUTPUT/split.json): written on first "
        "use, then read by every process and every rerun",
        type=_optional(str),
    )
    shots: int = _option(16, "training images per class (a class with fewer uses all it has)")
    val_per_class: int = _option(1, "held-out training images per class for validation (0: no validation)")
    views: int = _option(4, "augmented views of each image per step")
    crop_scale_min: float = _option(0.08, "smallest area fraction of the random resized crop")
    randaugment: str = _option(
        "randaugment2",
        "RandAugment variant: randaugment2 (Dassl's, as POMP: each operation "
        "applied with probability randaugment_prob at a random magnitude) "
        "or torchvision (T.RandAugment at a fixed magnitude)",
        choices=["randaugment2", "torchvision"],
    )
    randaugment_ops: int = _option(2, "RandAugment: operations per view (0: no RandAugment)")
    randaugment_prob: float = _option(0.6, "randaugment2: probability that each chosen operation is applied")
    randaugment_magnitude: int = _option(9, "torchvision RandAugment: magnitude (0-30)")
    # model
    clip_model: str = _option("ViT-B-16", "open_clip model name (pomp-tiny: a tiny model for tests and demos)")
    clip_pretrained: str | None = _option(
        AUTO,
        "open_clip weights tag, a local weights file, none for random weights, or auto (= openai: pre-training "
        "starts from no prompt file)",
        type=_optional(str),
    )
    dtype: str = _option(
        "auto",
        "precision of the frozen CLIP: auto = bf16 on CUDA, fp32 on CPU",
        choices=["auto", "fp32", "bf16", "fp16"],
    )
    device: str = _option(AUTO_DEVICE, "auto = cuda when available (the local rank's GPU under torchrun), else cpu")
    n_ctx: int = _option(4, "number of learned context vectors (the paper: 4, or 16)")
    ctx_init: str | None = _option(
        None,
        "initialise ctx from this phrase's token embeddings (n_ctx is then its token count) instead of N(0, ctx_std)",
        type=_optional(str),
    )
    ctx_std: float = _option(0.02, "standard deviation of the random ctx initialisation")
    # loss
    num_sampled: int = _option(
        1000, "K: classes per step (the batch's own plus K-1 sampled negatives); capped at the number of classes"
    )
    log_base: float | None = _option(
        10.0,
        "base of the local-correction margin's log: 10 (the released code "
        "and numbers), e (the paper's formula), or none to turn it off",
        type=_log_base,
    )
    # optimisation
    group_size: int = _option(
        32,
        "images per group: a group's images (x views) share their own K-1 sampled "
        "negatives (the reference's batch per GPU)",
    )
    global_batch: int = _option(
        256,
        "images per optimisation step, over all processes (the reference: 8 GPUs x "
        "32): global_batch / group_size groups per step, split evenly over the "
        "processes; the gradient is the mean over all the groups' feature rows",
    )
    epochs: int | None = _option(
        None, "epochs (default: 5 for n_ctx <= 4, 20 above, as in the paper)", type=_optional(int)
    )
    lr: float = _option(0.002, "SGD learning rate after warm-up (cosine-annealed per epoch)")
    momentum: float = _option(0.9, "SGD momentum")
    weight_decay: float = _option(5e-4, "SGD weight decay")
    warmup_epochs: int = _option(1, "epochs at the constant warm-up learning rate")
    warmup_lr: float = _option(1e-5, "warm-up learning rate")
    seed: int = _option(1, "seed of the split, the ctx initialisation, the data order, augmentations and negatives")
    # feature cache
    cache_image_features: bool = _option(
        False,
        "compute the image features of `views` fixed augmented views of "
        "each training image once (memory-mapped file in OUTPUT), then "
        "train the text side only; fixes the augmentations",
    )
    cuda_graphs: bool = _option(
        False,
        "on a GPU, give every group one of a few shapes and replay its image forward "
        "and its text forward+backward as CUDA graphs (no effect on a CPU); off "
        "by default until tests/test_pretrain_cuda_graphs.py has passed on a GPU",
    )
    compile_image_tower: bool = _option(
        False,
        "torch.compile the frozen image tower for training steps (faster "
        "steps after a compile of tens of seconds; falls back to eager "
        "execution if compiling fails)",
    )
    # run control
    workers: int = _option(8, "data-loading processes per training process (0: in the main process)")
    checkpoint_every_steps: int = _option(0, "also checkpoint every N steps (0: only at the end of each epoch)")
    stop_after_steps: int | None = _option(
        None,
        "stop (after checkpointing) once this many steps have run in total; continue later with --resume",
        type=_optional(int),
    )
    resume: str | None = _option(
        None,
        "continue from a checkpoint: a file, or 'auto' for "
        "OUTPUT/checkpoints/last.pt (from scratch while there is none)",
        type=_optional(str),
    )
    log_every: int = _option(10, "steps between TensorBoard and progress-bar updates of the loss")
    progress: bool = _option(True, "show progress bars")

    def resolved(self) -> PretrainConfig:
        """A copy with the automatic choices (epochs, device, weights) made."""
        epochs = self.epochs if self.epochs is not None else (5 if self.n_ctx <= 4 else 20)
        pretrained = FALLBACK_PRETRAINED if self.clip_pretrained == AUTO else self.clip_pretrained
        return dataclasses.replace(self, epochs=epochs, device=resolve_device(self.device), clip_pretrained=pretrained)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        positive = ("shots", "views", "n_ctx", "num_sampled", "group_size", "global_batch", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("val_per_class", "workers", "checkpoint_every_steps", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.randaugment_prob <= 1:
            raise ValueError(f"randaugment_prob must be in [0, 1], got {self.randaugment_prob}")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"crop_scale_min must be in (0, 1], got {self.crop_scale_min}")
        if self.vocabulary and self.names_file:
            raise ValueError("give either a vocabulary or a names file, not both")
        if self.global_batch % self.group_size:
            raise ValueError(f"global_batch ({self.global_batch}) must be a multiple of group_size ({self.group_size})")
        if self.log_base is not None and (self.log_base <= 0 or self.log_base == 1):
            raise ValueError(f"log_base must be positive and not 1 (or none), got {self.log_base}")

    @property
    def groups_per_step(self) -> int:
        return self.global_batch // self.group_size

    def check_world_size(self, world_size: int) -> None:
        """Raise ``PretrainError`` unless the step's groups split evenly over ``world_size`` processes."""
        if self.groups_per_step % world_size:
            works = [n for n in range(1, self.groups_per_step + 1) if self.groups_per_step % n == 0]
            raise PretrainError(
                f"{self.groups_per_step} groups per step (global_batch {self.global_batch} / group_size "
                f"{self.group_size}) cannot be split evenly over {world_size} processes; use {works} processes, "
                f"or a global_batch that is a multiple of group_size x {world_size}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PretrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def differences(self, other: PretrainConfig) -> dict[str, tuple[Any, Any]]:
        """Settings (other than run control) whose values differ: ``{name: (self's, other's)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in RUN_CONTROL and mine[k] != theirs[k]}


def build_parser(description: str = "", epilog: str = "") -> argparse.ArgumentParser:
    """An argument parser with one ``--option`` per ``PretrainConfig`` field, plus ``--config FILE``."""
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a config.json of an earlier run: its values become the defaults, the options given here override them",
    )
    for spec in dataclasses.fields(PretrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        meta = dict(spec.metadata)
        if not meta.pop("cli", True):
            continue
        help_text = meta.pop("help")
        if not meta.pop("required", False):  # required ones are checked after --config is applied
            help_text += f" (default: {spec.default})"
        if isinstance(spec.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            kind = meta.pop("type", type(spec.default))
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text, **meta)
    return parser


def class_folder_names(spec: str, parser: argparse.ArgumentParser) -> dict:
    """The ``vocabulary``/``names_file`` settings of ``--vocabulary SPEC``: a names file, or a vocabulary name."""
    try:
        vocabulary, names_file = image_folder_classes(spec)
    except (VocabularyError, FileNotFoundError) as error:
        parser.error(f"--vocabulary: {error}")
    if names_file is not None:
        return {"vocabulary": None, "names_file": names_file}
    if vocabulary.name == "custom":
        parser.error(
            "--vocabulary: pre-training names its class folders from a vocabulary name or a names file; "
            "write the names to a file (one per line, in sorted folder order) and pass that"
        )
    return {"vocabulary": spec.strip(), "names_file": None}


def config_from_args(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> PretrainConfig:
    """The config given by a command line: ``--config`` file values, overridden by the options given."""
    parser = parser or build_parser()
    given = vars(parser.parse_args(argv))  # only the options on the command line (the others are suppressed)
    config_file = given.pop("config")
    base = PretrainConfig.from_dict(json.loads(Path(config_file).read_text())) if config_file else PretrainConfig()
    if given.get("vocabulary") is not None:
        given |= class_folder_names(given["vocabulary"], parser)
    values = base.to_dict() | given
    if not values["data"]:
        parser.error("--data is required (the dataset root)")
    config = PretrainConfig.from_dict(values)
    try:
        config.check()
    except ValueError as error:
        parser.error(str(error))
    return config
