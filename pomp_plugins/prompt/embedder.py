"""From (prompt, CLIP, class names) to classifier weights: the one entry point the toolkit adapters use."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import torch

from .cache import EmbeddingCache, class_embeddings
from .clip import LoadedClip, load_clip
from .prompt_file import Prompt, load_prompt
from .templates import template_embeddings
from .text_encoder import FrozenTextTower, PromptedTextEncoder, PromptWidthError
from .vocabularies import Vocabulary

DEFAULT_CLIP = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
DEFAULT_HARD_PROMPT = "a photo of a"


def prompted_encoder(
    clip: LoadedClip, prompt: Optional[str | os.PathLike | Prompt] = None, hard_prompt: Optional[str] = None
) -> PromptedTextEncoder:
    """A text encoder for ``clip`` with a learned prompt (file or ``Prompt``) or a fixed phrase (``hard_prompt``).

    Raises:
        PromptWidthError: the prompt's width differs from the CLIP's text width (both are named).
    """
    if (prompt is None) == (hard_prompt is None):
        raise ValueError("give exactly one of prompt (a POMP prompt file) or hard_prompt (e.g. 'a photo of a')")
    if hard_prompt is not None:
        return PromptedTextEncoder.from_clip(clip.model, init=hard_prompt)
    source = str(prompt) if not isinstance(prompt, Prompt) else "the prompt"
    prompt = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
    if prompt.clip_model and prompt.clip_model != clip.name:
        warnings.warn(f"{source} was trained with CLIP {prompt.clip_model}, but is used with {clip.name}")
    try:
        return PromptedTextEncoder(FrozenTextTower(clip.model), prompt.ctx)
    except PromptWidthError as error:
        raise PromptWidthError(f"{source} does not fit CLIP {clip.name}: {error}") from None


def load_for_prompt(
    prompt: Optional[str | os.PathLike | Prompt] = None,
    clip_model: Optional[str] = None,
    clip_pretrained: Optional[str] = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
) -> tuple[LoadedClip, Optional[Prompt]]:
    """The CLIP a prompt belongs to: ``clip_model`` if given, else the one the prompt file names, else ViT-B-16."""
    if prompt is not None and not isinstance(prompt, Prompt):
        prompt = load_prompt(prompt)
    name = clip_model or (prompt.clip_model if prompt is not None else None) or DEFAULT_CLIP
    return load_clip(name, clip_pretrained, device=device, dtype=dtype), prompt


def vocabulary_embeddings(
    vocabulary: Vocabulary | Sequence[str],
    prompt: Optional[str | os.PathLike | Prompt] = None,
    hard_prompt: Optional[str] = None,
    clip_model: Optional[str] = None,
    clip_pretrained: Optional[str] = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    cache: bool | EmbeddingCache = True,
    normalize: bool = True,
    progress: bool = False,
    templates: Optional[str | Sequence[str]] = None,
) -> torch.Tensor:
    """Classifier weights ``[C, D]`` float32 on CPU for the classes of ``vocabulary`` (a ``Vocabulary`` or names).

    The text comes from exactly one of ``prompt`` (a learned prompt), ``hard_prompt`` (a phrase) or ``templates``
    (a template ensemble, see :mod:`.templates`; always normalised, never cached: ensembles are the baselines).
    ``cache``: ``True`` for the default ``EmbeddingCache()``, another cache, or ``False``. Through a cache, a
    second call with the same prompt, CLIP weights and names reads a file instead of running CLIP.
    """
    names = vocabulary.names if isinstance(vocabulary, Vocabulary) else list(vocabulary)
    if templates is not None:
        if prompt is not None or hard_prompt is not None:
            raise ValueError("give exactly one of prompt, hard_prompt or templates")
        clip, _ = load_for_prompt(None, clip_model, clip_pretrained, device, dtype)
        return template_embeddings(clip, names, templates, progress=progress).float().cpu()
    clip, prompt = load_for_prompt(prompt, clip_model, clip_pretrained, device, dtype)
    encoder = prompted_encoder(clip, prompt=prompt, hard_prompt=hard_prompt)
    if cache is True:
        cache = EmbeddingCache()
    return class_embeddings(encoder, names, cache or None, normalize=normalize, progress=progress)
