"""Fused (flash-style) attention in Triton: forward, backward, key padding mask, causal.

Contract
- q (b, h, tq, dh), k (b, h, tk, dh), v (b, h, tk, dv); tq != tk allowed; any length >= 1;
  dh, dv in [16, 128]; float32, float16, bfloat16; key_mask (b, tk) bool, True = real key.
- ``causal`` is top-left aligned (query i sees keys j <= i), as PyTorch's ``is_causal``.
- A query row with no allowed key gives zeros and sends no gradient, forward and backward.
- No dropout: :func:`fusionkit.attention.attention` uses the sdpa backend when
  ``dropout_p > 0`` in training.
- Numerics: scores, softmax statistics and accumulators are fp32. On a GPU, fp16/bf16 tiles
  go to ``tl.dot`` in their own dtype (fp32 accumulate); fp32 inputs use ``input_precision=
  "ieee"`` (no tf32), so float32 results match a float64 reference to ~1e-6. Under Triton's
  interpreter (``TRITON_INTERPRET=1``) every tile is cast to fp32 after loading, because the
  interpreter computes bf16 wrongly (attention.md).

Differences from Triton's fused-attention tutorial: separate tq and tk, a key mask, any
length (masked loads), and an explicit zero result for rows with no allowed key.

Expected GPU behaviour (not measured here, no GPU): the forward reads q, k, v once per query
block pass and writes o and the log-sum-exp: about 2·b·h·(tq·dh + tk·(dh+dv)·ceil(tq/BM) +
tq·dv) bytes in 16-bit, and 2·b·h·tq·tk·(dh+dv) FLOPs (half of that when causal). The
backward recomputes the scores twice (dK/dV pass and dQ pass, no atomics): about 2.5x the
forward's FLOPs. Memory is O(b·h·(tq+tk)·d), never O(tq·tk).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Rows of q and of k a program takes, and software-pipeline stages (None: Triton's default),
# by (fp32 inputs, the larger head dim padded to a power of two). One config each: the
# interpreter cannot autotune across several. Chosen so that every kernel's shared memory
# fits 99 KiB (compute capability 8.6 and 8.9, the least of Ampere and later) and, in
# 16-bit, 64 KiB (7.5), as measured by compiling the kernels ahead of time for those
# targets (bench/gpu_aot.py, docs/attention.md): the tiles used before (64 x 64, 64 x 32 at
# head dim 128) overflow 99 KiB in fp32 from head dim 64 on, and 64 KiB in 16-bit at 128.
_CONFIGS: dict[tuple[bool, int], tuple[int, int, int | None]] = {
    (False, 16): (64, 64, None),
    (False, 32): (64, 64, None),
    (False, 64): (64, 64, None),
    (False, 128): (32, 32, None),
    (True, 16): (64, 64, None),
    (True, 32): (64, 64, None),
    (True, 64): (32, 32, None),
    (True, 128): (32, 32, 2),
}


def _padded(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _config(dh: int, dv: int, fp32: bool) -> tuple[int, int, int | None]:
    """(rows of q, rows of k, pipeline stages) of a program for these head dims."""
    return _CONFIGS[(fp32, max(_padded(dh), _padded(dv)))]


# fmt: off
# Kernel signatures stay compact: pointers, then strides (batch, head, row; the last
# dimension is contiguous), then sizes, then compile-time constants.


@triton.jit
def _tile(base, rows, n_rows, row_stride, cols, n_cols, COMPUTE: tl.constexpr):
    """Rows ``rows`` (< n_rows) and columns ``cols`` (< n_cols) of a matrix, zero outside, as COMPUTE."""
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    return tl.load(base + rows[:, None] * row_stride + cols[None, :], mask=mask, other=0.0).to(COMPUTE)


@triton.jit
def _store_tile(base, value, rows, n_rows, row_stride, cols, n_cols):
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    tl.store(base + rows[:, None] * row_stride + cols[None, :], value.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _scores(q, k, offs_m, offs_n, mask_ptr, tk, scale,
            HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """Scaled scores (BM, BN) in fp32 and the boolean tile of allowed (query, key) pairs."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    allowed = (offs_n < tk)[None, :] & (offs_m >= 0)[:, None]
    if HAS_MASK:
        keep = tl.load(mask_ptr + offs_n, mask=offs_n < tk, other=0)
        allowed = allowed & (keep != 0)[None, :]
    if CAUSAL:
        allowed = allowed & (offs_n[None, :] <= offs_m[:, None])
    return s, allowed


