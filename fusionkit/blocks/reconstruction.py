"""Modality reconstruction: compress a modality and reconstruct it (cmath.md, step 2)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.dropout import Dropout
from fusionkit.losses.masked import masked_mse, present
from fusionkit.typing import check_last_dim, typechecked


@dataclass(frozen=True)
class Reconstruction:
    """``latent`` (b, t, latent_dim), ``reconstruction`` (b, t, in_dim), scalar ``loss``."""

    latent: Tensor
    reconstruction: Tensor
    loss: Tensor


def halving_widths(start: int, stop: int) -> list[int]:
    """Channel widths that halve from ``start`` while staying above ``stop``, then ``stop``."""
    widths = [start]
    while widths[-1] // 2 > stop:
        widths.append(widths[-1] // 2)
    return [*widths, stop]


class ModalityReconstructor(nn.Module):
    """A 1-D convolutional U-Net (or an MLP autoencoder) over the utterance axis.

    The encoder halves the channel width at each level down to ``latent_dim``; the decoder
    mirrors it with skip connections and reconstructs the input. The time axis keeps its
    length, and padded positions are zeroed before every convolution so that they never
    leak into real ones. ``loss`` is ``||x - x_hat||^2`` per utterance (``loss_reduction=
    "sum"``, the design note's Frobenius form; ``"mean"`` divides by ``in_dim``), averaged
    over real utterances (:func:`~fusionkit.losses.masked_mse`).

    With ``presence`` (b, t), the utterances that have the modality: absent utterances are
    treated exactly as padding. Their input is replaced by zeros before anything reads it
    and they are zeroed before every convolution, their latent and reconstruction are zero,
    and the loss averages over present utterances only. ``presence=None``: every real
    utterance is present.

    Args:
        in_dim: input feature width d_m.
        latent_dim: width d_z of the compressed representation.
        hidden_dim: width of the first level (defaults to ``in_dim``).
        dropout: dropout after each activation.
        kind: ``"unet"`` (convolutional, sees neighbouring utterances) or ``"mlp"``.
        kernel_size: odd convolution width over utterances.
        causal: convolutions see the current and earlier utterances only (online use).
        skip: U-Net skip connections (``"unet"`` only).
        loss_reduction: ``"sum"`` or ``"mean"`` over features.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        latent_dim: int,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        kind: Literal["unet", "mlp"] = "unet",
        kernel_size: int = 3,
        skip: bool = True,
        loss_reduction: Literal["sum", "mean"] = "sum",
        causal: bool = False,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the time length, got {kernel_size}")
        if kind not in ("unet", "mlp"):
            raise ValueError(f"kind: expected 'unet' or 'mlp', got {kind!r}")
        self.in_dim, self.kind, self.skip = in_dim, kind, skip and kind == "unet"
        self.loss_reduction = loss_reduction
        widths = [in_dim, *halving_widths(hidden_dim or in_dim, latent_dim)]
        if widths[1] == in_dim:
            widths = widths[1:]
        k = kernel_size if kind == "unet" else 1
        self.padding = (k - 1, 0) if causal else (k // 2, k // 2)
        conv = lambda i, o: nn.Conv1d(i, o, k)  # noqa: E731
        self.down = nn.ModuleList(conv(i, o) for i, o in itertools.pairwise(widths))
        pairs = list(zip(reversed(widths[1:]), reversed(widths[:-1])))
        # Every decoder level but the last also sees its encoder twin (the U-Net skip).
        self.up = nn.ModuleList(
            conv(i + (o if self.skip and j < len(pairs) - 1 else 0), o)
            for j, (i, o) in enumerate(pairs)
        )
        self.act = nn.GELU()
        self.drop = Dropout(dropout)

    def _conv(self, layer: nn.Module, h: Tensor, keep: Tensor, last: bool) -> Tensor:
        h = layer(F.pad(h * keep, self.padding))
        return h if last else self.drop(self.act(h))

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "batch time in_dim"],
        *,
        mask: Bool[Tensor, "batch time"],
        presence: Bool[Tensor, "batch time"] | None = None,
        target: Float[Tensor, "batch time in_dim"] | None = None,
    ) -> Reconstruction:
        """Compress and reconstruct ``x`` (b, t, in_dim); outputs are zero at padded and
        absent positions. ``target`` (default ``x``) is what the loss compares the
        reconstruction with: the clean features when ``x`` is a corrupted copy (denoising)."""
        check_last_dim("x", x, self.in_dim)
        target = x if target is None else target
        kept = present(mask, presence)
        if presence is not None:  # never read x (or target) where the modality is absent
            x = torch.where(kept.unsqueeze(-1), x, 0.0)
            target = torch.where(kept.unsqueeze(-1), target, 0.0)
        keep = rearrange(kept, "b t -> b 1 t").to(x.dtype)
        h = rearrange(x, "b t d -> b d t")
        skips = []
        for i, layer in enumerate(self.down):
            skips.append(h)
            h = self._conv(layer, h, keep, last=i == len(self.down) - 1)
        latent = h * keep
        for i, layer in enumerate(self.up):
            skip = skips[-1 - i]
            if self.skip and i < len(self.up) - 1:
                h = torch.cat([h, skip], dim=1)
            h = self._conv(layer, h, keep, last=i == len(self.up) - 1)
        recon = rearrange(h * keep, "b d t -> b t d")
        return Reconstruction(
            latent=rearrange(latent, "b d t -> b t d"),
            reconstruction=recon,
            loss=masked_mse(recon, target, mask=kept, reduction=self.loss_reduction),
        )
