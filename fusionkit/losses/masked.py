"""Masks and the losses averaged over them: presence masks, reconstruction error, Gaussian KL.

Values at masked positions are dropped with ``torch.where``, never by multiplying by 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fusionkit.typing import CHECKING, typechecked


def present(mask: Tensor, presence: Tensor | None, name: str = "presence") -> Tensor:
    """Where a modality is present (b, t): ``presence``, or ``mask`` when it is None.

    ``presence`` must be a bool (b, t) subset of ``mask`` (conventions.md, "Presence of a
    modality"); the subset check reads the tensors (a GPU sync), so it runs only while
    checking is on (``fusionkit.typing.CHECKING``), and not while ``torch.compile`` traces.
    """
    if presence is None:
        return mask
    if presence.dtype != torch.bool or presence.shape != mask.shape:
        raise ValueError(
            f"{name}: expected a bool tensor of shape {tuple(mask.shape)} (the mask's), "
            f"got {presence.dtype} {tuple(presence.shape)}"
        )
    if CHECKING and not torch.compiler.is_compiling() and bool((presence & ~mask).any()):
        raise ValueError(f"{name}: True at a padded position (presence must lie within mask)")
    return presence


def presence_masks(
    mask: Tensor,
    presence: Mapping[str, Tensor] | None,
    names: Iterable[str],
    *,
    name: str = "presence",
) -> dict[str, Tensor]:
    """:func:`present` for each of ``names``: a name that ``presence`` leaves out (or all of
    them, when it is None) is present at every real utterance; a name it has that is not in
    ``names`` is an error (messages call the mapping ``name``)."""
    names = list(names)
    presence = {} if presence is None else presence
    unknown = sorted(set(presence) - set(names))
    if unknown:
        raise ValueError(f"{name}: {unknown} name nothing of {sorted(names)}")
    return {m: present(mask, presence.get(m), f"{name}[{m!r}]") for m in names}


def masked_mean(values: Tensor, *, mask: Tensor) -> Tensor:
    """Mean of per-utterance ``values`` (b, t) over real utterances; 0 when there are none.

    Values at padded positions are dropped with ``where``, not multiplied by 0, so that a
    non-finite value there can reach neither the result nor the gradient.
    """
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / mask.sum().clamp_min(1).to(values.dtype)


@typechecked
def masked_mse(
    prediction: Float[Tensor, "batch time dim"],
    target: Float[Tensor, "batch time dim"],
    *,
    mask: Bool[Tensor, "batch time"],
    reduction: Literal["mean", "sum"] = "mean",
) -> Float[Tensor, ""]:
    """Squared error per utterance (mean or sum over features), averaged over real utterances.

    Masked positions never count, whatever they hold (cmath.md, step 2): pass a modality's
    presence as ``mask`` to count the utterances that have it only.
    """
    err = (prediction.float() - target.float()).square()
    err = torch.where(
        mask.unsqueeze(-1), err, torch.zeros((), device=err.device)
    )  # inf - inf at padding
    return masked_mean(err.mean(-1) if reduction == "mean" else err.sum(-1), mask=mask)


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
