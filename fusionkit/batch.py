"""Dialogues and padded batches of dialogues."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fusionkit.errors import DataError

IGNORE_INDEX = -100
"""Label at padded positions (PyTorch's ``ignore_index`` default)."""


@dataclass(frozen=True)
class Dialogue:
    """One conversation: ``features`` modality -> (t, d_m) array, ``speakers`` and ``labels`` (t,).

    A label of ``IGNORE_INDEX`` marks an utterance that is fed to the model but never scored.
    ``presence`` modality -> bool (t,) marks the utterances that have that modality; a
    modality not in it is present everywhere. Feature values of absent utterances carry no
    meaning (conventions.md, "Presence of a modality").
    """

    id: str
    features: Mapping[str, np.ndarray]
    speakers: np.ndarray
    labels: np.ndarray
    extras: Mapping[str, object] = field(default_factory=dict)
    presence: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        t = len(self.labels)
        if t == 0:
            raise DataError(f"dialogue {self.id!r}: has no utterances")
        if len(self.speakers) != t:
            raise DataError(f"dialogue {self.id!r}: {len(self.speakers)} speakers for {t} labels")
        for name, x in self.features.items():
            if x.ndim != 2 or x.shape[0] != t:
                raise DataError(
                    f"dialogue {self.id!r}: features[{name!r}] has shape {x.shape}, expected ({t}, dim)"
                )
        for name, p in self.presence.items():
            if name not in self.features:
                raise DataError(f"dialogue {self.id!r}: presence[{name!r}] names no modality")
            p = np.asarray(p)
            if p.dtype != np.bool_ or p.shape != (t,):
                raise DataError(
                    f"dialogue {self.id!r}: presence[{name!r}] must be bool of shape ({t},), got {p.dtype} {p.shape}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    def present(self, modality: str) -> np.ndarray:
        """Bool (t,): the utterances that have ``modality``."""
        if modality not in self.features:
            raise KeyError(f"modality {modality!r} not in {sorted(self.features)}")
        p = self.presence.get(modality)
        return np.ones(len(self), dtype=bool) if p is None else np.asarray(p, dtype=bool)


@dataclass(frozen=True)
class DialogueBatch:
    """A padded batch: ``features`` modality -> (b, t, d_m), ``mask`` (b, t) True at real
    utterances, ``speakers`` (b, t), ``labels`` (b, t) with ``IGNORE_INDEX`` at padding, and
    ``presence`` modality -> (b, t) True where an utterance has that modality (a subset of
    ``mask``), for the modalities some utterance of the batch lacks: a modality left out is
    present at every real utterance (:meth:`present` gives any modality's)."""

    features: dict[str, Tensor]
    mask: Tensor
    speakers: Tensor
    labels: Tensor
    ids: tuple[str, ...] = ()
    presence: dict[str, Tensor] = field(default_factory=dict)

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
        unknown = sorted(set(self.presence) - set(self.features))
        if unknown:
            raise ValueError(f"presence: {unknown} name no modality of {sorted(self.features)}")
        for name, p in self.presence.items():
            if p.dtype != torch.bool or p.shape != self.mask.shape:
                raise ValueError(
                    f"presence[{name!r}]: expected a bool tensor of shape {tuple(self.mask.shape)}, got {p.dtype} {tuple(p.shape)}"
                )
            if bool((p & ~self.mask).any()):
                raise ValueError(f"presence[{name!r}]: True at a padded position (not in mask)")

    def present(self, modality: str) -> Tensor:
        """Bool (b, t): the utterances that have ``modality``."""
        return self.presence.get(modality, self.mask)

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
            presence={k: move(v) for k, v in self.presence.items()},
        )

    def emptied(self) -> DialogueBatch:
        """The same shapes with no real utterance (mask all False, labels ignored): a
        process's stand-in batch that weighs nothing but takes part in every collective."""
        none = torch.zeros_like(self.mask)
        return DialogueBatch(
            features=self.features,
            mask=none,
            speakers=self.speakers,
            labels=torch.full_like(self.labels, IGNORE_INDEX),
            ids=(),
        )

    @classmethod
    def collate(
        cls, dialogues: Sequence[Dialogue], *, dtype: torch.dtype = torch.float32
    ) -> DialogueBatch:
        """Pad dialogues of different lengths into one batch (features 0, labels -100).

        Features of absent utterances are set to 0 too, so nothing there looks like data.
        """
        if not dialogues:
            raise ValueError("dialogues: cannot collate an empty list")
        names = sorted(dialogues[0].features)
        for d in dialogues:
            if sorted(d.features) != names:
                raise DataError(
                    f"dialogue {d.id!r}: modalities {sorted(d.features)} differ from {names}"
                )
        b, t = len(dialogues), max(len(d) for d in dialogues)
        mask = torch.zeros(b, t, dtype=torch.bool)
        speakers = torch.zeros(b, t, dtype=torch.long)
        labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
        features = {
            m: torch.zeros(b, t, dialogues[0].features[m].shape[1], dtype=dtype) for m in names
        }
        presence = {m: torch.zeros(b, t, dtype=torch.bool) for m in names}
        for i, d in enumerate(dialogues):
            n = len(d)
            mask[i, :n] = True
            speakers[i, :n] = torch.as_tensor(np.asarray(d.speakers), dtype=torch.long)
            labels[i, :n] = torch.as_tensor(np.asarray(d.labels), dtype=torch.long)
            for m in names:
                x = torch.as_tensor(np.asarray(d.features[m]), dtype=dtype)
                if m not in d.presence:  # present at every utterance: copied as it is
                    features[m][i, :n] = x
                    presence[m][i, :n] = True
                    continue
                present = torch.from_numpy(d.present(m))
                features[m][i, :n] = torch.where(present[:, None], x, 0.0)
                presence[m][i, :n] = present
        lacking = {m for d in dialogues for m, p in d.presence.items() if not np.all(p)}
        return cls(
            features=features,
            mask=mask,
            speakers=speakers,
            labels=labels,
            ids=tuple(d.id for d in dialogues),
            presence={m: presence[m] for m in sorted(lacking)},
        )


def batches(
    dialogues: Sequence[Dialogue],
    batch_size: int,
    *,
    order: Sequence[int] | None = None,
    shard: tuple[int, int] = (0, 1),
    dtype: torch.dtype = torch.float32,
) -> Iterator[DialogueBatch]:
    """Padded batches of ``batch_size`` dialogues taken in ``order`` (default: as given).

    With ``shard=(rank, world_size)`` each batch's dialogues are split across processes
    (``rank::world_size``); a process left without one in a short last batch gets an
    :meth:`~DialogueBatch.emptied` batch, so every process takes the same number of steps.
    The one batching function of training, evaluation and the benchmarks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    rank, size = shard
    order = range(len(dialogues)) if order is None else order
    for start in range(0, len(order), batch_size):
        chunk = [dialogues[i] for i in order[start : start + batch_size]]
        local = chunk[rank::size]
        batch = DialogueBatch.collate(local or chunk[:1], dtype=dtype)
        yield batch if local else batch.emptied()


def length_buckets(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[int]:
    """An order of dialogues for :func:`batches` in which each batch holds dialogues of
    similar length (as ``group_by_length`` does elsewhere): sorted by length with ties
    broken at random, cut into batches of ``batch_size``, the full batches shuffled by
    ``rng`` and a short one last (so that :func:`batches`, cutting from the start, keeps
    every batch whole).
    Less padding per batch; a new ``rng`` each epoch gives new batches and a new order."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    by_length = np.lexsort((rng.random(len(lengths)), np.asarray(lengths)))
    chunks = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    full = len(lengths) // batch_size  # a short chunk stays last: batches() cuts from 0
    ks = [*rng.permutation(full), *range(full, len(chunks))]
    return [int(i) for k in ks for i in chunks[k]]
