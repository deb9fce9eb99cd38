"""Classic fusion baselines: ``forward(inputs: Mapping[str, (b, t, d_m)], *, mask, presence=None)
-> (b, t, dim)``; ``absence=True`` gives each input a learned absence vector (see :class:`Fusion`)."""

from fusionkit.fusion.base import Fusion
from fusionkit.fusion.concat import ConcatFusion
from fusionkit.fusion.gated import GatedFusion
from fusionkit.fusion.tensor import LowRankFusion, TensorFusion

__all__ = ["ConcatFusion", "Fusion", "GatedFusion", "LowRankFusion", "TensorFusion"]
