"""CLIP's tokenisation of prompts: token ids padded to the longest prompt, with room for the learned context.

A prompt is ``[SOT] <n_ctx placeholder slots> <text tokens> [EOT]``; the placeholders (id 0) are where a prompted
encoder puts its ``ctx`` vectors. A text too long for the context length is truncated and still ends with EOT, as
open_clip's tokenizer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from open_clip.tokenizer import SimpleTokenizer

_TOKENIZER: SimpleTokenizer | None = None


def clip_tokenizer() -> SimpleTokenizer:
    """CLIP's BPE tokenizer (shipped with open_clip), built once per process."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer()
    return _TOKENIZER


@dataclass
class TokenizedPrompts:
    """Token ids of a list of prompts, padded to the longest one.

    ``ids``: ``[C, L]`` int64, zero-padded; ``eot``: ``[C]`` int64, position of each prompt's EOT token.
    """

    ids: torch.Tensor
    eot: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def select(self, index: torch.Tensor) -> TokenizedPrompts:
        """The prompts at ``index`` (``[B]`` int64), cut right after their last EOT token."""
        eot = self.eot[index]
        return TokenizedPrompts(self.ids[index, : int(eot.max()) + 1], eot)

    def to(self, device: torch.device | str) -> TokenizedPrompts:
        return TokenizedPrompts(self.ids.to(device), self.eot.to(device))


def tokenize(texts: Sequence[str], n_ctx: int = 0, context_length: int = 77) -> TokenizedPrompts:
    """Tokenize ``texts`` as CLIP does, leaving ``n_ctx`` placeholder slots after the start token.

    A text too long for ``context_length`` is truncated and still ends with EOT, as open_clip's tokenizer does.
    """
    tokenizer = clip_tokenizer()
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    max_body = context_length - 2 - n_ctx
    if max_body < 1:
        raise ValueError(f"n_ctx={n_ctx} leaves no room for a class name in {context_length} tokens")
    rows = [[sot] + [0] * n_ctx + tokenizer.encode(text)[:max_body] + [eot] for text in texts]
    length = max((len(row) for row in rows), default=2)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return TokenizedPrompts(ids, torch.tensor([len(row) - 1 for row in rows], dtype=torch.long))
