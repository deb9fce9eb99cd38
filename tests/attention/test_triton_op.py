"""The Triton kernel as a torch.library custom op: opcheck and torch.compile(fullgraph=True)."""

import pytest
import torch

from fusionkit.attention import attention, triton_available
from tests.helpers import DEVICE, needs_interpreter_or_gpu, needs_triton

pytestmark = [needs_triton, needs_interpreter_or_gpu]


def _qkv(tq=9, tk=13, d=16):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, d, generator=g).to(DEVICE) for n in (tq, tk, tk))
    mask = torch.ones(2, tk, dtype=torch.bool, device=DEVICE)
    mask[1, 5:] = False
    return q, k, v, mask


@pytest.mark.slow
def test_opcheck_forward_op():
    from fusionkit.attention.triton_op import flash_attention_fwd

    q, k, v, mask = _qkv()
    for args in [(q, k, v, mask, False, 0.25), (q, k, v, None, True, 0.25)]:
        args = tuple(
            a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args
        )
        torch.library.opcheck(flash_attention_fwd, args)


@pytest.mark.slow
def test_torch_compile_fullgraph_traces_the_kernel():
    """A module that calls the triton backend compiles with no graph break and matches eager."""
    import fusionkit as fk

    torch._dynamo.reset()
    layer = fk.MultiHeadAttention(32, heads=2, backend="triton").to(DEVICE)
    x, ctx = torch.randn(2, 7, 32, device=DEVICE), torch.randn(2, 11, 32, device=DEVICE)
    mask = torch.ones(2, 11, dtype=torch.bool, device=DEVICE)
    mask[0, 4:] = False
    eager = layer(x, ctx, key_mask=mask)
    compiled = torch.compile(layer, fullgraph=True)
    # No cached graph: a stale cache would hide a change to the op's fake implementation.
    with torch._inductor.config.patch(force_disable_caches=True):
        out = compiled(x, ctx, key_mask=mask)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-4)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_available():
    assert triton_available()
    q, k, v, mask = _qkv()
    assert attention(q, k, v, key_mask=mask, backend="triton").shape == (2, 2, 9, 16)
