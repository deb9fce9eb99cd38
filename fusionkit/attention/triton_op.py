"""The Triton kernel as ``torch.library`` custom ops, so ``torch.compile(fullgraph=True)``
traces it without a graph break, with autograd through the Triton backward kernels.

Importing this module imports triton and defines the kernels: set ``TRITON_INTERPRET=1``
before that to run them on CPU tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fusionkit.attention.triton_kernel import flash_backward, flash_forward


@torch.library.custom_op("fusionkit::flash_attention_fwd", mutates_args=())
def flash_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, causal: bool, scale: float
) -> tuple[Tensor, Tensor]:
    return flash_forward(q.contiguous(), k.contiguous(), v.contiguous(), key_mask, causal, scale)


@flash_attention_fwd.register_fake
def _(q, k, v, key_mask, causal, scale):
    b, h, tq, _ = q.shape
    return q.new_empty((b, h, tq, v.shape[-1])), q.new_empty((b, h, tq), dtype=torch.float32)


@torch.library.custom_op("fusionkit::flash_attention_bwd", mutates_args=())
def flash_attention_bwd(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    key_mask: Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    return flash_backward(
        do,
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        o.contiguous(),
        lse,
        key_mask,
        causal,
        scale,
    )


@flash_attention_bwd.register_fake
def _(do, q, k, v, o, lse, key_mask, causal, scale):
    # The real op returns contiguous gradients, whatever the inputs' strides.
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, key_mask, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, key_mask)
    ctx.causal, ctx.scale = causal, scale


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, key_mask = ctx.saved_tensors
    dq, dk, dv = flash_attention_bwd(do, q, k, v, o, lse, key_mask, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None


torch.library.register_autograd(
    "fusionkit::flash_attention_fwd", _backward, setup_context=_setup_context
)


def triton_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, causal: bool, scale: float
) -> Tensor:
    """Attention through the fused Triton kernel; see ``triton_kernel`` for the contract."""
    return flash_attention_fwd(q, k, v, key_mask, causal, scale)[0]
