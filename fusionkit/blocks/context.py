"""Intra-modal dialogue context: each utterance sees the whole conversation (cmath.md, step 1)."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from fusionkit.attention import Backend
from fusionkit.blocks.stream_cache import StreamCache
from fusionkit.blocks.transformer import TransformerLayer
from fusionkit.losses.masked import present
from fusionkit.typing import CHECKING, check_last_dim, typechecked


class DialogueContextEncoder(nn.Module):
    """Speaker and position embeddings, then ``depth`` pre-norm self-attention layers.

    Args:
        dim: feature width of input and output.
        depth: number of transformer layers.
        heads: attention heads.
        num_speakers: size of the speaker embedding table (ids 0..num_speakers-1).
        max_len: longest dialogue the learned position table covers.
        dropout: dropout inside the layers.
        attention_dropout: dropout on the attention weights (None: ``dropout``). 0 keeps
            SDPA's fused kernel on the CPU in training: memory linear in dialogue length.
        causal: utterance t sees utterances <= t only (online use).

    With ``presence`` (b, t), the modality's utterances that have it: the layers attend over
    present utterances only, and an absent utterance's output is zero, as at padding (its
    input is never read). ``presence=None``: every real utterance is present.
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int = 1,
        heads: int = 8,
        num_speakers: int = 9,
        max_len: int = 512,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        ff_mult: int = 4,
        causal: bool = False,
        backend: Backend = "auto",
    ):
        super().__init__()
        self.dim, self.num_speakers, self.max_len = dim, num_speakers, max_len
        self.speaker = nn.Embedding(num_speakers, dim)
        self.position = nn.Embedding(max_len, dim)
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                heads=heads,
                ff_mult=ff_mult,
                dropout=dropout,
                attention_dropout=attention_dropout,
                causal=causal,
                backend=backend,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "batch time dim"],
        *,
        mask: Bool[Tensor, "batch time"],
        speakers: Int[Tensor, "batch time"],
        presence: Bool[Tensor, "batch time"] | None = None,
        cache: StreamCache | None = None,
    ) -> Float[Tensor, "batch time dim"]:
        """Contextualise utterances ``x`` (b, t, dim); zeros at padded and absent positions.

        With a ``cache`` (causal encoders, online use) ``x`` is the next utterance of the
        dialogue, at position ``cache.position``."""
        check_last_dim("x", x, self.dim)
        keep = present(mask, presence)
        start = 0 if cache is None else cache.position
        t = x.shape[1]
        if start + t > self.max_len:
            raise ValueError(f"x: dialogue length {start + t} exceeds max_len={self.max_len}")
        if CHECKING:  # reading the ids syncs a GPU: part of the checks the switch turns off
            real = speakers[mask]
            if real.numel() and (real.min() < 0 or real.max() >= self.num_speakers):
                raise ValueError(
                    f"speakers: ids must lie in [0, {self.num_speakers}) at real utterances, "
                    f"got range [{int(real.min())}, {int(real.max())}]"
                )
        positions = torch.arange(start, start + t, device=x.device)
        # Padded positions may hold any id; real ones are used as they are.
        spk = self.speaker(torch.where(mask, speakers, torch.zeros_like(speakers)))
        if presence is not None:  # never read x where the modality is absent
            x = torch.where(keep.unsqueeze(-1), x, 0.0)
        h = x + spk.to(x.dtype) + self.position(positions).to(x.dtype)
        for layer in self.layers:
            h = layer(h, mask=keep, cache=cache)
        return torch.where(keep.unsqueeze(-1), self.norm(h), 0.0)
