"""Losses averaged over real utterances: reconstruction error and Gaussian KL."""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fusionkit._deprecation import keyword_only
from fusionkit.typing import typechecked


@keyword_only("mask")
def masked_mean(values: Tensor, *, mask: Tensor) -> Tensor:
    """Mean of per-utterance ``values`` (b, t) over real utterances; 0 when there are none.

    Values at padded positions are dropped with ``where``, not multiplied by 0, so that a
    non-finite value there can reach neither the result nor the gradient.
    """
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / mask.sum().clamp_min(1).to(values.dtype)


@keyword_only("mask")
@typechecked
def masked_mse(
    prediction: Float[Tensor, "batch time dim"],
    target: Float[Tensor, "batch time dim"],
    *,
    mask: Bool[Tensor, "batch time"],
    reduction: Literal["mean", "sum"] = "mean",
) -> Float[Tensor, ""]:
    """Squared error per utterance (mean or sum over features), averaged over real utterances.

    Padded positions never count, whatever they hold (cmath.md, step 2).
    """
    err = (prediction.float() - target.float()).square()
    err = torch.where(
        mask.unsqueeze(-1), err, torch.zeros((), device=err.device)
    )  # inf - inf at padding
    return masked_mean(err.mean(-1) if reduction == "mean" else err.sum(-1), mask=mask)


@keyword_only("mask")
@typechecked
def gaussian_kl(
    mu: Float[Tensor, "batch time dim"],
    logvar: Float[Tensor, "batch time dim"],
    *,
    mask: Bool[Tensor, "batch time"],
) -> Float[Tensor, ""]:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over features, averaged over real utterances."""
    mu, logvar = mu.float(), logvar.float()
    return masked_mean(0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1), mask=mask)