@triton.jit
def _probs(q, k, offs_m, offs_n, mask_ptr, lse, tk, scale,
           HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """Recomputed attention probabilities (BM, BN) in fp32; zero where not allowed."""
    s, allowed = _scores(q, k, offs_m, offs_n, mask_ptr, tk, scale, HAS_MASK, CAUSAL, PRECISION)
    return tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, MASK,
                sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, smb,
                H, tq, tk, dh, dv, scale,
                HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                COMPUTE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                BD: tl.constexpr, BDV: tl.constexpr):
    """One program per query block: online softmax over the key blocks."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    K, V = K + b * skb + h * skh, V + b * svb + h * svh
    q = _tile(Q + b * sqb + h * sqh, offs_m, tq, sqm, offs_d, dh, COMPUTE)
    mask_ptr = MASK + b * smb
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BDV], tl.float32)
    hi = tk
    if CAUSAL:
        hi = tl.minimum(tk, (pid_m + 1) * BM)
    for start_n in range(0, hi, BN):
        offs_n = start_n + tl.arange(0, BN)
        k = _tile(K, offs_n, tk, skn, offs_d, dh, COMPUTE)
        v = _tile(V, offs_n, tk, svn, offs_dv, dv, COMPUTE)
        s, allowed = _scores(q, k, offs_m, offs_n, mask_ptr, tk, scale, HAS_MASK, CAUSAL, PRECISION)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # While a row has seen no allowed key, m_new is -inf: shift by 0 so exp gives 0.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(COMPUTE), v, input_precision=PRECISION)
        m_i = m_new
    has_key = l_i > 0
    safe_l = tl.where(has_key, l_i, 1.0)
    _store_tile(O + b * sob + h * soh, acc / safe_l[:, None], offs_m, tq, som, offs_dv, dv)
    tl.store(LSE + bh * tq + offs_m, tl.where(has_key, m_i + tl.log(safe_l), 0.0), mask=offs_m < tq)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, MASK,
                     sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, smb,
                     H, tq, tk, dh, dv, scale,
                     HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                     COMPUTE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     BD: tl.constexpr, BDV: tl.constexpr):
    """One program per key block: dK and dV summed over every query block (no atomics)."""
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    Q, DO = Q + b * sqb + h * sqh, DO + b * sob + h * soh
    k = _tile(K + b * skb + h * skh, offs_n, tk, skn, offs_d, dh, COMPUTE)
    v = _tile(V + b * svb + h * svh, offs_n, tk, svn, offs_dv, dv, COMPUTE)
    mask_ptr = MASK + b * smb
    dk = tl.zeros([BN, BD], tl.float32)
    dv_acc = tl.zeros([BN, BDV], tl.float32)
    lo = 0
    if CAUSAL:
        lo = (pid_n * BN // BM) * BM  # earlier queries see none of these keys
    for start_m in range(lo, tq, BM):
        offs_m = start_m + tl.arange(0, BM)
        q = _tile(Q, offs_m, tq, sqm, offs_d, dh, COMPUTE)
        do = _tile(DO, offs_m, tq, som, offs_dv, dv, COMPUTE)
        lse = tl.load(LSE + bh * tq + offs_m, mask=offs_m < tq, other=0.0)
        delta = tl.load(DELTA + bh * tq + offs_m, mask=offs_m < tq, other=0.0)
        p = _probs(q, k, offs_m, offs_n, mask_ptr, lse, tk, scale, HAS_MASK, CAUSAL, PRECISION)
        dv_acc += tl.dot(tl.trans(p).to(COMPUTE), do, input_precision=PRECISION)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(COMPUTE), q, input_precision=PRECISION)
    _store_tile(DK + b * skb + h * skh, dk * scale, offs_n, tk, skn, offs_d, dh)
    _store_tile(DV + b * svb + h * svh, dv_acc, offs_n, tk, svn, offs_dv, dv)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, MASK,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, smb,
                   H, tq, tk, dh, dv, scale,
                   HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                   COMPUTE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                   BD: tl.constexpr, BDV: tl.constexpr):
    """One program per query block: dQ summed over every key block (no atomics)."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d, offs_dv = tl.arange(0, BD), tl.arange(0, BDV)
    K, V = K + b * skb + h * skh, V + b * svb + h * svh
    q = _tile(Q + b * sqb + h * sqh, offs_m, tq, sqm, offs_d, dh, COMPUTE)
    do = _tile(DO + b * sob + h * soh, offs_m, tq, som, offs_dv, dv, COMPUTE)
    lse = tl.load(LSE + bh * tq + offs_m, mask=offs_m < tq, other=0.0)
    delta = tl.load(DELTA + bh * tq + offs_m, mask=offs_m < tq, other=0.0)
    mask_ptr = MASK + b * smb
    dq = tl.zeros([BM, BD], tl.float32)
    hi = tk
    if CAUSAL:
        hi = tl.minimum(tk, (pid_m + 1) * BM)
    for start_n in range(0, hi, BN):
        offs_n = start_n + tl.arange(0, BN)
        k = _tile(K, offs_n, tk, skn, offs_d, dh, COMPUTE)
        v = _tile(V, offs_n, tk, svn, offs_dv, dv, COMPUTE)
        p = _probs(q, k, offs_m, offs_n, mask_ptr, lse, tk, scale, HAS_MASK, CAUSAL, PRECISION)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
        dq += tl.dot(ds.to(COMPUTE), k, input_precision=PRECISION)
    _store_tile(DQ + b * sqb + h * sqh, dq * scale, offs_m, tq, sqm, offs_d, dh)


