"""Cosine logits against a vocabulary's frozen text embeddings, with unseen classes masked out in training.

Both heads of this package use it: the ZSSeg head on query embeddings, the drop-in ``conv_seg`` replacement on
pixel embeddings. The embeddings come from the prompt core (and its cache) once, when the model is built or the
vocabulary is swapped, never per step; they are a non-persistent buffer, so checkpoints hold no vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from pomp_plugins.prompt import TextEmbeddingClassifier, Vocabulary, class_embeddings
from pomp_plugins.prompt.embedder import DEFAULT_PRETRAINED

from .vocabulary import ClassesSpec, SplitSpec, ZeroShotSplit, load_split, resolve_classes


class VocabularyClassifier(nn.Module):
    """``[..., D]`` features -> ``[..., C]`` logits ``temperature * cos(feature, text embedding of class c)``.

    In training mode the logits of classes outside the split's seen set are ``-inf``: those classes take no part
    in any softmax, so unseen text embeddings never shape the training signal. In eval mode every class competes.

    Args:
        classes: the class list (see :func:`resolve_classes`).
        split: a zero-shot split (see :func:`load_split`), or ``None`` when every class is trained on.
        prompt: a POMP prompt file (ours or the reference format); or ``hard_prompt``: a fixed phrase such as
            ``'a photo of a'``; or ``templates``: a template ensemble (``'imagenet80'``, ``'vild'`` or a list of
            ``'{}'`` templates, see :mod:`pomp_plugins.prompt.templates`); or ``embedding_file``: a Detic-style
            ``.npy`` ``[C, D]`` in class order.
        clip_model, clip_pretrained: the CLIP (``None`` / ``'auto'``: the model / weights the prompt file records,
            else ViT-B-16 / ``'openai'``; ``clip_pretrained='none'``: random weights).
        temperature: the cosine logit scale.
    """

    def __init__(
        self,
        classes: ClassesSpec = None,
        split: SplitSpec | None = None,
        prompt: str | os.PathLike | None = None,
        hard_prompt: str | None = None,
        embedding_file: str | os.PathLike | None = None,
        clip_model: str | None = None,
        clip_pretrained: str | None = DEFAULT_PRETRAINED,
        temperature: float = 50.0,
        templates: str | Sequence[str] | None = None,
    ):
        super().__init__()
        if sum(x is not None for x in (prompt, hard_prompt, templates, embedding_file)) != 1:
            raise ValueError(
                "text_classifier needs exactly one of prompt= (a POMP prompt file), hard_prompt= "
                "(e.g. 'a photo of a'), templates= ('imagenet80', 'vild' or a list) or embedding_file= "
                "(a .npy of class embeddings)"
            )
        if templates is not None and not isinstance(templates, str):
            templates = tuple(templates)
        self.text_source = dict(
            prompt=prompt,
            hard_prompt=hard_prompt,
            templates=templates,
            embedding_file=embedding_file,
            clip_model=clip_model,
            clip_pretrained=clip_pretrained,
        )
        vocabulary, split, embeddings = self._embed(classes, split)
        self.classifier = TextEmbeddingClassifier(embeddings, temperature=temperature)
        self.register_buffer("trained", torch.empty(0, dtype=torch.bool), persistent=False)
        self.register_buffer("seen", torch.empty(0, dtype=torch.bool), persistent=False)
        self._set(vocabulary, split, embeddings)

    def _embed(self, classes: ClassesSpec, split: SplitSpec | None):
        vocabulary = resolve_classes(classes)
        split = load_split(split) if split is not None else None
        if split is not None:
            split.masks(vocabulary)  # a split class missing from the vocabulary fails before CLIP is loaded
        embeddings = class_embeddings(vocabulary, **self.text_source)
        return vocabulary, split, embeddings

    def _set(self, vocabulary: Vocabulary, split: ZeroShotSplit | None, embeddings: torch.Tensor) -> None:
        self.vocabulary, self.split = vocabulary, split
        self.classifier.set_class_embeddings(embeddings)
        device = self.classifier.class_embeddings.device
        if split is None:
            seen = torch.zeros(len(vocabulary), dtype=torch.bool)
            trained = torch.ones(len(vocabulary), dtype=torch.bool)
        else:
            seen, _ = split.masks(vocabulary)
            trained = seen
        self.seen, self.trained = seen.to(device), trained.to(device)

    def set_vocabulary(self, classes: ClassesSpec, split: SplitSpec | None = None) -> None:
        """Score ``classes`` from now on (any number of classes; same CLIP, prompt and temperature)."""
        self._set(*self._embed(classes, split))

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    @property
    def dim(self) -> int:
        return self.classifier.dim

    @property
    def temperature(self) -> float:
        return self.classifier.temperature

    @property
    def class_embeddings(self) -> torch.Tensor:
        """``[C, D]`` float32 L2-normalised text embeddings."""
        return self.classifier.class_embeddings

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` ``[..., D]`` -> logits ``[..., C]``; untrained classes are ``-inf`` in training mode."""
        logits = self.classifier(features)
        if self.training and not bool(self.trained.all()):
            logits = logits.masked_fill(~self.trained, float("-inf"))
        return logits

    def extra_repr(self) -> str:
        split = f", split={self.split.name}" if self.split is not None else ""
        return f"vocabulary={self.vocabulary.name} ({self.num_classes} classes){split}"
