"""From (prompt, CLIP, class names) to classifier weights: the one entry point the toolkit adapters use.

Which CLIP: a prompt only works with the CLIP it was trained with, so by default (``clip_pretrained="auto"``,
``clip_model=None``) the model, weights and activation come from the prompt file. Asking for another one is
allowed (a local copy of the same weights, say) and warned about (:class:`ClipMismatchWarning`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import EmbeddingCache, raw_embeddings
from .clip import LoadedClip, WeightsUnavailableError, load_clip, normalize_pretrained
from .prompt_file import Prompt, load_prompt
from .templates import template_embeddings
from .text_encoder import FrozenTextTower, PromptedTextEncoder, PromptWidthError
from .vocabularies import VocabularySpec, parse_vocabulary

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


def class_embeddings(
    vocabulary: VocabularySpec | None = None,
    *,
    prompt: str | os.PathLike | Prompt | None = None,
    hard_prompt: str | None = None,
    templates: str | Sequence[str] | None = None,
    embedding_file: str | os.PathLike | None = None,
    clip: LoadedClip | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    dim: int | None = None,
    normalize: bool = True,
    cache: bool | EmbeddingCache = True,
    batch_size: int = 4096,
    progress: bool = False,
) -> torch.Tensor:
    """Class embeddings ``[C, D]`` float32 on CPU, one row per class of ``vocabulary``, in its order: the one path
    from class names to classifier weights, used by the tools, the trainer and both toolkit adapters.

    ``vocabulary``: anything :func:`parse_vocabulary` reads (a name, a names file, comma-separated names, a list,
    a ``Vocabulary``). The rows come from exactly one source:

    - ``prompt``: a learned POMP prompt (a file, ``hf-hub:...``, or a ``Prompt``);
    - ``hard_prompt``: a fixed phrase (``"a photo of a"`` encodes ``"a photo of a {name}."``);
    - ``templates``: a template ensemble (``"imagenet80"``, ``"vild"`` or a list, see :mod:`.templates`): each row
      is the mean of the class's normalised template embeddings;
    - ``embedding_file``: precomputed rows (Detic's ``.npy`` or a torch ``[C, D]`` tensor), read as stored; with a
      ``vocabulary`` too, their class counts must agree.

    ``clip``: an already loaded CLIP to encode with; otherwise the CLIP is loaded as in :func:`load_for_prompt`
    (``clip_model``/``clip_pretrained``/``device``/``dtype``; by default the one the prompt file records).
    ``dim``: the width the caller's classifier expects. ``normalize``: L2-normalise each row (the default; ``False``
    gives the raw text features, or the file's rows as stored). ``cache``: ``True`` for the default
    :class:`EmbeddingCache`, another cache, or ``False``; a second call with the same prompt, CLIP and names then
    reads a file instead of running CLIP (template ensembles are never cached).

    Raises:
        ValueError: not exactly one source, or no vocabulary for a text source.
        EmbeddingFileError: the rows are not ``dim`` wide, or the file's class count differs from the vocabulary's.
        VocabularyError, FileNotFoundError, PromptFileError, PromptWidthError, WeightsUnavailableError: bad input,
            each naming what is wrong.
    """
    sources = {"prompt": prompt, "hard_prompt": hard_prompt, "templates": templates, "embedding_file": embedding_file}
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(sources)} (got {', '.join(given) or 'none'})")
    names = parse_vocabulary(vocabulary).names if vocabulary is not None else None
    if embedding_file is not None:
        embeddings = load_embedding_file(embedding_file, dim)
        if names is not None and len(names) != len(embeddings):
            raise EmbeddingFileError(
                f"{embedding_file} holds {len(embeddings)} classes but the vocabulary has {len(names)}"
            )
    else:
        if names is None:
            raise ValueError(f"encoding class names with a {given[0].replace('_', ' ')} needs a vocabulary")
        if clip is None:
            clip, prompt = load_for_prompt(prompt, clip_model, clip_pretrained, device, dtype)
        if templates is not None:
            embeddings = template_embeddings(clip, names, templates, batch_size, progress).float().cpu()
        else:
            encoder = prompted_encoder(clip, prompt=prompt, hard_prompt=hard_prompt)
            cache = EmbeddingCache() if cache is True else cache
            if cache:
                embeddings = cache.encode(encoder, names, batch_size, progress)
            else:
                embeddings = raw_embeddings(encoder, names, batch_size, progress)
        if dim is not None and embeddings.shape[1] != dim:
            raise EmbeddingFileError(
                f"CLIP {clip.name} gives {embeddings.shape[1]}-d text embeddings, but the classifier expects "
                f"dimension {dim}"
            )
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


class EmbeddingFileError(ValueError):
    """An embedding file of the wrong shape or dimension, or one that disagrees with its vocabulary."""


#: Precomputed class embeddings ``[C, D]``: a tensor, a numpy array, or a file (Detic's ``.npy``, a torch tensor).
ClassEmbeddings = torch.Tensor | np.ndarray | str | os.PathLike


def load_embedding_file(source: ClassEmbeddings, dim: int | None = None) -> torch.Tensor:
    """Read precomputed class embeddings: a ``.npy`` (Detic's format: ``[C, D]``, usually float16, unnormalised), a
    file holding a torch ``[C, D]`` tensor, or such a tensor or numpy array itself.

    Returns ``[C, D]`` float32 on the CPU, the values as given. Raises ``EmbeddingFileError`` if it is not 2-D or if
    ``dim`` is given and differs from ``D`` (both are named), ``FileNotFoundError`` for a missing file.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"embedding file {str(path)!r} does not exist")
        if path.suffix == ".npy":
            weights = torch.from_numpy(np.load(path).astype(np.float32))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True).float()
    else:
        path = "the class embeddings"
        weights = source if isinstance(source, torch.Tensor) else torch.from_numpy(np.asarray(source))
        weights = weights.detach().to("cpu", torch.float32)
    if weights.ndim != 2:
        raise EmbeddingFileError(f"{path}: expected class embeddings of shape [C, D], found {tuple(weights.shape)}")
    if dim is not None and weights.shape[1] != dim:
        raise EmbeddingFileError(
            f"{path}: embeddings have dimension {weights.shape[1]}, but the classifier expects dimension {dim}"
        )
    return weights
