"""The ``math`` and ``sdpa`` attention backends, and the mask helpers every backend shares.

Mask semantics (conventions.md): ``key_mask`` (b, tk) is True at real keys. ``causal`` is
top-left aligned like PyTorch's ``is_causal``: query i sees keys j <= i. A query row with no
allowed key returns zeros, forward and backward, on every backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fusionkit.dropout import draws_cheap_mask, dropout

_CPU_SDPA_ZEROES_EMPTY_ROWS = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)
"""Whether PyTorch's CPU SDPA itself gives a row with no allowed key a zero output and zero
gradients, in both its kernels (the fused one and the math one that dropout selects): true
from torch 2.5 on (its "safe softmax"), and checked by tests/attention on every run."""


def allowed_keys(
    key_mask: Tensor | None, causal: bool, tq: int, tk: int, device: torch.device
) -> Tensor | None:
    """Boolean (b or 1, 1, tq or 1, tk) mask of the keys each query may attend to, or None."""
    allowed = None
    if key_mask is not None:
        allowed = key_mask[:, None, None, :]  # a view: (b, 1, 1, tk)
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
    """Plain attention in fp32 (at least): scores, masked softmax, dropout, weighted values.

    Masked scores get the most negative finite value, not -inf, so that a row with no
    allowed key has finite weights; its output is replaced by zeros, which also stops its
    gradient. Dropout is :func:`fusionkit.dropout.dropout` (its cheap mask on the CPU).
    Autocast is off inside: under mixed precision too the computation is fp32, and the
    output has q's dtype.
    """
    compute = torch.promote_types(q.dtype, torch.float32)
    allowed = allowed_keys(key_mask, causal, q.shape[-2], k.shape[-2], q.device)
    # Under torch.autocast the matmuls would run in 16-bit (and the fp32 fill value would
    # overflow fp16): this path computes in fp32 whatever the context.
    with torch.autocast(q.device.type, enabled=False):
        scores = (q.to(compute) * scale) @ k.to(compute).transpose(-1, -2)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(compute).min)
        out = dropout(scores.softmax(dim=-1), dropout_p) @ v.to(compute)
    if allowed is not None:
        out = torch.where(allowed.any(dim=-1, keepdim=True), out, 0.0)
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
    """PyTorch's fused attention, with rows that have no allowed key giving zeros.

    Such a row is undefined for softmax (NaN on some devices and in the backward). On the
    CPU, torch >= 2.5 already returns zeros and zero gradients for it, so the boolean mask
    goes to SDPA as it is (a view of ``key_mask``: no copy, no extra pass over the output).
    Elsewhere such rows attend to every key instead and their output is replaced by zeros:
    forward and gradients stay finite, and the zeroed rows send no gradient back. Neither
    path reads a tensor's values on the host, so neither synchronises a GPU.

    With dropout on the CPU, SDPA leaves its fused kernel for its math one, whose dropout
    mask costs more than the rest of the attention: :func:`math_attention`, the same
    computation with fusionkit's cheap mask, runs instead (eager only; compiled graphs
    draw their own).
    """
    if dropout_p > 0 and draws_cheap_mask(q):
        return math_attention(q, k, v, key_mask, causal, scale, dropout_p)
    if key_mask is None:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale
        )
    allowed = allowed_keys(key_mask, causal, q.shape[-2], k.shape[-2], q.device)
    if q.device.type == "cpu" and _CPU_SDPA_ZEROES_EMPTY_ROWS:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale
        )
    has_key = allowed.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=allowed | ~has_key, dropout_p=dropout_p, scale=scale
    )
    return torch.where(has_key, out, torch.zeros((), dtype=out.dtype, device=out.device))
