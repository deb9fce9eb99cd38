"""Dialogues and padded batches of dialogues."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100
"""Label at padded positions (PyTorch's ``ignore_index`` default)."""


@dataclass(frozen=True)
class Dialogue:
    """One conversation: ``features`` modality -> (t, d_m) array, ``speakers`` and ``labels`` (t,).

    A label of ``IGNORE_INDEX`` marks an utterance that is fed to the model but never scored.
    """

    id: str
    features: Mapping[str, np.ndarray]
    speakers: np.ndarray
    labels: np.ndarray
    extras: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        t = len(self.labels)
        if t == 0:
            raise ValueError(f"dialogue {self.id!r}: has no utterances")
        if len(self.speakers) != t:
            raise ValueError(f"dialogue {self.id!r}: {len(self.speakers)} speakers for {t} labels")
        for name, x in self.features.items():
            if x.ndim != 2 or x.shape[0] != t:
                raise ValueError(
                    f"dialogue {self.id!r}: features[{name!r}] has shape {x.shape}, expected ({t}, dim)"
                )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DialogueBatch:
    """A padded batch: ``features`` modality -> (b, t, d_m), ``mask`` (b, t) True at real
    utterances, ``speakers`` (b, t), ``labels`` (b, t) with ``IGNORE_INDEX`` at padding."""

    features: dict[str, Tensor]
    mask: Tensor
    speakers: Tensor
    labels: Tensor
    ids: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mask.dtype != torch.bool or self.mask.dim() != 2:
            raise TypeError(
                f"mask: expected a bool tensor (batch, time), got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        for name, t in (("speakers", self.speakers), ("labels", self.labels)):
            if t.shape != self.mask.shape or t.is_floating_point():
                raise ValueError(
                    f"{name}: expected an integer tensor of shape {tuple(self.mask.shape)}, got {t.dtype} {tuple(t.shape)}"
                )
        for name, x in self.features.items():
            if x.shape[:2] != self.mask.shape or x.dim() != 3:
                raise ValueError(
                    f"features[{name!r}]: shape {tuple(x.shape)} does not match mask {tuple(self.mask.shape)}"
                )

    @property
    def modalities(self) -> list[str]:
        """Modality names, sorted."""
        return sorted(self.features)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> DialogueBatch:
        """The same batch on ``device``."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return DialogueBatch(
            features={k: move(v) for k, v in self.features.items()},
            mask=move(self.mask),
            speakers=move(self.speakers),
            labels=move(self.labels),
            ids=self.ids,
        )

    @classmethod
    def collate(
        cls, dialogues: Sequence[Dialogue], *, dtype: torch.dtype = torch.float32
    ) -> DialogueBatch:
        """Pad dialogues of different lengths into one batch (features 0, labels -100)."""
        if not dialogues:
            raise ValueError("dialogues: cannot collate an empty list")
        names = sorted(dialogues[0].features)
        for d in dialogues:
            if sorted(d.features) != names:
                raise ValueError(
                    f"dialogue {d.id!r}: modalities {sorted(d.features)} differ from {names}"
                )
        b, t = len(dialogues), max(len(d) for d in dialogues)
        mask = torch.zeros(b, t, dtype=torch.bool)
        speakers = torch.zeros(b, t, dtype=torch.long)
        labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
        features = {
            m: torch.zeros(b, t, dialogues[0].features[m].shape[1], dtype=dtype) for m in names
        }
        for i, d in enumerate(dialogues):
            n = len(d)
            mask[i, :n] = True
            speakers[i, :n] = torch.as_tensor(np.asarray(d.speakers), dtype=torch.long)
            labels[i, :n] = torch.as_tensor(np.asarray(d.labels), dtype=torch.long)
            for m in names:
                features[m][i, :n] = torch.as_tensor(np.asarray(d.features[m]), dtype=dtype)
        return cls(
            features=features,
            mask=mask,
            speakers=speakers,
            labels=labels,
            ids=tuple(d.id for d in dialogues),
        )
