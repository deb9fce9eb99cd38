"""Variational fusion of fine-grained representations into a coarse one (cmath.md, step 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import reduce
from jaxtyping import Bool
from torch import Tensor, nn

from fusionkit._deprecation import keyword_only, warn
from fusionkit.fusion.base import Fusion
from fusionkit.losses.masked import gaussian_kl
from fusionkit.typing import typechecked

LOGVAR_RANGE = (-10.0, 10.0)


@dataclass(frozen=True)
class VariationalOutput:
    """``z``, ``mu``, ``logvar`` (b, t, latent_dim); ``kl`` scalar over real utterances."""

    z: Tensor
    mu: Tensor
    logvar: Tensor
    kl: Tensor


class VariationalFusion(Fusion):
    """Fuse named representations into one diagonal-Gaussian latent of width ``dim``.

    ``mode="poe"``: each input k gives (mu_k, logvar_k) by two linear heads; the posterior is
    the product of these experts and a standard-normal prior expert, so an input with a
    large variance counts less. ``mode="concat"``: one Gaussian from the concatenation.
    ``z = mu + sigma * eps`` in training, ``z = mu`` in eval. Log-variances are clamped to
    ``LOGVAR_RANGE`` for stability. Returns the fused ``z`` with its ``kl`` beside it.

    Args:
        in_dims: name -> width of each input (the fusion contract of :mod:`fusionkit.fusion`).
        dim: width of z.
        mode: ``"poe"`` or ``"concat"``.
    """

    def __init__(
        self,
        in_dims: Mapping[str, int] | int,
        dim: int | None = None,
        *,
        mode: Literal["poe", "concat"] = "poe",
        num_inputs: int | None = None,
        latent_dim: int | None = None,
    ):
        if isinstance(in_dims, int):  # the 0.1 form: VariationalFusion(dim, num_inputs=k)
            warn("VariationalFusion(dim, num_inputs=k) is now VariationalFusion(in_dims, dim)")
            if num_inputs is None or num_inputs < 1:
                raise ValueError(f"num_inputs: expected >= 1, got {num_inputs}")
            in_dims, dim = (
                dict.fromkeys(map(str, range(num_inputs)), in_dims),
                latent_dim or in_dims,
            )
        if dim is None:
            raise TypeError("dim: the width of z is required")
        super().__init__(in_dims, dim)
        if mode not in ("poe", "concat"):
            raise ValueError(f"mode: expected 'poe' or 'concat', got {mode!r}")
        self.mode = mode
        widths = list(self.in_dims.values()) if mode == "poe" else [sum(self.in_dims.values())]
        self.mu = nn.ModuleList(nn.Linear(w, dim) for w in widths)
        self.logvar = nn.ModuleList(nn.Linear(w, dim) for w in widths)

    @keyword_only("mask")
    @typechecked
    def forward(
        self,
        inputs: Mapping[str, Tensor] | Sequence[Tensor],
        *,
        mask: Bool[Tensor, "batch time"],
    ) -> VariationalOutput:
        """Fuse ``inputs`` (name -> (b, t, d_k); a sequence is deprecated) into z (b, t, dim)."""
        if not isinstance(inputs, Mapping):
            warn("VariationalFusion takes a mapping of named inputs, not a sequence")
            inputs = {str(i): x for i, x in enumerate(inputs)}
        xs = self.ordered(inputs, mask)
        xs = xs if self.mode == "poe" else [torch.cat(xs, dim=-1)]
        mus = torch.stack([head(x) for head, x in zip(self.mu, xs)]).float()
        logvars = torch.stack([head(x) for head, x in zip(self.logvar, xs)])
        logvars = logvars.float().clamp(*LOGVAR_RANGE)
        if self.mode == "poe":
            precisions = logvars.neg().exp()
            precision = 1.0 + reduce(precisions, "k b t d -> b t d", "sum")  # prior expert: 1
            mu = reduce(precisions * mus, "k b t d -> b t d", "sum") / precision
            logvar = -precision.log()
        else:
            mu, logvar = mus[0], logvars[0]
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
        keep = mask.unsqueeze(-1)
        dtype = xs[0].dtype
        return VariationalOutput(
            z=torch.where(keep, z, 0.0).to(dtype),
            mu=torch.where(keep, mu, 0.0).to(dtype),
            logvar=torch.where(keep, logvar, 0.0).to(dtype),
            kl=gaussian_kl(mu, logvar, mask=mask),
        )
