"""POMP prompt files: small, self-describing, and compatible with the released reference checkpoints.

Our format is a ``torch.save``'d dict (a few KB)::

    {"format": "pomp-prompt", "version": 1, "ctx": Tensor[n_ctx, width] float32,
     "clip_model": "ViT-B-16", "clip_pretrained": "openai", "n_ctx": 4,
     "class_token_position": "end", "template": "{ctx} {name}.", "meta": {...}}

The reference implementation's checkpoints, ``{"state_dict": {"ctx": Tensor[n_ctx, 512] fp16}, "epoch": ...}``,
load too; they do not say which CLIP they were trained with (the released ones used ViT-B/16, OpenAI weights).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from .atomic import atomic_save

FORMAT = "pomp-prompt"
VERSION = 1
CLASS_TOKEN_POSITIONS = ("end",)
TEMPLATE = "{ctx} {name}."


class PromptFileError(ValueError):
    """A file that is not a POMP prompt, or one this version cannot read."""


@dataclass
class Prompt:
    """A learned soft prompt and the CLIP it belongs to.

    ``ctx``: ``[n_ctx, width]`` float32. ``clip_model``/``clip_pretrained`` are ``None`` when unknown (reference
    checkpoints). ``meta`` holds free-form provenance (training settings, epoch, accuracy...).
    """

    ctx: torch.Tensor
    clip_model: Optional[str] = None
    clip_pretrained: Optional[str] = None
    class_token_position: str = "end"
    template: str = TEMPLATE
    meta: dict = field(default_factory=dict)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    @property
    def width(self) -> int:
        return self.ctx.shape[1]


def save_prompt(prompt: Prompt, path: str | os.PathLike) -> None:
    """Write ``prompt`` to ``path`` atomically in the ``pomp-prompt`` format."""
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "ctx": prompt.ctx.detach().float().cpu().contiguous(),
            "clip_model": prompt.clip_model,
            "clip_pretrained": prompt.clip_pretrained,
            "n_ctx": prompt.n_ctx,
            "class_token_position": prompt.class_token_position,
            "template": prompt.template,
            "meta": prompt.meta,
        },
        path,
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:10]}"
    return f"a {type(obj).__name__}"


def load_prompt(path: str | os.PathLike) -> Prompt:
    """Read a prompt file in our format or the reference ``{"state_dict": {"ctx": ...}}`` format.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PromptFileError: the file is not a prompt (says what it found instead), or is a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    expected = f"a POMP prompt file ({FORMAT!r} dict or reference checkpoint {{'state_dict': {{'ctx': ...}}}})"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise PromptFileError(f"{path}: expected {expected}, but it cannot be read as one: {error}") from error

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version", 0) > VERSION:
            raise PromptFileError(f"{path}: prompt format version {obj['version']} is newer than {VERSION}")
        position = obj.get("class_token_position", "end")
        if position not in CLASS_TOKEN_POSITIONS:
            raise PromptFileError(f"{path}: class token position {position!r}; supported: {CLASS_TOKEN_POSITIONS}")
        return Prompt(
            ctx=_checked_ctx(obj.get("ctx"), path, expected),
            clip_model=obj.get("clip_model"),
            clip_pretrained=obj.get("clip_pretrained"),
            class_token_position=position,
            template=obj.get("template", TEMPLATE),
            meta=dict(obj.get("meta") or {}),
        )
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if isinstance(state, dict):
        ctx = state.get("ctx", state.get("prompt_learner.ctx"))
        if ctx is not None:
            meta = {"source": "reference checkpoint", "epoch": obj.get("epoch")}
            return Prompt(ctx=_checked_ctx(ctx, path, expected), meta=meta)
    raise PromptFileError(f"{path}: expected {expected}, found {_describe(obj)}")


def _checked_ctx(ctx: Any, path: Path, expected: str) -> torch.Tensor:
    if not isinstance(ctx, torch.Tensor) or ctx.ndim != 2:
        found = f"shape {tuple(ctx.shape)}" if isinstance(ctx, torch.Tensor) else _describe(ctx)
        raise PromptFileError(f"{path}: expected {expected} with ctx of shape [n_ctx, width], found {found}")
    return ctx.float()
