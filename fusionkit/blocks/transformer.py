"""The pre-norm transformer layer shared by the context encoder (self-attention) and the
CMA-Transformer (cross-attention), and its feed-forward block."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.attention import Backend
from fusionkit.blocks.multihead_attention import MultiHeadAttention
from fusionkit.blocks.stream_cache import StreamCache
from fusionkit.dropout import Dropout
from fusionkit.typing import typechecked


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(dim, ff_mult*dim), GELU, dropout, Linear back to dim."""

    def __init__(self, dim: int, *, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, ff_mult * dim),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(ff_mult * dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerLayer(nn.Module):
    """``u = u + Attn(q=LN(u), kv=LN(ctx)); u = u + FFN(LN(u))`` (cmath.md, step 3).

    With ``cross=False`` the layer attends over its own input (``kv = LN(u)``, one norm);
    with ``cross=True`` over a ``context`` stream with a norm of its own. ``aligned=True``
    (cross only, tq = tk) also adds ``Linear(LN(ctx))`` at the same position: the aligned
    utterance's context directly, which attention over the dialogue learns to find only
    slowly (docs/results.md, ablations). ``causal=True``: utterance t sees utterances <= t.
    ``dropout`` acts on the feed-forward and residual branches and, unless
    ``attention_dropout`` is given, on the attention weights.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.0,
        attention_dropout: float | None = None,
        cross: bool = False,
        aligned: bool = False,
        causal: bool = False,
        backend: Backend = "auto",
    ):
        super().__init__()
        if aligned and not cross:
            raise ValueError("aligned=True needs cross=True")
        self.cross = cross
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = MultiHeadAttention(
            dim,
            heads=heads,
            dropout=dropout if attention_dropout is None else attention_dropout,
            causal=causal,
            backend=backend,
        )
        self.aligned = nn.Linear(dim, dim) if aligned else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult=ff_mult, dropout=dropout)
        self.drop = Dropout(dropout)

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "batch tq dim"],
        *,
        mask: Bool[Tensor, "batch tq"],
        context: Float[Tensor, "batch tk dim"] | None = None,
        key_mask: Bool[Tensor, "batch tk"] | None = None,
        cache: StreamCache | None = None,
    ) -> Float[Tensor, "batch tq dim"]:
        """Update ``x`` (b, tq, dim); ``context`` (b, tk, dim) is required iff ``cross``;
        ``cache``: one new utterance of a causal layer (see :class:`MultiHeadAttention`).

        ``key_mask`` marks the context's present keys (default: ``mask`` for self-attention,
        every key for cross-attention); the context's values elsewhere are never read (not
        even inf or NaN). Zeros where ``mask`` is False.
        """
        if (context is None) == self.cross:
            raise ValueError(
                f"context: {'required' if self.cross else 'not accepted'} by this layer (cross={self.cross})"
            )
        if self.cross and key_mask is not None:
            context = torch.where(key_mask.unsqueeze(-1), context, 0.0)
        q = self.norm_q(x)
        kv = self.norm_kv(context) if self.cross else q
        x = x + self.drop(self.attn(q, kv, key_mask=key_mask if self.cross else mask, cache=cache))
        if self.aligned is not None:
            if kv.shape[1] != x.shape[1]:
                raise ValueError(
                    f"context: aligned=True needs as many positions as x, got {kv.shape[1]} and {x.shape[1]}"
                )
            aligned = self.aligned(kv)
            if key_mask is not None:  # an absent aligned utterance adds nothing
                aligned = torch.where(key_mask.unsqueeze(-1), aligned, 0.0)
            x = x + self.drop(aligned)
        x = x + self.drop(self.ff(self.norm_ff(x)))
        return torch.where(mask.unsqueeze(-1), x, 0.0)
