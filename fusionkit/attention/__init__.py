"""``attention``: one function, three backends (``sdpa``, ``triton``, ``math``).

- ``sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention`, with rows that have no
  allowed key returning zeros (not NaN), forward and backward.
- ``triton``: fusionkit's fused kernel (:mod:`fusionkit.attention.triton_kernel`), registered
  as a ``torch.library`` custom op; needs the ``triton`` extra. **Experimental on GPUs**: it
  has been checked on the CPU under Triton's interpreter only, never compiled for or run on
  a GPU. ``bench/gpu.sh`` measures it against SDPA on a GPU.
- ``math``: plain matmuls and a masked softmax in fp32; the reference the tests use.
- ``auto``: ``sdpa``, except on a CUDA GPU whose generation (compute capability) is in
  :data:`TRITON_MEASURED`, where the kernel was measured correct and faster than SDPA (none
  yet), or when ``FUSIONKIT_AUTO_TRITON=1`` is set: there ``triton`` runs when triton is
  installed, the shapes are supported and no dropout is asked. Choosing never compiles or
  imports anything on the CPU.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fusionkit.attention.reference import math_attention, sdpa_attention
from fusionkit.typing import typechecked

__all__ = [
    "AUTO_TRITON",
    "BACKENDS",
    "TRITON_MEASURED",
    "Backend",
    "attention",
    "auto_backend",
    "triton_available",
    "triton_is_default",
    "triton_supports",
]

Backend = Literal["auto", "sdpa", "triton", "math"]
BACKENDS: tuple[str, ...] = ("auto", "sdpa", "triton", "math")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None  # looked up, not imported


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (checked once, at import, without importing it)."""
    return _TRITON_INSTALLED


def triton_supports(q: Tensor, v: Tensor) -> bool:
    """Whether the Triton kernel handles these shapes and dtype (head dims 16..128)."""
    return q.dtype in _TRITON_DTYPES and 16 <= q.shape[-1] <= 128 and 16 <= v.shape[-1] <= 128


TRITON_MEASURED: frozenset[tuple[int, int]] = frozenset()
"""CUDA compute capabilities (major, minor) on which ``bench/gpu.sh`` measured the Triton
kernel correct (the ``cuda`` tests) and faster than SDPA (its attention table): ``auto``
picks the kernel there. Empty: no GPU has run it yet, so ``auto`` means SDPA on CUDA."""

AUTO_TRITON: bool = os.environ.get("FUSIONKIT_AUTO_TRITON", "0").lower() in ("1", "true", "yes")
"""Whether ``auto`` picks the Triton kernel on every CUDA GPU (where it supports the call);
read once from ``FUSIONKIT_AUTO_TRITON`` at import. Off by default: the kernel is
experimental on GPUs."""


def triton_is_default(capability: tuple[int, int]) -> bool:
    """Whether ``auto`` prefers the Triton kernel on a CUDA GPU of this compute capability."""
    return AUTO_TRITON or tuple(capability) in TRITON_MEASURED


def auto_backend(q: Tensor, v: Tensor, dropout_p: float = 0.0) -> Literal["sdpa", "triton"]:
    """The backend ``backend="auto"`` runs for these inputs (see the module docstring).

    Decided from q's device, never from ``torch.cuda.is_available()``; on the CPU nothing is
    imported or queried.
    """
    if not q.is_cuda or dropout_p > 0.0 or not triton_available() or not triton_supports(q, v):
        return "sdpa"
    # The capability is looked up only when some generation is listed (none yet).
    if AUTO_TRITON or (
        TRITON_MEASURED and triton_is_default(torch.cuda.get_device_capability(q.device))
    ):
        return "triton"
    return "sdpa"


def _triton(q, k, v, key_mask, causal, scale):
    from fusionkit.attention.triton_op import triton_attention

    return triton_attention(q, k, v, key_mask, causal, scale)


@typechecked
def attention(
    q: Float[Tensor, "batch heads tq dh"],
    k: Float[Tensor, "batch heads tk dh"],
    v: Float[Tensor, "batch heads tk dv"],
    *,
    key_mask: Bool[Tensor, "batch tk"] | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
) -> Float[Tensor, "batch heads tq dv"]:
    """Multi-head scaled dot-product attention with a boolean key padding mask.

    Args:
        q: queries (b, h, tq, dh). k: keys (b, h, tk, dh). v: values (b, h, tk, dv).
        key_mask: True at real keys; a query row with no allowed key returns zeros.
        causal: query i attends to keys j <= i (top-left aligned, as PyTorch).
        scale: score scale, ``1/sqrt(dh)`` by default.
        dropout_p: dropout on the attention weights; pass 0 in eval. The Triton kernel has
            no dropout, so ``dropout_p > 0`` runs sdpa (``auto``) or fails (``triton``).
        backend: ``auto`` (:func:`auto_backend`: sdpa unless the Triton kernel is the
            default on this GPU), ``sdpa``, ``triton`` (experimental on GPUs) or ``math``.

    Returns:
        (b, h, tq, dv) in q's dtype.
    """
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"q, k, v: dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a value in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if backend == "auto":
        backend = auto_backend(q, v, dropout_p)
    if backend == "sdpa":
        return sdpa_attention(q, k, v, key_mask, causal, scale, dropout_p)
    if backend == "math":
        return math_attention(q, k, v, key_mask, causal, scale, dropout_p)
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(
                "backend='triton' needs triton (Linux only): pip install -e \".[triton]\" in a "
                "fusionkit checkout, or pip install triton"
            )
        if dropout_p > 0.0:
            raise ValueError("backend='triton' has no dropout: use 'sdpa' or 'auto'")
        if not triton_supports(q, v):
            raise ValueError(
                "backend='triton' supports float32/float16/bfloat16 and head dims 16..128; "
                f"got {q.dtype}, dh={q.shape[-1]}, dv={v.shape[-1]}"
            )
        return _triton(q, k, v, key_mask, causal, scale)
    raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
