"""What every fusion shares: named inputs in sorted order, input checks, masked output."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit._deprecation import keyword_only
from fusionkit.typing import check_features, typechecked


class Fusion(nn.Module):
    """Base class: ``forward(inputs: Mapping[str, (b, t, d_m)], *, mask) -> (b, t, dim)``.

    Subclasses implement ``fuse(xs)`` on the inputs listed in sorted name order; the base
    checks the inputs against ``in_dims`` and zeroes padded positions of the output. A
    fusion with another kind of output (:class:`~fusionkit.VariationalFusion`) overrides
    ``forward`` and reads its inputs with :meth:`ordered`.
    """

    def __init__(self, in_dims: Mapping[str, int], dim: int):
        super().__init__()
        if not in_dims:
            raise ValueError("in_dims: at least one input is needed")
        self.in_dims = dict(sorted(in_dims.items()))
        self.dim = dim

    def fuse(self, xs: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def ordered(self, inputs: Mapping[str, Tensor], mask: Tensor) -> list[Tensor]:
        """The inputs, checked against ``in_dims`` (names and widths), in sorted name order."""
        check_features("inputs", inputs, mask, expected=self.in_dims)
        return [inputs[m] for m in self.in_dims]

    @keyword_only("mask")
    @typechecked
    def forward(
        self, inputs: Mapping[str, Tensor], *, mask: Bool[Tensor, "batch time"]
    ) -> Float[Tensor, "batch time dim"]:
        """Fuse ``inputs`` (name -> (b, t, d_m)) into (b, t, dim); zeros at padding."""
        out = self.fuse(self.ordered(inputs, mask))
        return torch.where(mask.unsqueeze(-1), out, 0.0)
