"""Multi-head cross-modal attention: queries from one stream, keys and values from another."""

from __future__ import annotations

from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.attention import Backend, attention
from fusionkit.typing import check_last_dim, typechecked


class CrossModalAttention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``context`` (keys and values).

    Self-attention is ``module(x, x, context_mask=mask, mask=mask)``. The attention itself goes
    through :func:`fusionkit.attention.attention` with the chosen ``backend``.

    Args:
        dim: feature width of ``x``, of ``context`` and of the output.
        heads: number of heads; ``dim`` must be divisible by it.
        dropout: dropout on the attention weights (training only).
        backend: attention backend, see :mod:`fusionkit.attention`.
    """

    def __init__(
        self, dim: int, *, heads: int = 8, dropout: float = 0.0, backend: Backend = "auto"
    ):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.dropout, self.backend = dim, heads, dropout, backend
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "batch tq dim"],
        context: Float[Tensor, "batch tk dim"],
        *,
        context_mask: Bool[Tensor, "batch tk"] | None = None,
        mask: Bool[Tensor, "batch tq"] | None = None,
    ) -> Float[Tensor, "batch tq dim"]:
        """Attend from ``x`` (b, tq, dim) to ``context`` (b, tk, dim); zeros where ``mask`` is False."""
        check_last_dim("x", x, self.dim)
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        out = attention(
            q,
            k,
            v,
            key_mask=context_mask,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )
        out = self.to_out(rearrange(out, "b h n d -> b n (h d)"))
        return out if mask is None else out * mask.unsqueeze(-1).to(out.dtype)
