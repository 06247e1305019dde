"""Prompt-template ensembles, the hard-prompt baselines of CLIP, ViLD and ZSSeg.

Each class embedding is the L2-normalised mean of the L2-normalised embeddings of ``template.format(name)`` over
the set's templates (CLIP's ImageNet recipe, and ZSSeg's ``PredefinedPromptExtractor``).

- ``imagenet80`` (alias ``openai``): the 80 templates of OpenAI's ImageNet zero-shot ensemble, as open_clip ships
  them (ZSSeg's ``IMAGENET_PROMPT`` is the same list in the same order);
- ``vild``: the 14 templates of ViLD, as ZSSeg lists them (``VILD_PROMPT``; two have no final full stop).
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F

from .clip import LoadedClip
from .text_encoder import FrozenTextTower, HardPromptEncoder

IMAGENET80: tuple[str, ...] = tuple(template("{}") for template in open_clip.OPENAI_IMAGENET_TEMPLATES)
VILD: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"imagenet80": IMAGENET80, "openai": IMAGENET80, "vild": VILD}


def get_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A template set by name, or a list of ``'{}'`` format strings as given.

    Raises:
        ValueError: an unknown set name, an empty list, or a template without exactly one ``{}``.
    """
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(
                f"unknown template set {templates!r}; known: {', '.join(TEMPLATE_SETS)} (or a list of '{{}}' templates)"
            )
        return TEMPLATE_SETS[templates]
    templates = tuple(templates)
    if not templates:
        raise ValueError("an empty template list")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"templates need exactly one '{{}}' for the class name: {bad}")
    return templates


@torch.no_grad()
def template_embeddings(
    clip: LoadedClip,
    names: Sequence[str],
    templates: str | Sequence[str],
    batch_size: int = 4096,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised class embeddings ``[len(names), D]`` float32 on CLIP's device, one template ensemble each."""
    template_set = get_templates(templates)
    texts = [template.format(name) for name in names for template in template_set]
    features = HardPromptEncoder(FrozenTextTower(clip.model)).encode_texts(texts, batch_size, True, progress)
    return F.normalize(features.view(len(names), len(template_set), -1).mean(dim=1), dim=-1)
