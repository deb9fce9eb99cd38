"""Every attention backend against the float64 ``math`` reference, forward and gradients.

The Triton kernel runs under Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``,
set in ``tests/conftest.py`` before the kernel module is imported).
"""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.attention import attention
from tests.helpers import (
    DEVICE,
    attention_inputs,
    needs_interpreter_or_gpu,
    needs_triton,
    rel_error,
)


def _compare(backend, b, h, tq, tk, dh, dv, causal, dtype, tol, seed=0, use_mask=True):
    (q, k, v), key_mask, grad = attention_inputs(b, h, tq, tk, dh, dv, dtype=dtype, seed=seed)
    key_mask = key_mask if use_mask else None
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = attention(*leaves, key_mask=key_mask, causal=causal, backend=backend)
    grads = torch.autograd.grad(out, leaves, grad)
    ref_leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = attention(*ref_leaves, key_mask=key_mask, causal=causal, backend="math")
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad.double())
    assert out.dtype == dtype and out.shape == (b, h, tq, dv)
    for name, a, e in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
        assert torch.isfinite(a).all(), f"{name} has non-finite values"
        # Relative error, with a floor for gradients that are exactly zero (one key: dq = 0).
        err = (a.double() - e).norm().item()
        assert err <= tol * e.norm().item() + 1e-6 * e.numel() ** 0.5, (
            f"{name}: error {rel_error(a, e):.2e}"
        )
    if use_mask and b > 1:  # the fully masked dialogue: zero output, zero gradients
        assert torch.all(out[-1] == 0) and torch.all(grads[0][-1] == 0)
        assert torch.all(grads[1][-1] == 0) and torch.all(grads[2][-1] == 0)


SHAPES = [
    # b, h, tq, tk, dh, dv: cross attention, lengths off the block size, several head dims
    (2, 2, 37, 70, 32, 32),
    (3, 1, 100, 19, 64, 16),
    (2, 2, 1, 5, 16, 16),
    (2, 1, 65, 130, 128, 128),
    (2, 2, 64, 64, 64, 64),
]


@needs_triton
@needs_interpreter_or_gpu
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_triton_float32_matches_float64_reference(shape, causal):
    _compare("triton", *shape, causal, torch.float32, tol=1e-4)


@needs_triton
@needs_interpreter_or_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_half_precision_within_twice_pytorch_error(dtype):
    """In 16-bit, the kernel's error is at most twice that of PyTorch's own math in that dtype."""
    (q, k, v), key_mask, _ = attention_inputs(2, 2, 45, 77, 32, 32, dtype=dtype)
    out = attention(q, k, v, key_mask=key_mask, backend="triton")
    ref = attention(q.double(), k.double(), v.double(), key_mask=key_mask, backend="math")
    torch_err = rel_error(
        torch.softmax(
            (q @ k.transpose(-1, -2) / 32**0.5).masked_fill(
                ~key_mask[:, None, None], float("-inf")
            ),
            -1,
        ).nan_to_num()
        @ v,
        ref,
    )
    assert rel_error(out, ref) <= 2 * torch_err + 1e-3


@needs_triton
@needs_interpreter_or_gpu
@settings(max_examples=6, deadline=None)
@given(
    tq=st.integers(1, 80),
    tk=st.integers(1, 80),
    dh=st.sampled_from([16, 24, 32]),
    causal=st.booleans(),
    use_mask=st.booleans(),
    seed=st.integers(0, 1000),
)
@pytest.mark.slow
def test_triton_random_shapes(tq, tk, dh, causal, use_mask, seed):
    _compare(
        "triton",
        2,
        1,
        tq,
        tk,
        dh,
        dh,
        causal,
        torch.float32,
        tol=1e-4,
        seed=seed,
        use_mask=use_mask,
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sdpa_matches_float64_reference(shape, causal):
    _compare("sdpa", *shape, causal, torch.float32, tol=1e-4)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_no_mask_and_custom_scale(backend):
    (q, k, v), _, _ = attention_inputs(1, 2, 5, 6, 16, 16, dtype=torch.float32)
    out = attention(q, k, v, scale=0.3, backend=backend)
    expected = torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1) @ v
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_math_reference_matches_a_row_by_row_softmax(causal):
    """The float64 reference every backend is held to, against a loop over query rows."""
    (q, k, v), key_mask, _ = attention_inputs(3, 2, 5, 7, 16, 8, dtype=torch.float64)
    q, k, v, key_mask = q.cpu(), k.cpu(), v.cpu(), key_mask.cpu()
    out = attention(q, k, v, key_mask=key_mask, causal=causal, backend="math")
    expected = torch.zeros_like(out)
    for b, h, i in itertools.product(range(3), range(2), range(5)):
        keys = key_mask[b].clone()
        if causal:
            keys[i + 1 :] = False
        if keys.any():
            w = torch.softmax(k[b, h, keys] @ q[b, h, i] / 4.0, dim=0)
            expected[b, h, i] = w @ v[b, h, keys]
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    assert (out[-1] == 0).all()  # the dialogue with no key


def test_causal_is_top_left_aligned():
    q, k, v = torch.randn(1, 1, 3, 16), torch.randn(1, 1, 5, 16), torch.randn(1, 1, 5, 16)
    out = attention(q, k, v, causal=True, backend="math")
    # query 0 sees key 0 only
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])


def test_auto_uses_sdpa_on_cpu_and_never_imports_triton():
    import sys

    sys.modules.pop("fusionkit.attention.triton_op", None)
    (q, k, v), key_mask, _ = attention_inputs(2, 1, 4, 4, 16, 16, dtype=torch.float32)
    out = attention(q.cpu(), k.cpu(), v.cpu(), key_mask=key_mask.cpu())
    torch.testing.assert_close(
        out, attention(q.cpu(), k.cpu(), v.cpu(), key_mask=key_mask.cpu(), backend="sdpa")
    )
    if DEVICE == "cpu":
        assert "fusionkit.attention.triton_op" not in sys.modules


def test_dropout_applies_in_every_backend_that_supports_it():
    (q, k, v), key_mask, _ = attention_inputs(
        2, 1, 8, 8, 16, 16, dtype=torch.float32, fully_masked_row=False
    )
    for backend in ("sdpa", "math"):
        a = attention(q, k, v, key_mask=key_mask, dropout_p=0.5, backend=backend)
        b = attention(q, k, v, key_mask=key_mask, dropout_p=0.5, backend=backend)
        assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="no dropout"):
        attention(q, k, v, dropout_p=0.1, backend="triton")


def test_bad_inputs_name_the_argument():
    from jaxtyping import TypeCheckError

    q = torch.randn(1, 2, 3, 16)
    with pytest.raises(TypeCheckError, match="parameter 'k'"):
        attention(q, torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 16))
    with pytest.raises(TypeCheckError, match="parameter 'key_mask'"):
        attention(q, q, q, key_mask=torch.ones(1, 3))
    with pytest.raises(TypeCheckError, match="parameter 'backend'"):
        attention(q, q, q, backend="flash")
    with pytest.raises(ValueError, match=r"head dims 16\.\.128"):
        attention(
            torch.randn(1, 1, 2, 8),
            torch.randn(1, 1, 2, 8),
            torch.randn(1, 1, 2, 8),
            backend="triton",
        )
    with pytest.raises(TypeError, match="dtypes differ"):
        attention(q, q.double(), q)
