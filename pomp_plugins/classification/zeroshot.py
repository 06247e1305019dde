"""Zero-shot image classification: the class embeddings of class-name prompts through CLIP's text tower (the
images, their features and the accuracy are :mod:`pomp_plugins.images`')."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..prompt.cache import EmbeddingCache, class_embeddings
from ..prompt.clip import LoadedClip
from ..prompt.embedder import prompted_encoder
from ..prompt.prompt_file import Prompt
from ..prompt.templates import template_embeddings


def text_classifier(
    clip: LoadedClip,
    names: Sequence[str],
    prompt: str | os.PathLike | Prompt | None = None,
    hard_prompt: str | None = None,
    templates: str | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 4096,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised class embeddings ``[C, D]`` float32 on CLIP's device.

    Exactly one of: ``prompt`` (a learned POMP prompt), ``hard_prompt`` (a phrase, ``"a photo of a"`` makes
    ``"a photo of a {name}."``) or ``templates`` (a set of ``pomp_plugins.prompt.templates``: ``"openai"`` /
    ``"imagenet80"``, the 80 templates of OpenAI's ImageNet zero-shot ensemble, or ``"vild"``; each class is the
    normalised mean of its normalised template embeddings).
    """
    if sum(x is not None for x in (prompt, hard_prompt, templates)) != 1:
        raise ValueError("give exactly one of a prompt file, a hard prompt, or a template set")
    device = clip.model.logit_scale.device
    if templates is None:
        encoder = prompted_encoder(clip, prompt=prompt, hard_prompt=hard_prompt)
        features = class_embeddings(encoder, names, cache, batch_size=batch_size, progress=progress)
        return features.to(device)
    return template_embeddings(clip, names, templates, batch_size, progress)
