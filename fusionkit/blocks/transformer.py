"""The pre-norm transformer layer shared by the context encoder (self-attention) and the
CMA-Transformer (cross-attention), and its feed-forward block."""

from __future__ import annotations

from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.attention import Backend
from fusionkit.blocks.cross_attention import CrossModalAttention
from fusionkit.typing import typechecked


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(dim, ff_mult*dim), GELU, dropout, Linear back to dim."""

    def __init__(self, dim: int, *, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, ff_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
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
    slowly (docs/results.md, ablations).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.0,
        cross: bool = False,
        aligned: bool = False,
        backend: Backend = "auto",
    ):
        super().__init__()
        if aligned and not cross:
            raise ValueError("aligned=True needs cross=True")
        self.cross = cross
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = CrossModalAttention(dim, heads=heads, dropout=dropout, backend=backend)
        self.aligned = nn.Linear(dim, dim) if aligned else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult=ff_mult, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "batch tq dim"],
        mask: Bool[Tensor, "batch tq"],
        context: Float[Tensor, "batch tk dim"] | None = None,
        context_mask: Bool[Tensor, "batch tk"] | None = None,
    ) -> Float[Tensor, "batch tq dim"]:
        """Update ``x`` (b, tq, dim); ``context`` (b, tk, dim) is required iff ``cross``."""
        if (context is None) == self.cross:
            raise ValueError(
                f"context: {'required' if self.cross else 'not accepted'} by this layer (cross={self.cross})"
            )
        q = self.norm_q(x)
        if self.cross:
            kv, kv_mask = self.norm_kv(context), context_mask
        else:
            kv, kv_mask = q, mask
        x = x + self.drop(self.attn(q, kv, context_mask=kv_mask))
        if self.aligned is not None:
            if kv.shape[1] != x.shape[1]:
                raise ValueError(
                    f"context: aligned=True needs as many positions as x, got {kv.shape[1]} and {x.shape[1]}"
                )
            x = x + self.drop(self.aligned(kv))
        x = x + self.drop(self.ff(self.norm_ff(x)))
        return x * mask.unsqueeze(-1).to(x.dtype)
