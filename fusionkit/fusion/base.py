"""What every fusion baseline shares: sorted modality order, input checks, masked output."""

from __future__ import annotations

from collections.abc import Mapping

from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.typing import check_features, typechecked


class Fusion(nn.Module):
    """Base class: ``forward(inputs: Mapping[str, (b, t, d_m)], mask) -> (b, t, dim)``.

    Subclasses implement ``fuse(xs)`` on the inputs listed in sorted modality order; the base
    checks the inputs against ``in_dims`` and zeroes padded positions of the output.
    """

    def __init__(self, in_dims: Mapping[str, int], dim: int):
        super().__init__()
        if not in_dims:
            raise ValueError("in_dims: at least one modality is needed")
        self.in_dims = dict(sorted(in_dims.items()))
        self.dim = dim

    def fuse(self, xs: list[Tensor]) -> Tensor:
        raise NotImplementedError

    @typechecked
    def forward(
        self, inputs: Mapping[str, Tensor], mask: Bool[Tensor, "batch time"]
    ) -> Float[Tensor, "batch time dim"]:
        """Fuse ``inputs`` (modality -> (b, t, d_m)) into (b, t, dim); zeros at padding."""
        check_features("inputs", inputs, mask, expected=self.in_dims)
        out = self.fuse([inputs[m] for m in self.in_dims])
        return out * mask.unsqueeze(-1).to(out.dtype)
