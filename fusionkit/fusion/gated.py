"""Gated fusion: a learned, per-utterance convex combination of projected modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from fusionkit.fusion.base import Fusion


class GatedFusion(Fusion):
    """Project each modality to ``dim``; softmax gates from their concatenation weight them.

    With one modality the gate is 1 and the block is its projection. CMATH uses it to combine
    a branch's streams into the fine-grained representation (cmath.md, step 3).
    """

    def __init__(self, in_dims: Mapping[str, int], dim: int, *, absence: bool = False):
        super().__init__(in_dims, dim, absence=absence)
        self.proj = nn.ModuleList(nn.Linear(d, dim) for d in self.in_dims.values())
        self.gate = nn.Linear(len(self.in_dims) * dim, len(self.in_dims))

    def fuse(self, xs: list[Tensor]) -> Tensor:
        hs = [torch.tanh(p(x)) for p, x in zip(self.proj, xs)]
        weights = self.gate(torch.cat(hs, dim=-1)).float().softmax(-1).to(hs[0].dtype)
        stacked = rearrange(hs, "m b t d -> b t m d")
        return einsum(weights, stacked, "b t m, b t m d -> b t d")
