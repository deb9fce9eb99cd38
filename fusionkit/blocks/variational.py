"""Variational fusion of fine-grained representations into a coarse one (cmath.md, step 4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, reduce
from jaxtyping import Bool
from torch import Tensor, nn

from fusionkit.fusion.base import Fusion
from fusionkit.losses.masked import gaussian_kl
from fusionkit.typing import typechecked

LOGVAR_RANGE = (-10.0, 10.0)


@dataclass(frozen=True)
class VariationalOutput:
    """``z``, ``mu``, ``logvar`` (b, t, latent_dim); ``kl`` scalar over real utterances.

    ``shares`` (b, t, experts + 1), float32, ``"poe"`` only (None for ``"concat"``): each
    expert's share of the posterior precision per utterance, columns in ``share_names``
    order (the experts in sorted name order, then ``"prior"``, the standard-normal prior's
    share); rows sum to 1 at real utterances, an absent expert's share is 0, padded rows
    are 0. See :meth:`VariationalFusion.forward` for the definition.
    """

    z: Tensor
    mu: Tensor
    logvar: Tensor
    kl: Tensor
    shares: Tensor | None = None
    share_names: tuple[str, ...] | None = None


class VariationalFusion(Fusion):
    """Fuse named representations into one diagonal-Gaussian latent of width ``dim``.

    ``mode="poe"``: each input k gives (mu_k, logvar_k) by two linear heads; the posterior is
    the product of these experts and a standard-normal prior expert, so an input with a
    large variance counts less. ``mode="concat"``: one Gaussian from the concatenation.
    ``z = mu + sigma * eps`` in training, ``z = mu`` in eval. Log-variances are clamped to
    ``LOGVAR_RANGE`` for stability. Returns the fused ``z`` with its ``kl`` beside it, and
    in ``"poe"`` mode ``shares``: how much each expert (and the prior) weighed in each
    utterance's posterior (:meth:`forward`); ``"concat"`` has no such split (None).

    Missing inputs (``presence``, name -> (b, t), True where the utterance has that input; a
    name left out is present at every real utterance). ``"poe"``: an absent expert is left
    out of the product (its precision is 0 there, its values are never read), so the
    posterior is that of the present experts and the prior; where none is present it is
    the prior itself (mu 0, logvar 0; z is then a draw from N(0, I) in training, 0 in
    eval), and its KL there is 0. ``"concat"``: as every fusion, an absent input is
    replaced by its learned absence vector (``absence=True``, see
    :class:`~fusionkit.fusion.Fusion`); ``"poe"`` needs none and builds none. The KL is
    averaged over real utterances either way.

    Args:
        in_dims: name -> width of each input (the fusion contract of :mod:`fusionkit.fusion`).
        dim: width of z.
        mode: ``"poe"`` or ``"concat"``.
        absence: learned absence vectors for ``mode="concat"`` (ignored by ``"poe"``).
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        dim: int,
        *,
        mode: Literal["poe", "concat"] = "poe",
        absence: bool = False,
    ):
        if mode not in ("poe", "concat"):
            raise ValueError(f"mode: expected 'poe' or 'concat', got {mode!r}")
        super().__init__(in_dims, dim, absence=absence and mode == "concat")
        self.mode = mode
        widths = list(self.in_dims.values()) if mode == "poe" else [sum(self.in_dims.values())]
        self.mu = nn.ModuleList(nn.Linear(w, dim) for w in widths)
        self.logvar = nn.ModuleList(nn.Linear(w, dim) for w in widths)

    @typechecked
    def forward(
        self,
        inputs: Mapping[str, Tensor],
        *,
        mask: Bool[Tensor, "batch time"],
        presence: Mapping[str, Bool[Tensor, "batch time"]] | None = None,
    ) -> VariationalOutput:
        """Fuse ``inputs`` (name -> (b, t, d_k)) into z (b, t, dim), with the KL and, in
        ``"poe"`` mode, each expert's precision share (b, t, experts + 1).

        Share of expert k at an utterance: the mean over the latent dimensions of k's share
        of that dimension's posterior precision, ``mean_d(p_kd / (1 + sum_j p_jd))`` with
        ``p_kd = exp(-logvar_kd)`` (0 where k is absent); the prior's is
        ``mean_d(1 / (1 + sum_j p_jd))``, so the shares sum to 1. Per dimension, k's
        share is exactly its weight in the posterior mean ``mu_d``; averaging these weights
        (rather than dividing summed precisions) keeps one dimension whose precision sits at
        the clamp (e^10) from outweighing all the others.
        """
        if self.mode == "concat":
            self.check_absence(presence)
        xs, present = self.ordered(inputs, mask, presence)
        xs = xs if self.mode == "poe" else [torch.cat(xs, dim=-1)]
        mus = torch.stack([head(x) for head, x in zip(self.mu, xs)]).float()
        logvars = torch.stack([head(x) for head, x in zip(self.logvar, xs)])
        logvars = logvars.float().clamp(*LOGVAR_RANGE)
        if self.mode == "poe":
            precisions = logvars.neg().exp()
            if presence is not None:  # an absent expert's precision is 0: it drops out
                present = rearrange(present, "k b t -> k b t 1")
                precisions = torch.where(present, precisions, 0.0)
            precision = 1.0 + reduce(precisions, "k b t d -> b t d", "sum")  # prior expert: 1
            mu = reduce(precisions * mus, "k b t d -> b t d", "sum") / precision
            logvar = -precision.log()
            experts_and_prior = torch.cat([precisions, torch.ones_like(precision)[None]])
            shares = reduce(experts_and_prior / precision, "k b t d -> b t k", "mean")
            shares = torch.where(mask.unsqueeze(-1), shares, 0.0)
            share_names = (*self.in_dims, "prior")
        else:
            mu, logvar = mus[0], logvars[0]
            shares = share_names = None
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
        keep = mask.unsqueeze(-1)
        dtype = xs[0].dtype
        return VariationalOutput(
            z=torch.where(keep, z, 0.0).to(dtype),
            mu=torch.where(keep, mu, 0.0).to(dtype),
            logvar=torch.where(keep, logvar, 0.0).to(dtype),
            kl=gaussian_kl(mu, logvar, mask=mask),
            shares=shares,
            share_names=share_names,
        )
