"""POMP prompt files: small, self-describing, and compatible with the released reference checkpoints.

Our format is a ``torch.save``'d dict (a few KB)::

    {"format": "pomp-prompt", "version": 1, "ctx": Tensor[n_ctx, width] float32,
     "clip_model": "ViT-B-16", "clip_pretrained": "openai", "clip_quick_gelu": True, "n_ctx": 4,
     "class_token_position": "end", "meta": {...}}

Every prompt is encoded as ``[SOT] ctx_1..ctx_n <name> . [EOT]`` (the text ``"{ctx} {name}."``): the format has no
other text layout. Files written before also recorded that as ``"template": "{ctx} {name}."``; they load, and a file
whose template is anything else is refused rather than encoded with a layout it was not trained with.

The reference implementation's (Dassl) checkpoints, ``{"state_dict": {"ctx": Tensor[n_ctx, 512] fp16}, "epoch",
"optimizer", "scheduler", ...}``, load too, through an unpickler that never runs code from the file (see
:mod:`.safe_load`). They do not say which CLIP they were trained with: the released ones are named after it
(``vit_b16_ep5_...``, ``vit_b32_...``, ``vit_l14_...``), always with OpenAI's weights, and that is read from the
file name when it follows that pattern.

Wherever a prompt file is accepted, ``hf-hub:ORG/REPO/FILE`` (or ``hf-hub:ORG/REPO`` when the repository holds a
single prompt file) names one on the Hugging Face model hub, fetched into (or read from) the hub's local cache.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_save
from .safe_load import safe_torch_load

FORMAT = "pomp-prompt"
VERSION = 1
CLASS_TOKEN_POSITIONS = ("end",)
#: The text layout of every prompt; older files recorded it as ``"template"``, and only this value loads.
ENCODED_TEMPLATE = "{ctx} {name}."
HF_HUB_PREFIX = "hf-hub:"
PROMPT_FILE_PATTERNS = ("*.pth.tar*", "*.pt", "*.pth")

# Backbone prefixes of the reference's checkpoint names (its config names) -> open_clip model names.
_REFERENCE_BACKBONES = {
    "vit_b16": "ViT-B-16",
    "vit_b32": "ViT-B-32",
    "vit_l14": "ViT-L-14",
    "rn50": "RN50",
    "rn101": "RN101",
}


class PromptFileError(ValueError):
    """A file that is not a POMP prompt, or one this version cannot read."""


@dataclass
class Prompt:
    """A learned soft prompt and the CLIP it belongs to.

    ``ctx``: ``[n_ctx, width]`` float32. ``clip_model``/``clip_pretrained`` are ``None`` when unknown (a
    reference checkpoint not named after its backbone); ``clip_pretrained`` is also ``None`` for random weights
    when ``clip_model`` is set. ``clip_quick_gelu``: the text tower's activation it was trained with (``None``:
    not recorded). ``meta`` holds free-form provenance (training settings, epoch, accuracy, source...).
    """

    ctx: torch.Tensor
    clip_model: str | None = None
    clip_pretrained: str | None = None
    class_token_position: str = "end"
    meta: dict = field(default_factory=dict)
    clip_quick_gelu: bool | None = None

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]


def save_prompt(prompt: Prompt, path: str | os.PathLike) -> None:
    """Write ``prompt`` to ``path`` atomically in the ``pomp-prompt`` format."""
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "ctx": prompt.ctx.detach().float().cpu().contiguous(),
            "clip_model": prompt.clip_model,
            "clip_pretrained": prompt.clip_pretrained,
            "clip_quick_gelu": prompt.clip_quick_gelu,
            "n_ctx": prompt.n_ctx,
            "class_token_position": prompt.class_token_position,
            "meta": prompt.meta,
        },
        path,
    )


def resolve_prompt_path(spec: str | os.PathLike) -> Path:
    """A local path for ``spec``: a file path, or ``hf-hub:ORG/REPO[/FILE]`` fetched through the hub's cache.

    Without ``FILE`` the repository must hold exactly one prompt-like file (``*.pth.tar*``, ``*.pt``, ``*.pth``).
    Offline (``HF_HUB_OFFLINE=1``) only the local hub cache is read.

    Raises:
        FileNotFoundError: a local path that does not exist, or a hub file that cannot be fetched or found in
            the cache (the message says which and why).
        PromptFileError: a malformed ``hf-hub:`` name, or a repository with several prompt files and none named.
    """
    text = os.fspath(spec)
    if not text.startswith(HF_HUB_PREFIX):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file {text!r} does not exist")
        return path
    parts = text[len(HF_HUB_PREFIX) :].strip("/").split("/", 2)
    if len(parts) < 2 or not all(parts):
        raise PromptFileError(f"{text!r}: expected hf-hub:ORG/REPO or hf-hub:ORG/REPO/FILE")
    repo_id, filename = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)

    import huggingface_hub
    from huggingface_hub.errors import HFValidationError

    try:
        if filename is not None:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename))
        folder = Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=list(PROMPT_FILE_PATTERNS)))
    except HFValidationError as error:
        raise PromptFileError(f"{text!r}: {error}") from error
    except Exception as error:  # offline cache misses, network and HTTP errors: all mean "not available here"
        raise FileNotFoundError(
            f"cannot get prompt {text!r} from the model hub: {type(error).__name__}: {error}\n"
            "Without access to the hub, download the file where you can and pass its local path, or copy it into "
            "the hub cache (HF_HUB_CACHE)."
        ) from error
    candidates = sorted(
        p.relative_to(folder).as_posix()
        for pattern in PROMPT_FILE_PATTERNS
        for p in folder.rglob(pattern)
        if p.is_file()
    )
    if len(candidates) != 1:
        found = ", ".join(candidates) or "none"
        raise PromptFileError(f"{text!r}: name one prompt file, as hf-hub:{repo_id}/FILE (prompt files there: {found})")
    return folder / candidates[0]


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:10]}"
    return f"a {type(obj).__name__}"


def load_prompt(path: str | os.PathLike) -> Prompt:
    """Read a prompt file in our format or the reference ``{"state_dict": {"ctx": ...}, ...}`` format.

    ``path`` may be ``hf-hub:ORG/REPO[/FILE]`` (see :func:`resolve_prompt_path`). Nothing pickled in the file
    is ever run: objects of unknown classes (e.g. a Dassl scheduler) load as inert placeholders.

    Raises:
        FileNotFoundError: ``path`` does not exist (or is not available from the hub).
        PromptFileError: the file is corrupt or truncated, is not a prompt (says what it found instead), is a
            newer format version, or records a template other than ``"{ctx} {name}."``; the message starts with the
            file name.
    """
    source = os.fspath(path)
    path = resolve_prompt_path(path)
    name = source if source.startswith(HF_HUB_PREFIX) else str(path)
    expected = f"a POMP prompt file ({FORMAT!r} dict or reference checkpoint {{'state_dict': {{'ctx': ...}}}})"
    try:
        obj = safe_torch_load(path)
    except Exception as error:  # a damaged file fails anywhere in torch's zip reader or in pickle
        raise PromptFileError(
            f"{name}: expected {expected}, but it cannot be read as one (corrupt or truncated?): "
            f"{type(error).__name__}: {error}"
        ) from error

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
            raise PromptFileError(
                f"{name}: prompt format version {obj.get('version')!r} is not one this version reads (up to {VERSION})"
            )
        position = obj.get("class_token_position", "end")
        if position not in CLASS_TOKEN_POSITIONS:
            raise PromptFileError(f"{name}: class token position {position!r}; supported: {CLASS_TOKEN_POSITIONS}")
        template = obj.get("template", ENCODED_TEMPLATE)
        if template != ENCODED_TEMPLATE:
            raise PromptFileError(
                f"{name}: template {template!r}; this version encodes every prompt as {ENCODED_TEMPLATE!r} "
                "([SOT], ctx, the class name, a full stop) and would not encode it as it was trained"
            )
        return Prompt(
            ctx=_checked_ctx(obj.get("ctx"), name, expected),
            clip_model=_optional_str(obj.get("clip_model"), "clip_model", name),
            clip_pretrained=_optional_str(obj.get("clip_pretrained"), "clip_pretrained", name),
            class_token_position=position,
            meta=dict(obj.get("meta") or {}),
            clip_quick_gelu=obj.get("clip_quick_gelu") if isinstance(obj.get("clip_quick_gelu"), bool) else None,
        )
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if isinstance(state, dict):
        ctx = state.get("ctx", state.get("prompt_learner.ctx"))
        if ctx is not None:
            epoch = obj.get("epoch")
            meta = {"source": "reference checkpoint", "epoch": epoch if isinstance(epoch, int) else None}
            clip_model = reference_backbone(path.name)
            if clip_model is not None:
                meta["clip_from"] = "the reference's checkpoint name"
            return Prompt(
                ctx=_checked_ctx(ctx, name, expected),
                clip_model=clip_model,
                clip_pretrained="openai" if clip_model else None,
                clip_quick_gelu=True,
                meta=meta,
            )
    raise PromptFileError(f"{name}: expected {expected}, found {_describe(obj)}")


def reference_backbone(filename: str) -> str | None:
    """The open_clip model a reference checkpoint was trained with, from its name (``vit_b32_ep5_...``)."""
    match = re.match(r"(vit_[bl]\d\d|rn50|rn101)_", filename.lower())
    return _REFERENCE_BACKBONES.get(match.group(1)) if match else None


def _optional_str(value: Any, key: str, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise PromptFileError(f"{name}: {key} should be a string, found {_describe(value)}")


def _checked_ctx(ctx: Any, name: str, expected: str) -> torch.Tensor:
    if not isinstance(ctx, torch.Tensor) or ctx.ndim != 2 or not ctx.is_floating_point():
        found = f"shape {tuple(ctx.shape)}, {ctx.dtype}" if isinstance(ctx, torch.Tensor) else _describe(ctx)
        raise PromptFileError(
            f"{name}: expected {expected} with a floating-point ctx of shape [n_ctx, width], found {found}"
        )
    if not torch.isfinite(ctx).all():
        raise PromptFileError(f"{name}: ctx holds NaN or infinite values")
    return ctx.detach().float().clone()  # a fresh tensor: nothing the file attached (hooks, attributes) comes along
