"""The packed, shared-prefix path of CLIP's text transformer: exact, and far fewer tokens than padding.

The causal mask makes the feature at a position depend only on the tokens up to it. ``[SOT] ctx`` is the same for
every prompt, so its hidden states are computed once (batch 1) and every prompt attends to them; the per-token work
(layer norms, projections, MLPs) then runs on the real name tokens of all prompts packed into one ``[T, width]``
matrix, with no padding. Only the attention itself sees a padded ``[B, S]`` layout. For ImageNet-21K names with 4
ctx tokens this is about a quarter of the tokens of a batch cut after its last EOT, and a tenth at 16.

This re-implements open_clip's ``ResidualAttentionBlock`` around ``torch.nn.MultiheadAttention``, as open_clip 3.3
builds every OpenAI-style text tower; ``packing_obstacle`` says when a tower is built otherwise (then the encoders
take the plain path, with a warning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from .device import to_device
from .tokenization import TokenizedPrompts


def packing_obstacle(transformer: nn.Module) -> str | None:
    """Why the packed path cannot run open_clip's text ``transformer``, or ``None`` when it can: every block must be
    open_clip's ``ResidualAttentionBlock`` around a ``torch.nn.MultiheadAttention`` with one joint q/k/v
    projection, no ``bias_k``/``bias_v`` and no zero attention, in a batch-first transformer."""
    for i, block in enumerate(transformer.resblocks):
        if type(block) is not ResidualAttentionBlock:
            return f"text block {i} is {_qualified_name(block)}, not open_clip's ResidualAttentionBlock"
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention):
            return f"the attention of text block {i} is {_qualified_name(attn)}, not torch.nn.MultiheadAttention"
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            return f"the attention of text block {i} has separate q/k/v projections, bias_k/bias_v or add_zero_attn"
    if not getattr(transformer, "batch_first", False):
        return "the text transformer is not batch-first"
    return None


def _qualified_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


@dataclass
class PackedPrompts:
    """Prompts laid out for the shared-prefix, packed path (see the module docstring).

    The ``T`` suffix tokens (positions ``P..eot`` of each prompt, prompt after prompt) are packed in one matrix
    after the ``P`` shared prefix rows. ``ids``/``positions``: ``[T]`` token ids and positions; ``slots``: ``[T]``
    row-major index ``b * S + s`` of each token in the padded ``[B, S]`` layout attention uses; ``eot_rows``:
    ``[B]`` row of each prompt's EOT token in ``[prefix; packed]``; ``mask``: ``[S, P + S]`` bool, True where
    suffix position ``s`` may attend (every prefix key, the suffix keys up to ``s``; a padded row only sees
    padding above the real rows' diagonal, so real rows never read padding). ``prompts`` keeps the token ids for
    towers the packed path does not cover.

    ``attention_rows``: rows of that padded layout, ``B`` unless ``fixed`` added scratch rows.

    Build it where the prompts are (the CPU, in training) and move it with ``to``: no step waits for the GPU.
    """

    prompts: TokenizedPrompts
    num_prefix: int
    ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    eot_rows: torch.Tensor
    mask: torch.Tensor
    attention_rows: int

    @property
    def length(self) -> int:
        return self.mask.shape[0]

    @classmethod
    def of(cls, prompts: TokenizedPrompts, num_prefix: int) -> PackedPrompts:
        batch, full_length = prompts.ids.shape
        length = full_length - num_prefix
        positions = torch.arange(full_length, device=prompts.ids.device).expand(batch, -1)
        real = (positions >= num_prefix) & (positions <= prompts.eot[:, None])  # [B, L]: the suffix tokens
        rows = torch.arange(batch, device=real.device)[:, None]
        slots = (rows * length + positions - num_prefix)[real]
        eot_rows = num_prefix + torch.cumsum(prompts.eot - num_prefix + 1, 0) - 1
        return cls(
            prompts,
            num_prefix,
            prompts.ids[real],
            positions[real],
            slots,
            eot_rows,
            _suffix_mask(num_prefix, length, real.device),
            batch,
        )

    @classmethod
    def fixed(cls, prompts: TokenizedPrompts, num_prefix: int, rows: int, length: int, bucket: int) -> PackedPrompts:
        """A layout with few distinct shapes, so that each can be captured once as a CUDA graph and replayed.

        The prompts are padded to ``rows`` with copies of the first (whose features are to be ignored) and packed
        as by ``of`` with ``length`` suffix positions (which must reach every EOT); then the packed tokens are
        padded to a multiple of ``bucket`` with throw-away tokens, which sit in ``scratch_rows(bucket, length)``
        extra rows of the attention layout. The shapes then depend only on ``rows``, ``length`` and the rounded
        token count.
        """
        count, columns = prompts.ids.shape
        if count > rows or int(prompts.eot.max()) >= num_prefix + length:
            raise ValueError(
                f"{count} prompts up to position {int(prompts.eot.max())} do not fit a fixed layout "
                f"of {rows} rows and {length} suffix tokens"
            )
        ids = prompts.ids.new_zeros(rows, num_prefix + length)
        ids[:count, : min(columns, num_prefix + length)] = prompts.ids[:, : num_prefix + length]
        ids[count:] = ids[0]
        packed = cls.of(
            TokenizedPrompts(ids, torch.cat([prompts.eot, prompts.eot[:1].expand(rows - count)])), num_prefix
        )
        padding = -len(packed.ids) % bucket
        spare = torch.arange(padding, device=ids.device)
        return cls(
            packed.prompts,
            num_prefix,
            torch.cat([packed.ids, torch.zeros_like(spare)]),
            torch.cat([packed.positions, num_prefix + spare % length]),
            torch.cat([packed.slots, rows * length + spare]),
            packed.eot_rows,
            packed.mask,
            rows + scratch_rows(bucket, length),
        )

    def to(self, device: torch.device | str) -> PackedPrompts:
        moved = {
            name: to_device(getattr(self, name), device) for name in ("ids", "positions", "slots", "eot_rows", "mask")
        }
        prompts = TokenizedPrompts(to_device(self.prompts.ids, device), to_device(self.prompts.eot, device))
        return PackedPrompts(prompts, self.num_prefix, **moved, attention_rows=self.attention_rows)


def scratch_rows(bucket: int, length: int) -> int:
    """Attention rows that hold the fewer than ``bucket`` padding tokens of a ``fixed`` layout."""
    return -(-bucket // length)


def _suffix_mask(num_prefix: int, length: int, device: torch.device) -> torch.Tensor:
    """``[S, P + S]`` bool: suffix position ``s`` sees every prefix key and the suffix keys up to ``s``."""
    query = torch.arange(length, device=device)[:, None]
    key = torch.arange(num_prefix + length, device=device)[None, :]
    return key <= query + num_prefix


def _short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out as batched matrix products, for the suffix's few queries and keys.

    Fused attention kernels tile queries by 64 or 128; with ~10 queries and ~15 keys per prompt they do mostly
    padding work (on an H200 they took a third of the text side's time). ``q``: ``[..., S, head_dim]``;
    ``k``, ``v``: ``[..., K, head_dim]``; ``mask``: ``[S, K]`` bool, True where attending is allowed.
    """
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    weights = scores.float().masked_fill(~mask, float("-inf")).softmax(dim=-1).to(v.dtype)
    return weights @ v


def packed_block(block: ResidualAttentionBlock, x: torch.Tensor, layout: PackedPrompts) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` on ``x = [prefix (P rows); packed suffix tokens (T rows)]``."""
    attn = block.attn
    width, heads, num_prefix, length = x.shape[1], attn.num_heads, layout.num_prefix, layout.length
    rows = layout.attention_rows
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # [P + T, 3 * width]
    prefix = qkv[:num_prefix].view(num_prefix, 3, heads, -1).permute(1, 2, 0, 3)  # [3, heads, P, head_dim]
    prefix_out = F.scaled_dot_product_attention(prefix[0], prefix[1], prefix[2], is_causal=True)
    padded = qkv.new_zeros(rows * length, 3 * width).index_copy(0, layout.slots, qkv[num_prefix:])
    q, k, v = padded.view(rows, length, 3, heads, -1).permute(2, 0, 3, 1, 4)  # each [rows, heads, S, head_dim]
    k = torch.cat([prefix[1].expand(rows, -1, -1, -1), k], dim=2)
    v = torch.cat([prefix[2].expand(rows, -1, -1, -1), v], dim=2)
    suffix_out = _short_attention(q, k, v, layout.mask)  # [rows, heads, S, head_dim]
    # index_select, not indexing: its backward adds rows without sorting, which a CUDA graph can capture
    suffix_out = suffix_out.transpose(1, 2).reshape(rows * length, width).index_select(0, layout.slots)
    out = torch.cat([prefix_out.transpose(0, 1).reshape(num_prefix, width), suffix_out])
    x = x + block.ls_1(attn.out_proj(out))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
