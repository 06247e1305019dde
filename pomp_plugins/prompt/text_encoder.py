"""The prompted CLIP text encoder (CoOp layout), the hard-prompt encoder, and the frozen text tower they share.

Layout of every prompt, in tokens::

    [SOT] ctx_1 ... ctx_n  <name tokens> <"."> [EOT]

The learned ``ctx`` vectors replace the token embeddings right after the start token. The causal mask makes two
exact savings possible, since the feature at a position depends only on the tokens up to it:

- *cut after EOT*: each batch is cut right after its last EOT token instead of being padded to CLIP's 77;
- *shared prefix, packed suffixes* (:mod:`.packed_attention`): ``[SOT] ctx`` is computed once and the name tokens
  of all prompts are packed without padding. It covers open_clip's standard text blocks (open_clip 3.3, which
  setup.py pins); a tower built otherwise falls back to the cut-after-EOT path, with a ``SlowTextPathWarning``.

Both paths give the same numbers as open_clip's ``encode_text`` (tested to 1e-5 in fp32).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .packed_attention import PackedPrompts, packed_block, packing_obstacle
from .tokenization import TokenizedPrompts, clip_tokenizer, tokenize

#: the open_clip release line the packed path re-implements and is tested with (setup.py pins it)
PACKED_PATH_OPEN_CLIP = "3.3"


class PromptWidthError(ValueError):
    """A prompt's width does not match the CLIP text tower it is used with."""


class SlowTextPathWarning(UserWarning):
    """A text tower is encoded without the packed path (same features, slower); the message says why."""


_SLOW_PATH_REASONS_WARNED: set[str] = set()


