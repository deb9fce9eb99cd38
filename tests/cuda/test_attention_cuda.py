"""The attention backends on a CUDA device against the float64 reference, forward and gradients.

Every backend (the Triton kernel compiled for the GPU, the sdpa wrapper over PyTorch's CUDA
kernels) in fp32, fp16 and bf16, with key padding, a dialogue whose every key is padding,
causal and cross attention, lengths off the kernel's block sizes. Tolerance (attention.md):
in fp32 a relative error of 1e-4; in 16-bit at most twice the error of PyTorch's own plain
computation in that dtype (scores, softmax, weighted values, and their autograd), plus 1e-3.
Also: what ``auto`` picks on CUDA, and dropout on CUDA.
"""

from __future__ import annotations

import pytest
import torch

import fusionkit.attention as fka
from fusionkit.attention import attention, auto_backend
from fusionkit.dropout import Dropout, draws_cheap_mask
from tests.cuda.support import skip_without_bf16
from tests.helpers import attention_inputs, needs_triton, rel_error

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _plain(q, k, v, key_mask, causal):
    """Attention computed step by step in the inputs' own dtype: PyTorch's own error there."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    allowed = key_mask[:, None, None, :].expand(-1, 1, q.shape[-2], -1)
    if causal:
        tri = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        allowed = allowed & tri
    scores = scores.masked_fill(~allowed, torch.finfo(q.dtype).min)
    out = scores.softmax(-1) @ v
    return torch.where(allowed.any(-1, keepdim=True), out, 0.0)


def _forward_backward(fn, qkv, grad):
    leaves = [x.detach().clone().requires_grad_() for x in qkv]
    out = fn(*leaves)
    return [out, *torch.autograd.grad(out, leaves, grad)]


def _errors(results, reference):
    """Absolute Frobenius errors, in float64, of (out, dq, dk, dv) against the reference."""
    return [(a.double() - e).norm().item() for a, e in zip(results, reference)]


def _check(backend, shape, causal, dtype, device, *, use_mask=True):
    skip_without_bf16(device, dtype)
    (q, k, v), key_mask, grad = attention_inputs(*shape, device=device, dtype=dtype)
    mask = key_mask if use_mask else None

    def run(q, k, v):
        return attention(q, k, v, key_mask=mask, causal=causal, backend=backend)

    got = _forward_backward(run, (q, k, v), grad)
    ref = _forward_backward(
        lambda q, k, v: attention(q, k, v, key_mask=mask, causal=causal, backend="math"),
        [x.double() for x in (q, k, v)],
        grad.double(),
    )
    names = ("out", "dq", "dk", "dv")
    assert got[0].dtype == dtype and got[0].shape == (*shape[:3], shape[5])
    assert all(x.device.type == device.type for x in got)
    for name, x in zip(names, got):
        assert torch.isfinite(x).all(), f"{backend} {name}: non-finite values"
    if dtype == torch.float32:
        allowed = [1e-4 * e.norm().item() + 1e-6 * e.numel() ** 0.5 for e in ref]
    else:
        full = torch.ones_like(key_mask) if mask is None else key_mask
        plain = _forward_backward(lambda q, k, v: _plain(q, k, v, full, causal), (q, k, v), grad)
        allowed = [
            2 * err + 1e-3 * e.norm().item() + 1e-4 * e.numel() ** 0.5
            for err, e in zip(_errors(plain, ref), ref)
        ]
    for name, err, limit, a, e in zip(names, _errors(got, ref), allowed, got, ref):
        assert err <= limit, (
            f"{backend} {name} ({dtype}): error {err:.3e} above {limit:.3e} "
            f"(relative {rel_error(a, e):.2e})"
        )
    if use_mask:  # the dialogue with no real key: exactly zero output and gradients
        for name, x in zip(names, got):
            assert torch.all(x[-1] == 0), f"{backend} {name}: the fully masked dialogue is not zero"
    return got


SHAPES = {
    # b, h, tq, tk, dh, dv: cross attention (tq != tk), lengths off the block sizes (64, 32)
    "37x70 dh32": (2, 2, 37, 70, 32, 32),
    "100x19 dh64 dv16": (3, 1, 100, 19, 64, 16),
    "1x5 dh16": (2, 2, 1, 5, 16, 16),
    "65x130 dh128": (2, 1, 65, 130, 128, 128),
}
# In 16-bit: fewer head dims (each compiles the kernels anew), one long causal case.
SHAPES_16 = {
    "37x70 dh32": SHAPES["37x70 dh32"],
    "65x130 dh128": SHAPES["65x130 dh128"],
    "300x300 dh32": (2, 2, 300, 300, 32, 32),
}


def _cases():
    for name, shape in SHAPES.items():
        yield pytest.param(torch.float32, shape, id=f"float32-{name}")
    for dtype in (torch.float16, torch.bfloat16):
        for name, shape in SHAPES_16.items():
            yield pytest.param(dtype, shape, id=f"{str(dtype)[6:]}-{name}")


@needs_triton
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("dtype", "shape"), list(_cases()))
def test_triton_kernel_matches_float64_reference(dtype, shape, causal, device):
    _check("triton", shape, causal, dtype, device)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("dtype", "shape"), list(_cases()))
def test_sdpa_wrapper_matches_float64_reference(dtype, shape, causal, device):
    _check("sdpa", shape, causal, dtype, device)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "sdpa"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_without_a_key_mask(backend, dtype, device):
    _check(backend, SHAPES["37x70 dh32"], False, dtype, device, use_mask=False)


@needs_triton
def test_triton_and_sdpa_agree_where_they_should(device):
    """Two independent implementations, one GPU: their outputs agree far below the tolerance
    each has to the reference (fp32)."""
    shape = SHAPES["65x130 dh128"]
    a = _check("triton", shape, True, torch.float32, device)
    b = _check("sdpa", shape, True, torch.float32, device)
    for x, y in zip(a, b):
        assert rel_error(x, y) < 1e-4


def test_auto_runs_sdpa_on_cuda_and_the_kernel_is_one_switch_away(device, monkeypatch):
    """``auto`` is SDPA on a GPU generation nobody measured the kernel on; the kernel is
    ``backend="triton"`` or ``FUSIONKIT_AUTO_TRITON=1`` (here: its module flag) away."""
    (q, k, v), key_mask, _ = attention_inputs(
        2, 2, 20, 30, 32, 32, device=device, dtype=torch.float16
    )
    if device.type == "cuda":  # as configured: sdpa unless this generation is listed
        default = fka.triton_available() and fka.triton_is_default(
            torch.cuda.get_device_capability(device)
        )
        assert auto_backend(q, v) == ("triton" if default else "sdpa")
    monkeypatch.setattr(fka, "AUTO_TRITON", False)
    monkeypatch.setattr(fka, "TRITON_MEASURED", frozenset())
    assert auto_backend(q, v) == "sdpa"
    out = attention(q, k, v, key_mask=key_mask)
    assert torch.equal(out, attention(q, k, v, key_mask=key_mask, backend="sdpa"))
    monkeypatch.setattr(fka, "AUTO_TRITON", True)
    expected = "triton" if device.type == "cuda" and fka.triton_available() else "sdpa"
    assert auto_backend(q, v) == expected
    assert auto_backend(q, v, dropout_p=0.1) == "sdpa"  # the kernel has no dropout
    if expected == "triton":
        out = attention(q, k, v, key_mask=key_mask)
        assert torch.equal(out, attention(q, k, v, key_mask=key_mask, backend="triton"))


@pytest.mark.parametrize("backend", ["sdpa", "auto"])
def test_attention_dropout_on_cuda(backend, device):
    """PyTorch's fused dropout on CUDA: fresh draws each call, the expectation kept (the mean
    of 4,000 copies), and the dialogue with no key still exactly zero, with zero gradients."""
    (q, k, v), key_mask, grad = attention_inputs(
        2, 2, 6, 8, 16, 16, device=device, dtype=torch.float32
    )
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    a = attention(*leaves, key_mask=key_mask, dropout_p=0.5, backend=backend)
    b = attention(*leaves, key_mask=key_mask, dropout_p=0.5, backend=backend)
    assert not torch.equal(a[0], b[0])
    grads = torch.autograd.grad(a, leaves, grad)
    for x in (a, *grads):
        assert torch.isfinite(x).all() and torch.all(x[-1] == 0)
    copies = 4000
    many = [x[:1].expand(copies, -1, -1, -1) for x in (q, k, v)]
    with torch.no_grad():
        drawn = attention(*many, key_mask=key_mask[:1].expand(copies, -1), dropout_p=0.5)
        plain = attention(q[:1], k[:1], v[:1], key_mask=key_mask[:1], backend="math")
    assert rel_error(drawn.mean(0, keepdim=True), plain) < 0.1


def test_fusionkit_dropout_is_pytorchs_on_cuda(device):
    """On CUDA ``fusionkit.dropout`` is PyTorch's fused dropout: the rate and the mean kept."""
    x = torch.ones(256, 1024, device=device)
    layer = Dropout(0.3).train()
    y = layer(x)
    assert draws_cheap_mask(x) == (device.type == "cpu")
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(layer.eval()(x), x)
