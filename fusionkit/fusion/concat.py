"""Early fusion by concatenation."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusionkit.fusion.base import Fusion


class ConcatFusion(Fusion):
    """Concatenate the modalities (sorted by name) and project to ``dim`` with a Linear."""

    def __init__(self, in_dims: Mapping[str, int], dim: int, *, absence: bool = False):
        super().__init__(in_dims, dim, absence=absence)
        self.proj = nn.Linear(sum(self.in_dims.values()), dim)

    def fuse(self, xs: list[Tensor]) -> Tensor:
        return self.proj(torch.cat(xs, dim=-1))
