"""What every fusion shares: named inputs in sorted order, input checks, absence, masked output."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.losses.masked import presence_masks
from fusionkit.typing import check_features, typechecked


class Fusion(nn.Module):
    """Base class: ``forward(inputs: Mapping[str, (b, t, d_m)], *, mask, presence=None) -> (b, t, dim)``.

    Subclasses implement ``fuse(xs)`` on the inputs listed in sorted name order; the base
    checks the inputs against ``in_dims`` and zeroes padded positions of the output. A
    fusion with another kind of output (:class:`~fusionkit.VariationalFusion`) overrides
    ``forward`` and reads its inputs with :meth:`ordered`.

    Absence: with ``absence=True`` each input ``m`` has a learned absence vector
    ``absent[m]`` (its width, initialised to zeros, so that building one draws no random
    numbers), which replaces the input wherever ``presence[m]`` is False: the fusion sees an
    explicit, trainable "missing" value, never the values at an absent position. It gets a
    gradient only from utterances where its input is absent. ``presence`` (name -> (b, t),
    True where the utterance has that input; a name left out is present at every real
    utterance) is accepted only with ``absence=True``: without it, no value could stand for
    an absent input.
    """

    def __init__(self, in_dims: Mapping[str, int], dim: int, *, absence: bool = False):
        super().__init__()
        if not in_dims:
            raise ValueError("in_dims: at least one input is needed")
        self.in_dims = dict(sorted(in_dims.items()))
        self.dim = dim
        self.absent = (
            nn.ParameterDict({m: nn.Parameter(torch.zeros(w)) for m, w in self.in_dims.items()})
            if absence
            else None
        )

    def fuse(self, xs: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def ordered(
        self,
        inputs: Mapping[str, Tensor],
        mask: Tensor,
        presence: Mapping[str, Tensor] | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The inputs, checked against ``in_dims`` (names and widths), in sorted name order,
        and the presence (b, t) of each. With ``presence``, an input is replaced where it is
        not present (absent or padded) by its absence vector, or by zeros without one."""
        check_features("inputs", inputs, mask, expected=self.in_dims)
        present = presence_masks(mask, presence, self.in_dims)
        if presence is None:
            return [inputs[m] for m in self.in_dims], list(present.values())
        xs = [
            torch.where(
                present[m].unsqueeze(-1),
                inputs[m],
                0.0 if self.absent is None else self.absent[m].to(inputs[m].dtype),
            )
            for m in self.in_dims
        ]
        return xs, list(present.values())

    def check_absence(self, presence: Mapping[str, Tensor] | None) -> None:
        """Fail unless this fusion has absence vectors for the absent inputs ``presence`` marks."""
        if presence is not None and self.absent is None:
            raise ValueError(
                f"presence: {type(self).__name__} was built without absence vectors; "
                "build it with absence=True to fuse inputs that may be absent"
            )

    @typechecked
    def forward(
        self,
        inputs: Mapping[str, Tensor],
        *,
        mask: Bool[Tensor, "batch time"],
        presence: Mapping[str, Bool[Tensor, "batch time"]] | None = None,
    ) -> Float[Tensor, "batch time dim"]:
        """Fuse ``inputs`` (name -> (b, t, d_m)) into (b, t, dim); zeros at padding."""
        self.check_absence(presence)
        xs, _ = self.ordered(inputs, mask, presence)
        return torch.where(mask.unsqueeze(-1), self.fuse(xs), 0.0)
