"""The CMA-Transformer: asymmetric cross-modal augmentation of a central modality (cmath.md, step 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor, nn

from fusionkit.attention import Backend
from fusionkit.blocks.stream_cache import StreamCache
from fusionkit.blocks.transformer import TransformerLayer
from fusionkit.losses.masked import presence_masks
from fusionkit.typing import check_features, typechecked


def stream_name(target: str, source: str) -> str:
    """Name of the stream of ``target`` augmented by ``source``: ``"target<-source"``."""
    return f"{target}<-{source}"


class CMATransformer(nn.Module):
    """For each auxiliary modality a, a stack of ``depth`` cross-attention layers whose
    queries start at the central modality c and whose keys/values are a: the stream ``c<-a``.

    Auxiliaries never receive the central modality's information (the asymmetry): the
    stream ``c<-a`` depends on c and a only. With ``symmetric=True`` every ordered pair of
    modalities gets a stream (MulT-style), for the ablation. With no auxiliary modality the
    block returns the central stream alone. ``aligned=True`` gives every layer the
    same-utterance auxiliary features directly as well (see :class:`TransformerLayer`);
    ``causal=True`` lets utterance t see utterances <= t only. ``attention_dropout`` (None:
    ``dropout``) is the layers' dropout on the attention weights.

    Returns a dict: ``central`` -> the central input (zeroed at padding), and ``"x<-y"`` -> (b, t, dim)
    for each pair.

    Missing modalities (``presence``, modality -> (b, t), True where an utterance has it; a
    modality left out is present at every real utterance): a modality's values are read at
    its present utterances only. Each stream ``x<-y`` attends over y's present utterances
    (and the aligned term adds nothing where y is absent); a query with no present key
    gets no update from y there, only the feed-forward part of the layers. Where the
    target x (the central modality, in the asymmetric form) is absent, its query starts at
    zero instead of x's values: the stream there carries y's information only, drawn from
    y's present utterances (in CMATH the context encoder already gives zeros there), and
    the returned ``central`` is zero there.
    """

    def __init__(
        self,
        dim: int,
        *,
        central: str,
        auxiliary: Sequence[str],
        depth: int = 2,
        heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        symmetric: bool = False,
        aligned: bool = False,
        causal: bool = False,
        backend: Backend = "auto",
    ):
        super().__init__()
        auxiliary = list(auxiliary)
        if central in auxiliary or len(set(auxiliary)) != len(auxiliary):
            raise ValueError(
                f"auxiliary: must be distinct and exclude the central modality {central!r}, got {auxiliary}"
            )
        self.dim, self.central, self.auxiliary = dim, central, auxiliary
        modalities = [central, *auxiliary]
        if symmetric:
            pairs = [(t, s) for t in modalities for s in modalities if t != s]
        else:
            pairs = [(central, a) for a in auxiliary]
        self.pairs = pairs
        self.streams = nn.ModuleDict(
            {
                stream_name(t, s): nn.ModuleList(
                    TransformerLayer(
                        dim,
                        heads=heads,
                        ff_mult=ff_mult,
                        dropout=dropout,
                        attention_dropout=attention_dropout,
                        cross=True,
                        aligned=aligned,
                        causal=causal,
                        backend=backend,
                    )
                    for _ in range(depth)
                )
                for t, s in pairs
            }
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def output_names(self) -> list[str]:
        """Keys of the returned dict, in order: the central modality, then each stream."""
        return [self.central, *(stream_name(t, s) for t, s in self.pairs)]

    @typechecked
    def forward(
        self,
        features: Mapping[str, Tensor],
        *,
        mask: Bool[Tensor, "batch time"],
        presence: Mapping[str, Bool[Tensor, "batch time"]] | None = None,
        cache: StreamCache | None = None,
    ) -> dict[str, Tensor]:
        """Augment ``features[central]`` (b, t, dim) by each auxiliary (b, t, dim); with a
        ``cache`` (causal blocks, online use), of the dialogue's next utterance."""
        modalities = [self.central, *self.auxiliary]
        check_features("features", features, mask, expected=dict.fromkeys(modalities, self.dim))
        present = presence_masks(mask, presence, modalities)
        if presence is not None:  # a modality's values are never read where it is absent
            features = {m: torch.where(present[m].unsqueeze(-1), features[m], 0.0) for m in present}
        keep = mask.unsqueeze(-1)
        out = {self.central: torch.where(keep, features[self.central], 0.0)}
        for target, source in self.pairs:
            u = features[target]
            for layer in self.streams[stream_name(target, source)]:
                u = layer(
                    u, mask=mask, context=features[source], key_mask=present[source], cache=cache
                )
            out[stream_name(target, source)] = torch.where(keep, self.norm(u), 0.0)
        return out
