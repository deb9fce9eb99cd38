"""The ``math`` and ``sdpa`` attention backends, and the mask helpers every backend shares.

Mask semantics (conventions.md): ``key_mask`` (b, tk) is True at real keys. ``causal`` is
top-left aligned like PyTorch's ``is_causal``: query i sees keys j <= i. A query row with no
allowed key returns zeros, forward and backward, on every backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def allowed_keys(
    key_mask: Tensor | None, causal: bool, tq: int, tk: int, device: torch.device
) -> Tensor | None:
    """Boolean (b or 1, 1, tq or 1, tk) mask of the keys each query may attend to, or None."""
    allowed = None
    if key_mask is not None:
        allowed = rearrange(key_mask, "b k -> b 1 1 k")
    if causal:
        tri = torch.ones(tq, tk, dtype=torch.bool, device=device).tril()
        allowed = tri if allowed is None else allowed & tri
    return allowed


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    causal: bool,
    scale: float,
    dropout_p: float,
) -> Tensor:
    """Plain attention: scores and a masked softmax in fp32 (at least), then back to q's dtype."""
    compute = torch.promote_types(q.dtype, torch.float32)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.to(compute), k.to(compute)) * scale
    allowed = allowed_keys(key_mask, causal, q.shape[-2], k.shape[-2], q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    weights = torch.exp(scores - row_max)
    total = weights.sum(dim=-1, keepdim=True)
    # Rows with no allowed key have total 0 and weights 0: dividing by 1 there gives zeros.
    probs = weights / torch.where(total > 0, total, torch.ones_like(total))
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    out = torch.einsum("bhqk,bhkd->bhqd", probs, v.to(compute))
    return out.to(q.dtype)


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    causal: bool,
    scale: float,
    dropout_p: float,
) -> Tensor:
    """PyTorch's fused attention, with fully-masked rows made finite and then zeroed.

    A row with no allowed key would be undefined (NaN on some devices and in the backward),
    so such rows attend to every key instead and their output is replaced by zeros: forward
    and gradients stay finite, and the zeroed rows send no gradient back.
    """
    if key_mask is None:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale
        )
    allowed = allowed_keys(key_mask, causal, q.shape[-2], k.shape[-2], q.device)
    has_key = allowed.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=allowed | ~has_key, dropout_p=dropout_p, scale=scale
    )
    return torch.where(has_key, out, torch.zeros((), dtype=out.dtype, device=out.device))
