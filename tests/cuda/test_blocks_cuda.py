"""Blocks that attend, on a CUDA device: ``torch.compile`` of a layer, mixed precision, and
the streaming cache, with each attention backend."""

from __future__ import annotations

import pytest
import torch

from fusionkit import StreamCache
from fusionkit.blocks import MultiHeadAttention, TransformerLayer
from tests.cuda.support import skip_without_bf16
from tests.helpers import needs_triton, rel_error

pytestmark = pytest.mark.cuda

BACKENDS = [pytest.param("triton", marks=needs_triton), "sdpa", "math"]


def _stream(b, tq, tk, dim, device, seed=0):
    """Queries (b, tq, dim), a context (b, tk, dim), their masks (the last dialogue's context
    all padding) and an output gradient."""
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(b, tq, dim, generator=g), torch.randn(b, tk, dim, generator=g)
    mask = torch.arange(tq)[None] < torch.tensor([tq, tq - 3, tq - 7])[:b, None]
    key_mask = torch.rand(b, tk, generator=g) < 0.8
    key_mask[:, 0], key_mask[-1] = True, False
    grad = torch.randn(b, tq, dim, generator=g)
    return [t.to(device) for t in (x, ctx, mask, key_mask, grad)]


def _layer(cls, backend, device, seed=0, **kwargs):
    torch.manual_seed(seed)  # the same weights for every backend
    return cls(64, heads=2, backend=backend, **kwargs).to(device)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "sdpa"])
def test_torch_compile_of_a_layer_matches_eager(backend, device):
    """A cross-attention ``TransformerLayer`` compiles with no graph break
    (``fullgraph=True``) and gives eager's output and parameter gradients."""
    torch._dynamo.reset()
    x, ctx, mask, key_mask, grad = _stream(3, 23, 41, 64, device)
    eager = _layer(TransformerLayer, backend, device, cross=True)
    compiled_layer = _layer(TransformerLayer, backend, device, cross=True)
    compiled = torch.compile(compiled_layer, fullgraph=True)
    results = []
    for layer, fn in ((eager, eager), (compiled_layer, compiled)):
        out = fn(x, mask=mask, context=ctx, key_mask=key_mask)
        (out * grad).sum().backward()
        results.append((out, {n: p.grad for n, p in layer.named_parameters()}))
    (out_e, grads_e), (out_c, grads_c) = results
    torch.testing.assert_close(out_c, out_e, atol=1e-4, rtol=1e-4)
    for name, g in grads_e.items():
        assert torch.isfinite(grads_c[name]).all()
        assert rel_error(grads_c[name], g) < 1e-3, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_attention_close_to_fp32(backend, dtype, device):
    """Under ``torch.autocast`` the projections run in 16-bit and the attention backend gets
    16-bit q, k, v: the output is 16-bit, finite, and close to the same layer in fp32, and so
    are the gradients of its parameters."""
    skip_without_bf16(device, dtype)
    x, ctx, mask, key_mask, grad = _stream(3, 30, 45, 64, device)
    results = []
    for amp in (False, True):
        layer = _layer(MultiHeadAttention, backend, device)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            out = layer(x, ctx, mask=mask, key_mask=key_mask)
        assert out.dtype == (dtype if amp else torch.float32)
        (out.float() * grad).sum().backward()
        results.append((out, [p.grad for p in layer.parameters()]))
    (ref, ref_grads), (out, grads) = results
    assert torch.isfinite(out).all()
    assert rel_error(out, ref) < 3e-2
    assert torch.all(out[-1] == 0)  # no real key in the last dialogue: no update
    for g, e in zip(grads, ref_grads):
        assert torch.isfinite(g).all() and rel_error(g, e) < 5e-2


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_streaming_a_causal_layer_equals_the_whole_dialogue(backend, device):
    """A causal layer fed one utterance at a time, keys and values cached on the GPU, gives
    what it gives on the whole dialogue at once (padding at the end included)."""
    x, _, mask, _, _ = _stream(3, 37, 1, 64, device)
    layer = _layer(TransformerLayer, backend, device, causal=True).eval()
    cache = StreamCache()
    with torch.no_grad():
        whole = layer(x, mask=mask)
        steps = [layer(x[:, i : i + 1], mask=mask[:, i : i + 1], cache=cache) for i in range(37)]
    keys = cache.layer(layer.attn).keys
    assert keys is not None and keys.device.type == device.type
    torch.testing.assert_close(torch.cat(steps, 1), whole, atol=1e-5, rtol=1e-4)