def _warn_slow_path(reason: str) -> None:
    """Warn, once per process and reason, that an encoder falls back from the packed path."""
    if reason in _SLOW_PATH_REASONS_WARNED:
        return
    _SLOW_PATH_REASONS_WARNED.add(reason)
    warnings.warn(
        f"the packed text path does not cover this CLIP's text tower ({reason}): encoding with the slower "
        f"cut-after-EOT path instead (same features). The packed path is tested with open_clip_torch "
        f"{PACKED_PATH_OPEN_CLIP}.x; this is open_clip_torch {open_clip.__version__}.",
        SlowTextPathWarning,
        stacklevel=2,
    )


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """CLIP's additive causal mask, ``[length, length]``: -inf above the diagonal."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu_(1)


class FrozenTextTower(nn.Module):
    """CLIP's text transformer from token embeddings to projected EOT features, sharing the CLIP's weights.

    Works with open_clip's ``CLIP`` and with ``CustomTextCLIP`` whose text tower is open_clip's
    ``TextTransformer`` with causal mask and argmax (EOT) pooling, i.e. every OpenAI-style CLIP.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        text = getattr(clip_model, "text", clip_model)
        pool_type = getattr(text, "pool_type", getattr(text, "text_pool_type", None))
        if pool_type != "argmax" or getattr(text, "cls_emb", None) is not None or not hasattr(text, "transformer"):
            raise NotImplementedError(
                f"the prompted encoder needs an OpenAI-style text tower (causal, EOT pooling); "
                f"{type(clip_model).__name__} pools with {pool_type!r}"
            )
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    @property
    def output_dim(self) -> int:
        proj = self.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[B, L, width]`` in the tower's dtype for token ids ``[B, L]``."""
        return self.token_embedding(ids)

    def forward(self, embeddings: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Projected features ``[B, output_dim]`` (float32, not normalised) at positions ``eot`` ``[B]``."""
        length = embeddings.shape[1]
        x = embeddings + self.positional_embedding[:length].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=causal_mask(length, x.dtype, x.device))
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot])

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_final(x)  # per-token, so taking the EOT rows first is exact
        proj = self.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x.float()

    @property
    def packable(self) -> bool:
        """Whether every block is open_clip's standard self-attention block, which the packed path re-implements."""
        return packing_obstacle(self.transformer) is None

    def encode_packed(self, prefix: torch.Tensor, packed: PackedPrompts) -> torch.Tensor:
        """Features ``[B, output_dim]`` (float32, not normalised) of prompts that all start with ``prefix``.

        ``prefix``: ``[P, width]`` embeddings of the first ``P = packed.num_prefix`` positions, shared by every
        prompt (e.g. the start token and ``ctx``); the tokens of ``packed`` follow it. ``packed`` must be on the
        tower's device.
        """
        prefix = prefix.to(self.dtype)
        if not self.packable:
            _warn_slow_path(packing_obstacle(self.transformer) or "the packed path is switched off")
            ids = packed.prompts.ids[:, packed.num_prefix :]
            return self(torch.cat([prefix.expand(len(ids), -1, -1), self.embed(ids)], dim=1), packed.prompts.eot)
        position = self.positional_embedding.to(self.dtype)
        x = torch.cat([prefix + position[: packed.num_prefix], self.embed(packed.ids) + position[packed.positions]])
        for block in self.transformer.resblocks:
            x = packed_block(block, x, packed)
        return self._project(x.index_select(0, packed.eot_rows))  # index_select: a backward without sorting


class PromptedTextEncoder(nn.Module):
    """CLIP text encoder with a learnable soft prompt ``ctx`` (``[n_ctx, width]``, float32) in the CoOp layout.

    The CLIP weights stay frozen in whatever dtype they were loaded in; ``ctx`` is an fp32 master copy cast to
    that dtype on the fly, so its gradient and updates keep full precision.
    """

    def __init__(self, tower: FrozenTextTower, ctx: torch.Tensor):
        super().__init__()
        if ctx.ndim != 2 or ctx.shape[1] != tower.width:
            raise PromptWidthError(
                f"the prompt has shape {tuple(ctx.shape)} (width {ctx.shape[-1]}), but this CLIP's text tower "
                f"has width {tower.width}: expected a prompt of shape [n_ctx, {tower.width}]"
            )
        self.tower = tower
        self.ctx = nn.Parameter(ctx.detach().to(device=tower.token_embedding.weight.device, dtype=torch.float32))

    @classmethod
    def from_clip(
        cls,
        clip_model: nn.Module,
        n_ctx: int = 4,
        init: str | None = None,
        std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> PromptedTextEncoder:
        """A fresh prompt: ``n_ctx`` vectors drawn from N(0, std), or the token embeddings of phrase ``init``
        (e.g. ``"a photo of a"``, then ``n_ctx`` is that phrase's token count)."""
        tower = FrozenTextTower(clip_model)
        if init:
            ids = torch.tensor(clip_tokenizer().encode(init), device=tower.token_embedding.weight.device)
            ctx = tower.embed(ids).float()
        else:
            ctx = torch.randn(n_ctx, tower.width, generator=generator) * std
        return cls(tower, ctx)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def tokenize(self, names: Sequence[str], device: torch.device | str | None = None) -> TokenizedPrompts:
        """Token ids of ``"{ctx} {name}."`` for each name, on ``device`` (default: the encoder's device)."""
        texts = [f"{name}." for name in names]
        return tokenize(texts, self.n_ctx, self.tower.context_length).to(device or self.ctx.device)

    def pack(self, prompts: TokenizedPrompts) -> PackedPrompts:
        """``prompts`` laid out for ``forward``, built where they are and moved to the encoder's device."""
        return PackedPrompts.of(prompts, 1 + self.n_ctx).to(self.ctx.device)

    def forward(self, prompts: TokenizedPrompts | PackedPrompts) -> torch.Tensor:
        """Projected text features ``[B, D]`` float32 (not normalised), differentiable w.r.t. ``ctx``."""
        packed = prompts if isinstance(prompts, PackedPrompts) else self.pack(prompts)
        start = _start_embedding(self.tower)
        return self.tower.encode_packed(torch.cat([start, self.ctx.to(start.dtype)]), packed)

    def encode_names(
        self,
        names: Sequence[str],
        batch_size: int = 4096,
        normalize: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Class embeddings ``[len(names), D]`` float32 on the encoder's device, in the order of ``names``.

        Prompts are sorted by length so each batch is cut as short as possible; gradients flow to ``ctx`` only
        if grad mode is on.
        """
        return encode_in_batches(self, self.tokenize(names, device="cpu"), batch_size, normalize, progress)


def _start_embedding(tower: FrozenTextTower) -> torch.Tensor:
    """``[1, width]``: the start token's embedding (every prompt begins with it), read without a device copy."""
    sot = clip_tokenizer().sot_token_id
    return tower.token_embedding.weight[sot : sot + 1]


def encode_in_batches(
    encode: nn.Module, prompts: TokenizedPrompts, batch_size: int, normalize: bool, progress: bool
) -> torch.Tensor:
    """Apply ``encode`` (tokens -> ``[B, D]``) over all ``prompts`` in length-sorted batches, order preserved."""
    if len(prompts) == 0:
        raise ValueError("no prompts to encode")
    order = torch.argsort(prompts.eot, stable=True)
    batches = range(0, len(prompts), batch_size)
    sorted_features = torch.cat(
        [
            encode(prompts.select(order[start : start + batch_size]))
            for start in tqdm(batches, desc="encoding", unit="batch", disable=not progress)
        ]
    )
    features = torch.empty_like(sorted_features)
    features[order.to(features.device)] = sorted_features
    return F.normalize(features, dim=-1) if normalize else features


class HardPromptEncoder(nn.Module):
    """Encodes fixed texts (e.g. ``"a bad photo of the {}."``) with the same cut-after-EOT batching."""

    def __init__(self, tower: FrozenTextTower):
        super().__init__()
        self.tower = tower

    def forward(self, prompts: TokenizedPrompts) -> torch.Tensor:
        packed = PackedPrompts.of(prompts, 1).to(self.tower.token_embedding.weight.device)
        return self.tower.encode_packed(_start_embedding(self.tower), packed)

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 4096, normalize: bool = True, progress: bool = False
    ) -> torch.Tensor:
        """Features ``[len(texts), D]`` float32 of the full texts, in order."""
        return encode_in_batches(self, tokenize(texts, 0, self.tower.context_length), batch_size, normalize, progress)
