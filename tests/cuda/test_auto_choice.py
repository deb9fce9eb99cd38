"""What ``backend="auto"`` picks, and why (runs anywhere: the choice is plain logic).

On CUDA ``auto`` is SDPA unless the GPU's generation is listed in ``TRITON_MEASURED`` (the
Triton kernel measured correct and faster there; none yet) or ``FUSIONKIT_AUTO_TRITON=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

import fusionkit.attention as fka
from fusionkit.attention import attention, auto_backend, triton_is_default


def test_no_gpu_generation_is_listed_until_one_is_measured():
    """The list ships empty: no GPU has run the kernel (docs/attention.md says so)."""
    assert not fka.TRITON_MEASURED
    switch = os.environ.get("FUSIONKIT_AUTO_TRITON", "0").lower() in ("1", "true", "yes")
    assert fka.AUTO_TRITON is switch
    if not switch:
        assert not any(triton_is_default(c) for c in [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)])


def test_a_measured_generation_or_the_switch_makes_the_kernel_the_default(monkeypatch):
    monkeypatch.setattr(fka, "AUTO_TRITON", False)
    monkeypatch.setattr(fka, "TRITON_MEASURED", frozenset({(9, 0)}))
    assert triton_is_default((9, 0)) and not triton_is_default((8, 0))
    monkeypatch.setattr(fka, "AUTO_TRITON", True)
    assert triton_is_default((8, 0)) and triton_is_default((7, 5))


def test_auto_is_sdpa_on_the_cpu_whatever_the_settings(monkeypatch):
    """On CPU tensors ``auto`` is SDPA even with the switch on, and imports no Triton code."""
    monkeypatch.setattr(fka, "AUTO_TRITON", True)
    monkeypatch.delitem(sys.modules, "fusionkit.attention.triton_op", raising=False)
    q, k, v = torch.randn(2, 2, 5, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    assert auto_backend(q, v) == "sdpa"
    out = attention(q, k, v, key_mask=mask)
    assert torch.equal(out, attention(q, k, v, key_mask=mask, backend="sdpa"))
    assert "fusionkit.attention.triton_op" not in sys.modules


def test_the_switch_is_read_from_the_environment_at_import():
    env = dict(os.environ, FUSIONKIT_AUTO_TRITON="1")
    code = "import fusionkit.attention as a; print(a.AUTO_TRITON)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
