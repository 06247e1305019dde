"""Which classes a detector knows: vocabularies from config strings, their embeddings, and the test-time swap.

A vocabulary string (``MODEL.POMP.VOCABULARY`` / ``TEST_VOCABULARY``, the tools' options) is one of: a named
vocabulary of the core (``lvis``, ``coco``, ...), a names file (``.txt``/``.json``), or comma-separated names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata
from torch import nn

from pomp_plugins.prompt import (
    VOCABULARY_NAMES,
    Vocabulary,
    VocabularyError,
    classifier_weights,
    custom_vocabulary,
    get_vocabulary,
    load_embedding_file,
    resolve_vocabulary,
)

from .config import PompConfigError

# Named vocabularies people ask for whose class names no installed package ships.
_NOT_SHIPPED = {"objects365": "Objects365"}


def parse_vocabulary(spec: str) -> Vocabulary:
    """A ``Vocabulary`` from a name, a names file or comma-separated names.

    Raises:
        VocabularyError: an unknown name (the known ones are listed), or a bad class list.
        FileNotFoundError: ``spec`` looks like a names file that does not exist.
    """
    spec = spec.strip()
    if spec in VOCABULARY_NAMES:
        return get_vocabulary(spec)
    if spec.lower() in _NOT_SHIPPED:
        raise VocabularyError(f"the {_NOT_SHIPPED[spec.lower()]} class names are not shipped by any installed "
                              "package; pass them as a names file (one per line) or a comma-separated list")
    if "," in spec:
        return custom_vocabulary(spec.split(","))
    if Path(spec).suffix in (".txt", ".json") or Path(spec).is_file():
        if not Path(spec).is_file():
            raise FileNotFoundError(f"names file {spec!r} does not exist")
        return resolve_vocabulary(names_file=spec)
    raise VocabularyError(f"unknown vocabulary {spec!r}; expected one of {', '.join(VOCABULARY_NAMES)}, "
                          "a names file (.txt or .json) or comma-separated class names")


def vocabulary_metadata(vocabulary: Vocabulary | Sequence[str]) -> Metadata:
    """Metadata whose ``thing_classes`` are the vocabulary's class names, for detectron2's ``Visualizer``."""
    if not isinstance(vocabulary, Vocabulary):
        vocabulary = custom_vocabulary(vocabulary)
    return Metadata(name=f"pomp-vocabulary:{vocabulary.name}", thing_classes=list(vocabulary.names))


def config_metadata(cfg: CfgNode) -> Metadata:
    """Metadata of the inference classes ``cfg`` names (numbered classes when only an embedding file gives them)."""
    spec, _ = _embedding_source(cfg, test=True)
    if spec:
        return vocabulary_metadata(parse_vocabulary(spec))
    return Metadata(name="pomp-vocabulary:embedding-file",
                    thing_classes=[f"class {i}" for i in range(config_num_classes(cfg, test=True))])


def text_encoder_arguments(cfg: CfgNode) -> dict:
    """The prompt and CLIP keyword arguments of ``classifier_weights`` given by ``cfg.MODEL.POMP``."""
    pomp = cfg.MODEL.POMP
    pretrained = pomp.CLIP_PRETRAINED
    return {
        "prompt": pomp.PROMPT or None,
        "hard_prompt": None if pomp.PROMPT else pomp.HARD_PROMPT,
        "clip_model": pomp.CLIP_MODEL or None,
        "clip_pretrained": None if pretrained.lower() == "none" else pretrained,
        "device": pomp.TEXT_DEVICE or cfg.MODEL.DEVICE,
    }


def _has_test_classes(cfg: CfgNode) -> bool:
    return bool(cfg.MODEL.POMP.TEST_VOCABULARY or cfg.MODEL.POMP.TEST_EMBEDDING_FILE)


def _embedding_source(cfg: CfgNode, test: bool) -> tuple[str, str]:
    """(vocabulary string, embedding file) of the training or inference classes; raises if both are empty."""
    pomp = cfg.MODEL.POMP
    if test and _has_test_classes(cfg):
        return pomp.TEST_VOCABULARY, pomp.TEST_EMBEDDING_FILE
    if not pomp.VOCABULARY and not pomp.EMBEDDING_FILE:
        raise PompConfigError("set MODEL.POMP.VOCABULARY (e.g. lvis) or MODEL.POMP.EMBEDDING_FILE (a Detic .npy)")
    return pomp.VOCABULARY, pomp.EMBEDDING_FILE


def config_class_embeddings(cfg: CfgNode, test: bool = False) -> torch.Tensor:
    """The training (or, with ``test``, inference) class embeddings ``[C, D]`` float32 that ``cfg`` asks for.

    Raises:
        PompConfigError: neither a vocabulary nor an embedding file is set.
        EmbeddingFileError: the embeddings are not ``MODEL.POMP.EMBEDDING_DIM``-dimensional, or an embedding
            file and a vocabulary disagree on the number of classes.
        VocabularyError, FileNotFoundError, PromptFileError: a bad vocabulary, a missing file.
    """
    spec, embedding_file = _embedding_source(cfg, test)
    vocabulary = parse_vocabulary(spec) if spec else None
    return classifier_weights(vocabulary, embedding_file=embedding_file or None, dim=cfg.MODEL.POMP.EMBEDDING_DIM,
                              **text_encoder_arguments(cfg))


def config_embeddings(cfg: CfgNode) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Training and inference class embeddings of ``cfg``; inference ``None`` when it names no other classes.

    Raises ``PompConfigError`` when the training classes are not ``MODEL.ROI_HEADS.NUM_CLASSES`` many.
    """
    train = config_class_embeddings(cfg)
    check_training_classes(cfg, len(train))
    return train, config_class_embeddings(cfg, test=True) if _has_test_classes(cfg) else None


