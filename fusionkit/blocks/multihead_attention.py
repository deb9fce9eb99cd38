"""Multi-head attention of one stream over itself or over another stream (cross-modal)."""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.attention import Backend, attention
from fusionkit.attention.reference import allowed_keys
from fusionkit.blocks.stream_cache import StreamCache
from fusionkit.typing import check_last_dim, typechecked


class MultiHeadAttention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``context`` (keys and values), or over
    ``x`` itself when no context is given.

    Masks (keyword-only, True at real positions): ``mask`` (b, tq) marks the real queries,
    whose outputs are kept (others are zero); ``key_mask`` (b, tk) the keys that may be
    attended to (for self-attention it defaults to ``mask``). A query with no allowed key
    gets a zero output: no update from that stream. Values where a mask is False are
    replaced by zeros before anything reads them, so that nothing there (not even inf or
    NaN) reaches an output or a gradient: pass a modality's presence as ``key_mask`` to
    attend over the utterances that have it only. The attention itself goes through
    :func:`fusionkit.attention.attention` with the chosen ``backend``.

    Args:
        dim: feature width of ``x``, of ``context`` and of the output.
        heads: number of heads; ``dim`` must be divisible by it.
        dropout: dropout on the attention weights (training only).
        causal: query i sees keys j <= i only (online use).
        backend: attention backend, see :mod:`fusionkit.attention`.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        dropout: float = 0.0,
        causal: bool = False,
        backend: Backend = "auto",
    ):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.causal, self.backend = causal, backend
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "batch tq dim"],
        context: Float[Tensor, "batch tk dim"] | None = None,
        *,
        mask: Bool[Tensor, "batch tq"] | None = None,
        key_mask: Bool[Tensor, "batch tk"] | None = None,
        cache: StreamCache | None = None,
    ) -> Float[Tensor, "batch tq dim"]:
        """Attend from ``x`` (b, tq, dim) to ``context`` (b, tk, dim), default ``x``.

        With a ``cache`` (causal layers only, online use) ``x`` and ``context`` hold one new
        utterance: its keys and values join the cached ones, and it attends over them all.
        """
        check_last_dim("x", x, self.dim)
        if context is None:
            context, key_mask = x, mask if key_mask is None else key_mask
        if mask is not None:  # values a mask excludes are never read, not even inf or NaN
            x = torch.where(mask.unsqueeze(-1), x, 0.0)
        if key_mask is not None:
            context = torch.where(key_mask.unsqueeze(-1), context, 0.0)
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        causal = self.causal
        if cache is not None:
            if not causal or x.shape[1] != 1 or context.shape[1] != 1:
                raise ValueError(
                    f"cache: needs a causal layer fed one utterance a call, got causal={causal}, "
                    f"{x.shape[1]} queries and {context.shape[1]} keys"
                )
            new = (
                key_mask
                if key_mask is not None
                else torch.ones_like(k[:, 0, :, 0], dtype=torch.bool)
            )
            k, v, key_mask = cache.layer(self).extend(k, v, new)
            causal = False  # the newest utterance sees every cached one
        out = attention(
            q,
            k,
            v,
            key_mask=key_mask,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )
        out = self.to_out(rearrange(out, "b h n d -> b n (h d)"))
        keep = mask
        if key_mask is not None:  # queries with no allowed key get no update
            allowed = allowed_keys(key_mask, causal, x.shape[1], k.shape[2], x.device)
            has_key = rearrange(allowed.any(-1), "b 1 n -> b n")
            keep = has_key if keep is None else keep & has_key
        return out if keep is None else torch.where(keep.unsqueeze(-1), out, 0.0)
