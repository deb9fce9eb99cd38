"""Emotions of new conversations from a trained CMATH checkpoint, offline or as they unfold.

    predictor = Predictor.from_checkpoint("runs/synthetic/seed0/best.pt")
    result = predictor.predict(dialogue)        # a Dialogue -> DialoguePrediction
    results = predictor.predict(dataset)        # a ConversationDataset -> list of them
    session = predictor.stream()                # causal models: one utterance at a time
    step = session.push(utterance)

Inputs are raw features, as the checkpoint's data reader gives them: the predictor
standardises them with the training split's statistics saved in the checkpoint.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusionkit import IGNORE_INDEX, Dialogue, DialogueBatch, StreamCache, classification_report
from fusionkit.data import ConversationDataset
from fusionkit.data.dataset import Stats, standardize
from fusionkit.errors import DataError
from fusionkit.metrics import ClassificationReport
from fusionkit.models.cmath import checkpoint
from fusionkit.models.cmath.config import RunConfig
from fusionkit.models.cmath.evaluate import predict_logits
from fusionkit.models.cmath.model import CMATH


@dataclass(frozen=True)
class DialoguePrediction:
    """One dialogue's predictions: per utterance the label and every class probability."""

    dialogue: str
    utterances: list[str]  # utterance ids (positions "0", "1", ... when the data have none)
    labels: list[str]  # predicted label names
    probabilities: np.ndarray  # (t, classes), rows sum to 1
    label_names: list[str]
    true_labels: list[str | None]  # the data's labels, None where unlabelled

    def rows(self) -> list[dict]:
        """One dict per utterance: ids, predicted and true label, a probability per class."""
        return [
            {
                "dialogue": self.dialogue,
                "utterance": u,
                "predicted": p,
                "label": y,
                **{f"p_{n}": float(v) for n, v in zip(self.label_names, probs)},
            }
            for u, p, y, probs in zip(
                self.utterances, self.labels, self.true_labels, self.probabilities
            )
        ]


class Predictor:
    """A trained model with what it needs to read new data as its training data was read."""

    def __init__(self, model: CMATH, config: RunConfig, stats: Stats | None, features: dict):
        self.model, self.config, self.stats, self.features = model.eval(), config, stats, features
        self.label_names = list(model.spec.label_names)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        r = checkpoint.restore(path)
        return cls(r.model, r.config, r.stats, r.features)

    def read(self, path: str | None = None) -> ConversationDataset:
        """New data of the checkpoint's kind, from ``path`` (default: its own data), read
        as the training data were (features made with its extraction settings, its label
        order) and split, not standardised (:meth:`predict` does that)."""
        restored = checkpoint.Restored(self.model, self.config, self.stats, self.features)
        return restored.reader(path, standardize=False)()

    def check(self, dialogues: Sequence[Dialogue]) -> None:
        """Fail, naming the dialogue, unless every dialogue has the checkpoint's modalities
        and widths."""
        if not dialogues:
            raise DataError("conversation: no dialogue to predict")
        expected = self.model.spec.input_dims
        for d in dialogues:
            widths = {m: int(x.shape[1]) for m, x in d.features.items()}
            if widths != expected:
                raise DataError(
                    f"dialogue {d.id!r}: modalities and widths {widths} do not match the checkpoint's {expected}"
                )

    def standardize(self, dialogues: Sequence[Dialogue]) -> list[Dialogue]:
        """The dialogues shifted and scaled by the training split's statistics."""
        return [d if self.stats is None else standardize(d, self.stats) for d in dialogues]

    def probabilities(
        self, dialogues: Sequence[Dialogue], batch_size: int = 16
    ) -> dict[str, np.ndarray]:
        """Class probabilities (t, classes) per dialogue id of already standardised dialogues."""
        logits = predict_logits(self.model, dialogues, batch_size, torch.device("cpu"))
        return {k: torch.from_numpy(v).softmax(-1).numpy() for k, v in logits.items()}

    def predict(
        self,
        conversation: Dialogue | ConversationDataset | Sequence[Dialogue],
        *,
        batch_size: int = 16,
    ) -> DialoguePrediction | list[DialoguePrediction]:
        """Predictions for one dialogue (a :class:`DialoguePrediction`) or for every dialogue
        of a dataset or list (a list, in order)."""
        single, ids = isinstance(conversation, Dialogue), {}
        if isinstance(conversation, ConversationDataset):
            dialogues, ids = (
                list(conversation.dialogues.values()),
                conversation.info.get("utterance_ids", {}),
            )
        else:
            dialogues = [conversation] if single else list(conversation)
        self.check(dialogues)
        probs = self.probabilities(self.standardize(dialogues), batch_size)
        out = [self._result(d, probs[d.id], ids.get(d.id, range(len(d)))) for d in dialogues]
        return out[0] if single else out

    def stream(self) -> StreamSession:
        """A session that predicts a dialogue utterance by utterance (causal models)."""
        return StreamSession(self)

    def _result(self, d: Dialogue, probs: np.ndarray, ids) -> DialoguePrediction:
        names = self.label_names
        return DialoguePrediction(
            dialogue=d.id,
            utterances=[str(u) for u in ids],
            labels=[names[i] for i in probs.argmax(-1)],
            probabilities=probs,
            label_names=names,
            true_labels=[
                None if y == IGNORE_INDEX else names[y] for y in np.asarray(d.labels).tolist()
            ],
        )


