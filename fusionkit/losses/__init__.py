"""Losses over real utterances: reconstruction, Gaussian KL, hierarchical distillation."""

from fusionkit.losses.distillation import (
    DistillationLevel,
    DistillationOutput,
    HierarchicalDistillation,
    distillation_kl,
    feature_consistency,
)
from fusionkit.losses.masked import gaussian_kl, masked_mean, masked_mse

__all__ = [
    "DistillationLevel",
    "DistillationOutput",
    "HierarchicalDistillation",
    "distillation_kl",
    "feature_consistency",
    "gaussian_kl",
    "masked_mean",
    "masked_mse",
]