# fmt: on


def _launch_args(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, causal: bool):
    """Mask pointer, strides, sizes and compile-time constants shared by the three kernels."""
    _b, h, tq, dh = q.shape
    tk, dv = k.shape[2], v.shape[3]
    fp32 = q.dtype == torch.float32
    bm, bn, stages = _config(dh, dv, fp32)
    bd, bdv = _padded(dh), _padded(dv)
    if key_mask is None:
        mask = q.new_empty((1, 1), dtype=torch.uint8)
    else:
        mask = key_mask.to(torch.uint8).contiguous()
    compute = (
        tl.float32
        if (INTERPRET or fp32)
        else (tl.float16 if q.dtype == torch.float16 else tl.bfloat16)
    )
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    consts = {"HAS_MASK": key_mask is not None, "CAUSAL": causal, "PRECISION": "ieee"}
    consts |= {"COMPUTE": compute, "BM": bm, "BN": bn, "BD": bd, "BDV": bdv}
    if stages is not None:  # a launch option, beside the constants
        consts["num_stages"] = stages
    return mask, strides, (h, tq, tk, dh, dv), consts


def flash_forward(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, causal: bool, scale: float
) -> tuple[Tensor, Tensor]:
    """Output (b, h, tq, dv) and fp32 log-sum-exp (b, h, tq) of contiguous q, k, v."""
    b, h, tq, _ = q.shape
    o = q.new_empty((b, h, tq, v.shape[3]))
    lse = torch.empty((b, h, tq), dtype=torch.float32, device=q.device)
    mask, strides, sizes, consts = _launch_args(q, k, v, key_mask, causal)
    grid = (triton.cdiv(tq, consts["BM"]), b * h)
    common = (*strides, *o.stride()[:3], mask.stride(0), *sizes, scale)
    _fwd_kernel[grid](q, k, v, o, lse, mask, *common, **consts)
    return o, lse


def flash_backward(
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
    """Gradients dq, dk, dv of contiguous inputs, given the forward's output and lse."""
    b, h, tq, _ = q.shape
    do = do.contiguous()
    delta = (do.float() * o.float()).sum(-1).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    mask, strides, sizes, consts = _launch_args(q, k, v, key_mask, causal)
    common = (*strides, *do.stride()[:3], mask.stride(0), *sizes, scale)
    grid_kv = (triton.cdiv(k.shape[2], consts["BN"]), b * h)
    _bwd_dkdv_kernel[grid_kv](q, k, v, do, dk, dv, lse, delta, mask, *common, **consts)
    grid_q = (triton.cdiv(tq, consts["BM"]), b * h)
    _bwd_dq_kernel[grid_q](q, k, v, do, dq, lse, delta, mask, *common, **consts)
    return dq, dk, dv