def write_predictions(results: list[DialoguePrediction], out: Path) -> None:
    """``predictions.csv`` (one row per utterance) and ``predictions.json`` (per dialogue)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for r in results for row in r.rows()]
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dialogues = [
        {
            "dialogue": r.dialogue,
            "utterances": [{k: v for k, v in row.items() if k != "dialogue"} for row in r.rows()],
        }
        for r in results
    ]
    (out / "predictions.json").write_text(
        json.dumps({"label_names": results[0].label_names, "dialogues": dialogues}, indent=2)
    )


def score_predictions(results: list[DialoguePrediction]) -> ClassificationReport | None:
    """The classification report over the labelled utterances, or None if there are none."""
    names = results[0].label_names
    y = np.array(
        [IGNORE_INDEX if t is None else names.index(t) for r in results for t in r.true_labels]
    )
    if (y == IGNORE_INDEX).all():
        return None
    p = np.concatenate([r.probabilities.argmax(-1) for r in results])
    return classification_report(p, y, names)


@dataclass(frozen=True)
class UtterancePrediction:
    """The prediction for one pushed utterance, from it and the utterances before it."""

    position: int  # 0 for the dialogue's first utterance
    label: str
    probabilities: np.ndarray  # (classes,)
    label_names: list[str]


class StreamSession:
    """One dialogue as it unfolds: :meth:`push` each utterance, get its prediction.

    Only a causal model (``model.causal = true``) can do this: its prediction for an
    utterance never changes when later ones arrive. The keys and values of every attention
    layer are cached, so a push costs time linear in the dialogue so far.
    """

    def __init__(self, predictor: Predictor):
        model = predictor.model
        if not model.config.causal:
            raise DataError(
                "stream: needs a causal model (train with --set model.causal=true); a "
                "bidirectional model's predictions depend on utterances not yet spoken"
            )
        self.predictor, self.cache = predictor, StreamCache()
        self.speakers: dict[str, int] = {}

    def push(
        self, features: Mapping[str, np.ndarray | None], speaker: str | int
    ) -> UtterancePrediction:
        """Predict the next utterance from ``features`` (modality -> (d_m,) raw vector; a
        modality that is missing or None is absent for this utterance) and its ``speaker``
        (an id, or a name numbered by order of first appearance)."""
        model, spec = self.predictor.model, self.predictor.model.spec
        unknown = sorted(set(features) - set(spec.input_dims))
        if unknown:
            raise DataError(
                f"features: unknown modalities {unknown}; the model has {sorted(spec.input_dims)}"
            )
        speaker_id = (
            self.speakers.setdefault(speaker, len(self.speakers))
            if isinstance(speaker, str)
            else speaker
        )
        if not 0 <= speaker_id < spec.num_speakers:
            raise DataError(
                f"speaker: id {speaker_id} outside the model's {spec.num_speakers} speakers"
            )
        present = {m: features.get(m) is not None for m in spec.input_dims}
        if not any(present.values()):
            raise DataError("features: an utterance needs at least one modality")
        rows = {}
        for m, width in spec.input_dims.items():
            x = (
                np.zeros(width, np.float32)
                if not present[m]
                else np.asarray(features[m], np.float32)
            )
            if x.shape != (width,):
                raise DataError(f"features[{m!r}]: expected shape ({width},), got {x.shape}")
            rows[m] = x[None]
        d = Dialogue(
            id="stream",
            features=rows,
            speakers=np.array([speaker_id]),
            labels=np.array([IGNORE_INDEX]),
            presence={m: np.array([p]) for m, p in present.items()},
        )
        batch = DialogueBatch.collate(self.predictor.standardize([d]))
        position = self.cache.position
        with torch.no_grad():
            logits = model.encode(
                batch.features,
                mask=batch.mask,
                speakers=batch.speakers,
                presence=batch.presence,
                cache=self.cache,
            ).logits
        probs = logits[0, 0].float().softmax(-1).numpy()
        names = self.predictor.label_names
        return UtterancePrediction(position, names[int(probs.argmax())], probs, names)
