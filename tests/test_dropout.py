"""fusionkit's dropout: the rate it drops at, the scale it keeps, its gradient, its errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.attention import attention
from fusionkit.dropout import BITS, Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_drops_at_the_asked_rate(p):
    torch.manual_seed(0)
    n = 1 << 20
    kept = keep_mask((n,), p, torch.device("cpu")).double().mean().item()
    # p is rounded to a multiple of 2**-16; the binomial spread at 2**20 draws is <= 5e-4
    assert abs((1 - kept) - p) < 5 * math.sqrt(p * (1 - p) / n) + 2.0**-BITS


def test_bits_are_uniform_over_the_threshold_range():
    """Every one of 16 equal slices of the 16-bit range is hit as often: no bit is stuck."""
    torch.manual_seed(0)
    words = torch.empty(1 << 18, dtype=torch.int64).random_(-(2**63), None)
    bits = words.view(torch.int16).int() + 2**15
    counts = torch.bincount(bits // 4096, minlength=16).double()
    expected = bits.numel() / 16
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all(), counts


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.01, 0.95), seed=st.integers(0, 2**16))
def test_kept_values_are_scaled_by_the_inverse_keep_rate(p, seed):
    torch.manual_seed(seed)
    x = torch.randn(4, 33, 17)
    y = dropout(x, p)
    kept = y != 0
    scale = 2**BITS / (2**BITS - round(p * 2**BITS))
    torch.testing.assert_close(y[kept], x[kept] * scale, rtol=1e-6, atol=0)
    assert kept.sum() < x.numel()  # something was dropped


def test_expectation_is_the_input():
    torch.manual_seed(0)
    x = torch.linspace(-2, 3, 64)
    mean = torch.stack([dropout(x, 0.3) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, x, atol=0.12, rtol=0)


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(8, 50, requires_grad=True)
    y = dropout(x, 0.5)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(g, torch.where(y != 0, 2.0, 0.0))


def test_seeded_runs_repeat_and_draws_differ():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(a, b)


def test_identity_when_off_and_zeros_at_one():
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert dropout(x, 2.0**-20) is x  # rounds to 0
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_names_it(p):
    with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\]"):
        dropout(torch.ones(3), p)


def test_half_precision_keeps_its_dtype():
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        y = dropout(torch.ones(256, dtype=dtype), 0.25)
        assert y.dtype == dtype
        scale = torch.tensor(4 / 3, dtype=dtype).item()  # 1 / (1 - 0.25) in that dtype
        assert set(y.unique().tolist()) == {0.0, scale}


def test_module_is_an_nn_dropout_that_follows_train_and_eval():
    layer = Dropout(0.5)
    assert isinstance(layer, torch.nn.Dropout) and "p=0.5" in repr(layer)
    x = torch.ones(2000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert layer(x) is x


def test_compiled_graph_draws_with_pytorch(monkeypatch):
    """Under torch.compile the function is PyTorch's dropout (checked without compiling)."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    calls = []
    monkeypatch.setattr(F, "dropout", lambda x, p, training: calls.append(p) or x)
    dropout(torch.ones(4), 0.25)
    assert calls == [0.25]


def test_attention_dropout_keeps_the_expectation_and_empty_rows():
    """On the CPU the sdpa backend's dropout is fusionkit's: averaged over draws it is
    attention without dropout, and a row with no key stays zero with zero gradients."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 16, generator=g) for _ in range(3))
    key_mask = torch.tensor([[True] * 4 + [False] * 2, [False] * 6])
    exact = attention(q, k, v, key_mask=key_mask, backend="sdpa")
    torch.manual_seed(0)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    draws = torch.stack([attention(*leaves, key_mask=key_mask, dropout_p=0.5) for _ in range(3000)])
    torch.testing.assert_close(draws.mean(0), exact, atol=0.06, rtol=0)
    assert (draws[:, 1] == 0).all()
    grads = torch.autograd.grad(draws.sum(), leaves)
    assert all(torch.isfinite(x).all() for x in grads)
    assert (grads[0][1] == 0).all()
