"""Dropout with a cheap random mask on the CPU.

PyTorch's CPU dropout draws a 32-bit random number for every element (``bernoulli_``, about
15 ns an element here): at CMATH's sizes a quarter of a training step. :func:`dropout` gives
each element 16 random bits instead, cut from 64-bit draws, and keeps it when they clear a
threshold, about 10x cheaper. The drop probability is ``p`` rounded to a multiple of
``2**-16`` (flash-attention rounds it to ``2**-8``), and kept values are scaled by the
inverse of the rounded keep probability, so the output's expectation is the input. On other
devices and under ``torch.compile``, which have fused dropouts of their own, it is
``torch.nn.functional.dropout``. Both draw from PyTorch's generator: ``torch.manual_seed``
makes runs repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BITS = 16
"""Random bits an element: drop probabilities are multiples of ``2**-BITS``."""


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """Boolean mask of ``shape``, each element True with probability ``1 - p`` (``p`` rounded
    to a multiple of ``2**-16``), from 16 random bits an element."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    bits = words.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    return bits >= round(p * 2**BITS) - 2 ** (BITS - 1)


def draws_cheap_mask(x: Tensor) -> bool:
    """Whether :func:`dropout` draws its own mask for ``x`` (eager, on the CPU); elsewhere
    it is PyTorch's fused dropout."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest to keep the mean."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if not draws_cheap_mask(x) or p == 1.0:
        return F.dropout(x, p, training=True)
    dropped = round(p * 2**BITS)
    if dropped == 0:
        return x
    scale = 2**BITS / (2**BITS - dropped)  # the inverse of the rounded keep probability
    return x * keep_mask(x.shape, p, x.device).to(x.dtype).mul_(scale)


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (an ``nn.Dropout``, so code that finds dropout
    layers by type, to switch them on at inference for instance, finds it)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
