"""Tensor Fusion Network (Zadeh et al., EMNLP 2017)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from fusionkit.fusion.base import Fusion


class TensorFusion(Fusion):
    """Outer product of the modalities, each projected to ``factor_dim`` and extended by 1.

    The 1 keeps unimodal and bimodal terms in the product. The product has
    ``(factor_dim + 1) ** M`` entries, hence the small projection first.
    """

    def __init__(
        self, in_dims: Mapping[str, int], dim: int, *, factor_dim: int = 16, absence: bool = False
    ):
        super().__init__(in_dims, dim, absence=absence)
        self.proj = nn.ModuleList(nn.Linear(d, factor_dim) for d in self.in_dims.values())
        self.out = nn.Linear((factor_dim + 1) ** len(self.in_dims), dim)

    def fuse(self, xs: list[Tensor]) -> Tensor:
        zs = [F.pad(p(x), (0, 1), value=1.0) for p, x in zip(self.proj, xs)]
        product = zs[0]
        for z in zs[1:]:
            product = rearrange(
                einsum(product, z, "b t i, b t j -> b t i j"), "b t i j -> b t (i j)"
            )
        return self.out(product)


class LowRankFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al., ACL 2018): TFN with rank-``rank`` factors.

    ``out = sum_r prod_m ([x_m, 1] @ W_m[r]) + bias``, never forming the outer product.
    """

    def __init__(
        self, in_dims: Mapping[str, int], dim: int, *, rank: int = 4, absence: bool = False
    ):
        super().__init__(in_dims, dim, absence=absence)
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(rank, d + 1, dim) / (d + 1) ** 0.5)
            for d in self.in_dims.values()
        )
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(dim))

    def fuse(self, xs: list[Tensor]) -> Tensor:
        product = None
        for factor, x in zip(self.factors, xs):
            h = einsum(F.pad(x, (0, 1), value=1.0), factor.to(x.dtype), "b t i, r i o -> b t r o")
            product = h if product is None else product * h
        return (
            einsum(product, self.rank_weights.to(product.dtype), "b t r o, r -> b t o") + self.bias
        )
