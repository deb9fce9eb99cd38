"""Attention under ``torch.autocast`` on the CPU (always) and on CUDA (marked ``cuda``).

The ``math`` backend, which the CPU's ``sdpa`` runs when there is attention dropout, computes
in fp32 whatever the autocast context: under autocast its matmuls used to run in 16-bit and
its fp32 fill value for masked scores overflowed (a RuntimeError in every bf16 training step
with attention dropout on the CPU).
"""

from __future__ import annotations

import pytest
import torch

from fusionkit.attention import attention
from tests.cuda.support import skip_without_bf16
from tests.helpers import rel_error

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _qkv(device, dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 32, generator=g).to(device, dtype) for n in (9, 13, 13))
    mask = torch.ones(2, 13, dtype=torch.bool, device=device)
    mask[0, 7:], mask[1] = False, False  # padding, and a dialogue with no key
    return q, k, v, mask


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_math_backend_computes_in_fp32_under_autocast(device, dtype):
    skip_without_bf16(device, dtype)
    q, k, v, mask = _qkv(device, dtype)
    outside = attention(q, k, v, key_mask=mask, backend="math")
    with torch.autocast(device, dtype=dtype):
        inside = attention(q, k, v, key_mask=mask, backend="math")
    assert inside.dtype == dtype and torch.equal(inside, outside)
    ref = attention(q.double(), k.double(), v.double(), key_mask=mask, backend="math")
    assert rel_error(inside, ref) < 1e-2  # rounding of the 16-bit output only


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("device", DEVICES)
def test_attention_dropout_under_bf16_autocast(device, backend):
    """A bf16 training step's attention with dropout (q, k, v in bf16, as autocast's linear
    layers give them): bf16 out, finite, zero where there is no key, finite gradients."""
    skip_without_bf16(device)
    q, k, v, mask = _qkv(device, torch.bfloat16)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    with torch.autocast(device, dtype=torch.bfloat16):
        out = attention(*leaves, key_mask=mask, dropout_p=0.3, backend=backend)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert torch.isfinite(out).all() and torch.all(out[1] == 0)
    assert all(torch.isfinite(x.grad).all() for x in leaves)