def config_num_classes(cfg: CfgNode, test: bool = False) -> int:
    """The number of classes ``config_class_embeddings`` would give, without encoding any text."""
    spec, embedding_file = _embedding_source(cfg, test)
    return len(parse_vocabulary(spec)) if spec else len(load_embedding_file(embedding_file))


def check_training_classes(cfg: CfgNode, num_classes: int) -> None:
    """Raise ``PompConfigError`` unless the training vocabulary has ``MODEL.ROI_HEADS.NUM_CLASSES`` classes."""
    expected = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if num_classes != expected:
        source = cfg.MODEL.POMP.EMBEDDING_FILE or cfg.MODEL.POMP.VOCABULARY
        raise PompConfigError(f"the training vocabulary ({source}) has {num_classes} classes but "
                              f"MODEL.ROI_HEADS.NUM_CLASSES is {expected}; set it to {num_classes}")


def zero_shot_roi_heads(model: nn.Module) -> nn.Module:
    """The POMP ROI heads of a built detector, also through ``DistributedDataParallel``/``DataParallel``."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    roi_heads = getattr(model, "roi_heads", None)
    if not hasattr(roi_heads, "set_test_class_embeddings"):
        raise PompConfigError(f"the model's ROI heads ({type(roi_heads).__name__}) have no zero-shot classifier; "
                              "use MODEL.ROI_HEADS.NAME PompCascadeROIHeads or PompStandardROIHeads")
    return roi_heads


def set_class_embeddings(model: nn.Module, class_embeddings: torch.Tensor) -> int:
    """Make every box-predictor stage of ``model`` predict the classes of ``class_embeddings`` ``[C', D]``.

    Training is unaffected (it keeps the training classes). Returns ``C'``.
    """
    zero_shot_roi_heads(model).set_test_class_embeddings(class_embeddings)
    return len(class_embeddings)


def set_vocabulary(model: nn.Module, cfg: CfgNode, vocabulary: str | Vocabulary | Sequence[str],
                   embedding_file: Optional[str] = None) -> Metadata:
    """Swap ``model``'s inference classes to ``vocabulary``, encoded with the prompt and CLIP ``cfg`` names.

    ``vocabulary``: a vocabulary string (see ``parse_vocabulary``), a ``Vocabulary`` or a list of names;
    ``embedding_file``: precomputed embeddings of its classes, in its order. Returns the metadata to visualise or
    evaluate the new predictions with (``thing_classes`` = the new class names).
    """
    if isinstance(vocabulary, str):
        vocabulary = parse_vocabulary(vocabulary)
    elif not isinstance(vocabulary, Vocabulary):
        vocabulary = custom_vocabulary(vocabulary)
    roi_heads = zero_shot_roi_heads(model)
    embeddings = classifier_weights(vocabulary, embedding_file=embedding_file, dim=roi_heads.embedding_dim,
                                    **text_encoder_arguments(cfg))
    roi_heads.set_test_class_embeddings(embeddings)
    return vocabulary_metadata(vocabulary)
