"""From (prompt, CLIP, class names) to classifier weights: the one entry point the toolkit adapters use.

Which CLIP: a prompt only works with the CLIP it was trained with, so by default (``clip_pretrained="auto"``,
``clip_model=None``) the model, weights and activation come from the prompt file. Asking for another one is
allowed (a local copy of the same weights, say) and warned about (:class:`ClipMismatchWarning`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch

from .cache import EmbeddingCache, class_embeddings
from .clip import LoadedClip, WeightsUnavailableError, load_clip, normalize_pretrained
from .prompt_file import Prompt, load_prompt
from .templates import template_embeddings
from .text_encoder import FrozenTextTower, PromptedTextEncoder, PromptWidthError
from .vocabularies import Vocabulary

DEFAULT_CLIP = "ViT-B-16"
AUTO = "auto"
DEFAULT_PRETRAINED = AUTO  # the weights the prompt file records, else FALLBACK_PRETRAINED
FALLBACK_PRETRAINED = "openai"
DEFAULT_HARD_PROMPT = "a photo of a"


class ClipMismatchWarning(UserWarning):
    """A prompt is used with another CLIP (model, weights or activation) than the one it was trained with."""


def _normalized_name(name: str) -> str:
    return name.replace("/", "-")


def clip_mismatches(prompt: Prompt, clip: LoadedClip) -> list[str]:
    """What differs between the CLIP ``prompt`` records and ``clip`` (empty when the prompt records none)."""
    if prompt.clip_model is None:
        return []
    found = []
    if _normalized_name(prompt.clip_model) != clip.name:
        found.append(f"model {prompt.clip_model} (now {clip.name})")
    if normalize_pretrained(prompt.clip_pretrained) != clip.pretrained:
        found.append(f"weights {prompt.clip_pretrained or 'random'} (now {clip.pretrained or 'random'})")
    if prompt.clip_quick_gelu is not None and prompt.clip_quick_gelu != clip.quick_gelu:

        def act(quick: bool) -> str:
            return "QuickGELU" if quick else "GELU"

        found.append(f"activation {act(prompt.clip_quick_gelu)} (now {act(clip.quick_gelu)})")
    return found


def prompted_encoder(
    clip: LoadedClip, prompt: str | os.PathLike | Prompt | None = None, hard_prompt: str | None = None
) -> PromptedTextEncoder:
    """A text encoder for ``clip`` with a learned prompt (file or ``Prompt``) or a fixed phrase (``hard_prompt``).

    Warns (``ClipMismatchWarning``) when the prompt records another CLIP than ``clip``.

    Raises:
        PromptWidthError: the prompt's width differs from the CLIP's text width (both are named).
    """
    if (prompt is None) == (hard_prompt is None):
        raise ValueError("give exactly one of prompt (a POMP prompt file) or hard_prompt (e.g. 'a photo of a')")
    if hard_prompt is not None:
        return PromptedTextEncoder.from_clip(clip.model, init=hard_prompt)
    source = os.fspath(prompt) if not isinstance(prompt, Prompt) else "the prompt"
    prompt = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
    differences = clip_mismatches(prompt, clip)
    if differences:
        warnings.warn(
            f"{source} was trained with another CLIP: {'; '.join(differences)}. Its embeddings are only "
            "meaningful with the CLIP it was trained with.",
            ClipMismatchWarning,
            stacklevel=2,
        )
    try:
        return PromptedTextEncoder(FrozenTextTower(clip.model), prompt.ctx)
    except PromptWidthError as error:
        raise PromptWidthError(f"{source} does not fit CLIP {clip.name}: {error}") from None


def load_for_prompt(
    prompt: str | os.PathLike | Prompt | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
) -> tuple[LoadedClip, Prompt | None]:
    """The CLIP a prompt belongs to, and the prompt read.

    ``clip_model``: ``None`` = the model the prompt records, else ViT-B-16. ``clip_pretrained``: ``"auto"`` =
    the weights the prompt records, else ``openai``; ``None``/``"none"`` = random weights; or a tag or file. The
    activation follows the weights (see :func:`load_clip`); when a weights file cannot tell, the prompt's.
    """
    if prompt is not None and not isinstance(prompt, Prompt):
        prompt = load_prompt(prompt)
    recorded = prompt is not None and prompt.clip_model is not None
    name = clip_model or (prompt.clip_model if recorded else None) or DEFAULT_CLIP
    if clip_pretrained == AUTO:
        pretrained = prompt.clip_pretrained if recorded else FALLBACK_PRETRAINED
    else:
        pretrained = clip_pretrained
    try:
        clip = load_clip(
            name,
            pretrained,
            device=device,
            dtype=dtype,
            prompt_quick_gelu=prompt.clip_quick_gelu if prompt is not None else None,
        )
    except WeightsUnavailableError as error:
        if clip_pretrained != AUTO or not recorded:
            raise
        raise WeightsUnavailableError(
            f"the prompt was trained with CLIP {name} / {pretrained}, which cannot be "
            f"loaded here ({error}); pass the weights explicitly "
            "(--clip-pretrained TAG_OR_FILE)"
        ) from error
    return clip, prompt


def vocabulary_embeddings(
    vocabulary: Vocabulary | Sequence[str],
    prompt: str | os.PathLike | Prompt | None = None,
    hard_prompt: str | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    cache: bool | EmbeddingCache = True,
    normalize: bool = True,
    progress: bool = False,
    templates: str | Sequence[str] | None = None,
) -> torch.Tensor:
    """Classifier weights ``[C, D]`` float32 on CPU for the classes of ``vocabulary`` (a ``Vocabulary`` or names).

    The text comes from exactly one of ``prompt`` (a learned prompt), ``hard_prompt`` (a phrase) or ``templates``
    (a template ensemble, see :mod:`.templates`; always normalised, never cached: ensembles are the baselines).
    The CLIP is chosen as in :func:`load_for_prompt`. ``cache``: ``True`` for the default ``EmbeddingCache()``,
    another cache, or ``False``. Through a cache, a second call with the same prompt, CLIP and names reads a
    file instead of running CLIP.
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
