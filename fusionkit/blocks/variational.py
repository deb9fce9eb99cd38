"""Variational fusion of fine-grained representations into a coarse one (cmath.md, step 4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import reduce
from jaxtyping import Bool
from torch import Tensor, nn

from fusionkit.losses.masked import gaussian_kl
from fusionkit.typing import check_features, typechecked

LOGVAR_RANGE = (-10.0, 10.0)


@dataclass(frozen=True)
class VariationalOutput:
    """``z``, ``mu``, ``logvar`` (b, t, latent_dim); ``kl`` scalar over real utterances."""

    z: Tensor
    mu: Tensor
    logvar: Tensor
    kl: Tensor


class VariationalFusion(nn.Module):
    """Fuse ``num_inputs`` representations into one diagonal-Gaussian latent.

    ``mode="poe"``: each input k gives (mu_k, logvar_k) by two linear heads; the posterior is
    the product of these experts and a standard-normal prior expert, so an input with a
    large variance counts less. ``mode="concat"``: one Gaussian from the concatenation.
    ``z = mu + sigma * eps`` in training, ``z = mu`` in eval. Log-variances are clamped to
    ``LOGVAR_RANGE`` for stability.

    Args:
        dim: width of every input.
        num_inputs: how many representations ``forward`` receives.
        latent_dim: width of z (defaults to ``dim``).
        mode: ``"poe"`` or ``"concat"``.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_inputs: int,
        latent_dim: int | None = None,
        mode: Literal["poe", "concat"] = "poe",
    ):
        super().__init__()
        if mode not in ("poe", "concat"):
            raise ValueError(f"mode: expected 'poe' or 'concat', got {mode!r}")
        if num_inputs < 1:
            raise ValueError(f"num_inputs: expected >= 1, got {num_inputs}")
        self.dim, self.num_inputs, self.mode = dim, num_inputs, mode
        self.latent_dim = latent_dim or dim
        heads = num_inputs if mode == "poe" else 1
        in_dim = dim if mode == "poe" else dim * num_inputs
        self.mu = nn.ModuleList(nn.Linear(in_dim, self.latent_dim) for _ in range(heads))
        self.logvar = nn.ModuleList(nn.Linear(in_dim, self.latent_dim) for _ in range(heads))

    @typechecked
    def forward(
        self, inputs: Sequence[Tensor], mask: Bool[Tensor, "batch time"]
    ) -> VariationalOutput:
        """Fuse ``inputs`` (each (b, t, dim)) into z (b, t, latent_dim); zeros at padding."""
        if len(inputs) != self.num_inputs:
            raise ValueError(f"inputs: expected {self.num_inputs} tensors, got {len(inputs)}")
        indexed = {str(i): x for i, x in enumerate(inputs)}
        check_features("inputs", indexed, mask, expected=dict.fromkeys(indexed, self.dim))
        xs = list(inputs) if self.mode == "poe" else [torch.cat(list(inputs), dim=-1)]
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
        zero = torch.zeros((), device=mu.device)
        dtype = inputs[0].dtype
        return VariationalOutput(
            z=torch.where(keep, z, zero).to(dtype),
            mu=torch.where(keep, mu, zero).to(dtype),
            logvar=torch.where(keep, logvar, zero).to(dtype),
            kl=gaussian_kl(mu, logvar, mask),
        )
