"""A conversation dataset: dialogues, splits, label names and where they came from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fusionkit.batch import IGNORE_INDEX, Dialogue, DialogueBatch, batches
from fusionkit.errors import DataError

SPLITS = ("train", "dev", "test")

Stats = dict[str, tuple[np.ndarray, np.ndarray]]
"""Per-modality (mean, std) of features, as :meth:`ConversationDataset.standardization` gives."""


def standardize(dialogue: Dialogue, stats: Stats) -> Dialogue:
    """``dialogue`` with each modality's features shifted and scaled by ``stats`` (float32)."""
    return replace(
        dialogue,
        features={
            m: ((np.asarray(x, np.float64) - stats[m][0]) / stats[m][1]).astype(np.float32)
            for m, x in dialogue.features.items()
        },
    )


@dataclass(frozen=True)
class ConversationDataset:
    """Dialogues by id, ``splits`` (train/dev/test -> ids), ``label_names`` in label order.

    ``source`` says what was read (file, detected layout, choices made); ``info`` holds
    anything else a reader reports (feature widths, layout id, ...).
    """

    name: str
    dialogues: dict[str, Dialogue]
    splits: dict[str, list[str]]
    label_names: list[str]
    num_speakers: int
    source: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for split, ids in self.splits.items():
            missing = [i for i in ids if i not in self.dialogues]
            if missing:
                raise DataError(
                    f"split {split!r}: {len(missing)} dialogue ids have no dialogue, e.g. {missing[:3]}"
                )

    @property
    def modalities(self) -> list[str]:
        """Modality names, sorted."""
        return sorted(next(iter(self.dialogues.values())).features)

    @property
    def feature_dims(self) -> dict[str, int]:
        """Width of each modality's features."""
        first = next(iter(self.dialogues.values()))
        return {m: int(first.features[m].shape[1]) for m in self.modalities}

    def split(self, name: str) -> list[Dialogue]:
        """The dialogues of split ``name``, in the split's order."""
        if name not in self.splits:
            raise DataError(f"split {name!r} not in {sorted(self.splits)}")
        return [self.dialogues[i] for i in self.splits[name]]

    def num_utterances(self, split: str) -> int:
        return sum(int((np.asarray(d.labels) != IGNORE_INDEX).sum()) for d in self.split(split))

    def with_dev_split(self, fraction: float = 0.1, seed: int = 0) -> ConversationDataset:
        """If there is no dev split, move a fixed, seeded ``fraction`` of training dialogues into one."""
        if self.splits.get("dev"):
            return self
        train = list(self.splits["train"])
        rng = np.random.default_rng(seed)
        n_dev = max(1, round(fraction * len(train)))
        dev_idx = set(rng.permutation(len(train))[:n_dev].tolist())
        splits = dict(self.splits)
        splits["dev"] = [d for i, d in enumerate(train) if i in dev_idx]
        splits["train"] = [d for i, d in enumerate(train) if i not in dev_idx]
        return replace(
            self,
            splits=splits,
            source=f"{self.source}; dev = seeded {fraction:.0%} of train (seed {seed})",
        )

    def select_modalities(self, names: Sequence[str]) -> ConversationDataset:
        """The same dataset with only the modalities ``names`` (a clear error for unknown ones)."""
        unknown = sorted(set(names) - set(self.modalities))
        if unknown or not names:
            raise DataError(
                f"modalities: {unknown or 'none'} not available; this dataset has {self.modalities}"
            )
        dialogues = {
            k: replace(
                d,
                features={m: d.features[m] for m in names},
                presence={m: p for m, p in d.presence.items() if m in names},
            )
            for k, d in self.dialogues.items()
        }
        return replace(self, dialogues=dialogues)

    def standardization(self, split: str = "train", eps: float = 1e-6) -> Stats:
        """Per-feature (mean, std + eps) of each modality over the present utterances of ``split``."""
        stats = {}
        for m in self.modalities:
            x = np.concatenate(
                [
                    np.asarray(d.features[m], dtype=np.float64)[d.present(m)]
                    for d in self.split(split)
                ]
            )
            if len(x) == 0:
                raise DataError(f"standardization: no {split} utterance has modality {m!r}")
            stats[m] = (x.mean(0), x.std(0) + eps)
        return stats

    def standardized(
        self, split: str = "train", *, stats: Stats | None = None
    ) -> ConversationDataset:
        """Every modality shifted and scaled by the (mean, std) of ``split``: ``stats``
        (modality -> (mean, std)) computed on it, by default :meth:`standardization`. New
        data are standardised by their training data's ``stats``."""
        stats = self.standardization(split) if stats is None else stats
        missing = sorted(set(self.modalities) - set(stats))
        if missing:
            raise DataError(f"stats: no statistics for modalities {missing}")
        dialogues = {k: standardize(d, stats) for k, d in self.dialogues.items()}
        return replace(
            self, dialogues=dialogues, source=f"{self.source}; standardized by {split} statistics"
        )

    def utterances(
        self, split: str, modalities: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labelled utterances of ``split`` without their dialogues: features of
        ``modalities`` (all by default) side by side (N, sum of widths), and labels (N,)."""
        names = self.modalities if modalities is None else list(modalities)
        dialogues = self.split(split)
        x = np.concatenate([np.concatenate([d.features[m] for m in names], 1) for d in dialogues])
        y = np.concatenate([np.asarray(d.labels) for d in dialogues])
        keep = y != IGNORE_INDEX
        return x[keep], y[keep]

    def class_counts(self, split: str = "train") -> np.ndarray:
        labels = np.concatenate([np.asarray(d.labels) for d in self.split(split)])
        return np.bincount(labels[labels != IGNORE_INDEX], minlength=len(self.label_names))

    def class_weights(self, split: str = "train") -> torch.Tensor:
        """Inverse class frequencies of ``split`` (as SDT and MMGCN weight IEMOCAP), computed, not hard-coded."""
        counts = self.class_counts(split).astype(np.float64)
        freq = counts / counts.sum()
        return torch.tensor(
            np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0), dtype=torch.float32
        )

    def batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[DialogueBatch]:
        """Padded batches of ``split`` (:func:`fusionkit.batch.batches`); with ``shuffle``,
        in a seeded random order."""
        dialogues = self.split(split)
        order = np.random.default_rng(seed).permutation(len(dialogues)) if shuffle else None
        return batches(dialogues, batch_size, order=order)

    def summary(self) -> str:
        """One line per split with dialogue and utterance counts (unlabelled ones named), the
        modalities, and one line per modality some utterances lack (with the reasons a
        reader recorded in ``info["absent"]``)."""
        dims = ", ".join(f"{m} {d}" for m, d in self.feature_dims.items())
        lines = [
            f"{self.name}: {len(self.label_names)} classes, modalities: {dims}",
            f"source: {self.source}",
        ]
        for s in SPLITS:
            if s in self.splits:
                total = sum(len(d) for d in self.split(s))
                labelled = self.num_utterances(s)
                unlabelled = f" ({total - labelled} unlabelled)" if labelled < total else ""
                lines.append(
                    f"  {s}: {len(self.splits[s])} dialogues, {total} utterances{unlabelled}"
                )
        total = sum(len(d) for d in self.dialogues.values())
        for m in self.modalities:
            absent = sum(int((~d.present(m)).sum()) for d in self.dialogues.values())
            if absent:
                why = self.info.get("absent", {}).get(m, {})
                reasons = ", ".join(f"{k}: {v}" for k, v in why.items() if v)
                lines.append(
                    f"  {m} absent in {absent} of {total} utterances"
                    + (f" ({reasons})" if reasons else "")
                )
        return "\n".join(lines)
