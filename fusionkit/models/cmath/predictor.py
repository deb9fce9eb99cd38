"""Emotions of new conversations from a trained CMATH checkpoint, offline or as they unfold,
with what each prediction leaned on.

    predictor = Predictor.from_checkpoint("runs/synthetic/seed0/best.pt")
    result = predictor.predict(dialogue)        # a Dialogue -> DialoguePrediction
    results = predictor.predict(dataset)        # a ConversationDataset -> list of them
    session = predictor.stream()                # causal models: one utterance at a time
    step = session.push(utterance)

Inputs are raw features, as the checkpoint's data reader gives them: the predictor
standardises them with the training split's statistics saved in the checkpoint, and refuses
NaN or infinity in a present utterance's features.

Every prediction comes with an explanation (docs/predict.md, "What a prediction leaned on"):
``reliance`` (t, centrals), each central modality's branch's share of the fused posterior's
precision, renormalised without the prior (whose share is ``prior_share``), for the
product-of-experts fusion (None for fusions without precisions); and ``if_absent``, the
label the model predicts with each modality marked absent through its presence masks (the
model's own absence path), with ``if_absent_drop``, the fall of the predicted class's
probability.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusionkit import (
    IGNORE_INDEX,
    Dialogue,
    DialogueBatch,
    StreamCache,
    batches,
    classification_report,
)
from fusionkit.data import ConversationDataset
from fusionkit.data.dataset import Stats, standardize
from fusionkit.data.finite import refuse_nonfinite
from fusionkit.errors import DataError, NonFiniteError
from fusionkit.metrics import ClassificationReport
from fusionkit.models.cmath import checkpoint
from fusionkit.models.cmath.config import RunConfig
from fusionkit.models.cmath.model import CMATH


@dataclass(frozen=True)
class Explained:
    """A batch's probabilities (b, t, classes), the fusion's ``shares`` (b, t, experts + 1)
    named by ``share_names`` (None without precisions), and per modality the probabilities
    with that modality marked absent."""

    probabilities: np.ndarray
    shares: np.ndarray | None
    share_names: tuple[str, ...] | None
    if_absent: dict[str, np.ndarray]

    def reliance(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(reliance (b, t, experts) summing to 1 over experts, the prior's share (b, t)),
        or None without precisions. NaN where no expert is present."""
        if self.shares is None:
            return None
        experts, prior = self.shares[..., :-1], self.shares[..., -1]
        left = (1.0 - prior)[..., None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(left > 1e-6, experts / left, np.nan), prior


@torch.no_grad()
def explain(
    model: CMATH, batch: DialogueBatch, caches: Mapping[str | None, StreamCache] | None = None
) -> Explained:
    """The model on ``batch`` (eval mode), and on ``batch`` with each modality marked absent
    at every utterance. Streaming, ``caches`` holds one cache per world: ``None`` the real
    dialogue's, and each modality's the dialogue without that modality, so a what-if step
    sees a past without it too, as the offline what-if does."""
    model.eval()
    presence = {m: batch.present(m) for m in model.modalities}
    caches = caches or {}

    def run(present: dict, world: str | None):
        out = model.encode(
            batch.features,
            mask=batch.mask,
            speakers=batch.speakers,
            presence=present,
            cache=caches.get(world),
        )
        return out, out.logits.float().softmax(-1).cpu().numpy()

    if_absent = {
        m: run({**presence, m: torch.zeros_like(presence[m])}, m)[1] for m in model.modalities
    }
    out, probs = run(presence, None)
    shares = None if out.shares is None else out.shares.float().cpu().numpy()
    return Explained(probs, shares, out.share_names, if_absent)


@dataclass(frozen=True)
class DialoguePrediction:
    """One dialogue's predictions: per utterance the label, every class probability, and
    what the prediction leaned on (see the module docstring)."""

    dialogue: str
    utterances: list[str]  # utterance ids (positions "0", "1", ... when the data have none)
    labels: list[str]  # predicted label names
    probabilities: np.ndarray  # (t, classes), rows sum to 1
    label_names: list[str]
    true_labels: list[str | None]  # the data's labels, None where unlabelled
    modalities: list[str]  # reliance's columns: the fusion's experts (central modalities)
    reliance: np.ndarray | None  # (t, modalities), rows sum to 1; None: no precisions
    prior_share: np.ndarray | None  # (t,)
    if_absent: dict[str, list[str]]  # modality -> the label predicted without it
    if_absent_drop: dict[str, np.ndarray]  # modality -> (t,) fall of the predicted p
    speakers: list[str] | None = None
    texts: list[str | None] | None = None

    def rows(self) -> list[dict]:
        """One dict per utterance: ids, speaker and text where known, predicted and true
        label, a probability per class, ``reliance_<m>`` and ``prior_share`` (empty where
        not defined), ``if_absent_<m>`` and ``drop_if_absent_<m>``."""
        out = []
        for i, (u, p, y, probs) in enumerate(
            zip(self.utterances, self.labels, self.true_labels, self.probabilities)
        ):
            row = {"dialogue": self.dialogue, "utterance": u}
            if self.speakers is not None:
                row["speaker"] = self.speakers[i]
            if self.texts is not None:
                row["text"] = self.texts[i]
            row.update(predicted=p, label=y)
            row.update({f"p_{n}": float(v) for n, v in zip(self.label_names, probs)})
            for j, m in enumerate(self.modalities):
                row[f"reliance_{m}"] = (
                    None if self.reliance is None else _number(self.reliance[i, j])
                )
            row["prior_share"] = None if self.prior_share is None else _number(self.prior_share[i])
            for m, labels in self.if_absent.items():
                row[f"if_absent_{m}"] = labels[i]
                row[f"drop_if_absent_{m}"] = float(self.if_absent_drop[m][i])
            out.append(row)
        return out


def _number(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


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
        and widths and finite features at its present utterances."""
        if not dialogues:
            raise DataError("conversation: no dialogue to predict")
        expected = self.model.spec.input_dims
        for d in dialogues:
            widths = {m: int(x.shape[1]) for m, x in d.features.items()}
            if widths != expected:
                raise DataError(
                    f"dialogue {d.id!r}: modalities and widths {widths} do not match the checkpoint's {expected}"
                )
        refuse_nonfinite(dialogues, where="conversation")

    def standardize(self, dialogues: Sequence[Dialogue]) -> list[Dialogue]:
        """The dialogues shifted and scaled by the training split's statistics."""
        return [d if self.stats is None else standardize(d, self.stats) for d in dialogues]

    def predict(
        self,
        conversation: Dialogue | ConversationDataset | Sequence[Dialogue],
        *,
        batch_size: int = 16,
    ) -> DialoguePrediction | list[DialoguePrediction]:
        """Predictions for one dialogue (a :class:`DialoguePrediction`) or for every dialogue
        of a dataset or list (a list, in order)."""
        single, info = isinstance(conversation, Dialogue), {}
        if isinstance(conversation, ConversationDataset):
            dialogues, info = list(conversation.dialogues.values()), conversation.info
        else:
            dialogues = [conversation] if single else list(conversation)
        self.check(dialogues)
        out = []
        for batch in batches(self.standardize(dialogues), batch_size):
            explained = explain(self.model, batch)
            for i in range(len(batch.ids)):
                out.append(self._result(dialogues[len(out)], explained, i, info))
        return out[0] if single else out

    def stream(self) -> StreamSession:
        """A session that predicts a dialogue utterance by utterance (causal models)."""
        return StreamSession(self)

    def _result(self, d: Dialogue, e: Explained, i: int, info: dict) -> DialoguePrediction:
        """Dialogue ``d``: row ``i`` of ``e``."""
        names, n = self.label_names, len(d)
        probs = e.probabilities[i, :n]
        predicted = probs.argmax(-1)
        rows = np.arange(n)
        relied = e.reliance()
        speaker_names = info.get("speaker_names", {}).get(d.id)
        texts = info.get("texts", {}).get(d.id, d.extras.get("sentences"))
        return DialoguePrediction(
            dialogue=d.id,
            utterances=[str(u) for u in info.get("utterance_ids", {}).get(d.id, range(n))],
            labels=[names[k] for k in predicted],
            probabilities=probs,
            label_names=names,
            true_labels=[
                None if y == IGNORE_INDEX else names[y] for y in np.asarray(d.labels).tolist()
            ],
            modalities=[] if e.share_names is None else list(e.share_names[:-1]),
            reliance=None if relied is None else relied[0][i, :n],
            prior_share=None if relied is None else relied[1][i, :n],
            if_absent={m: [names[k] for k in p[i, :n].argmax(-1)] for m, p in e.if_absent.items()},
            if_absent_drop={
                m: probs[rows, predicted] - p[i, :n][rows, predicted]
                for m, p in e.if_absent.items()
            },
            speakers=None if speaker_names is None else [speaker_names[s] for s in d.speakers],
            texts=None if texts is None else list(texts),
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
    """The prediction for one pushed utterance, from it and the utterances before it, with
    what it leaned on (as :class:`DialoguePrediction`'s fields, for one utterance)."""

    position: int  # 0 for the dialogue's first utterance
    label: str
    probabilities: np.ndarray  # (classes,)
    label_names: list[str]
    modalities: list[str]
    reliance: np.ndarray | None  # (modalities,)
    prior_share: float | None
    if_absent: dict[str, str]
    if_absent_drop: dict[str, float]


class StreamSession:
    """One dialogue as it unfolds: :meth:`push` each utterance, get its prediction.

    Only a causal model (``model.causal = true``) can do this: its prediction for an
    utterance never changes when later ones arrive. The keys and values of every attention
    layer are cached, so a push costs time linear in the dialogue so far; the what-if
    predictions keep a cache each (a push runs the model once per modality, plus once).
    """

    def __init__(self, predictor: Predictor):
        model = predictor.model
        if not model.config.causal:
            raise DataError(
                "stream: needs a causal model (train with --set model.causal=true); a "
                "bidirectional model's predictions depend on utterances not yet spoken"
            )
        self.predictor = predictor
        # the dialogue's cache, and one per modality for the dialogue without it
        self.caches = {None: StreamCache(), **{m: StreamCache() for m in model.modalities}}
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
        position = self.caches[None].position
        rows = {}
        for m, width in spec.input_dims.items():
            x = np.asarray(features[m], np.float32) if present[m] else np.zeros(width, np.float32)
            if x.shape != (width,):
                raise DataError(f"features[{m!r}]: expected shape ({width},), got {x.shape}")
            if not np.isfinite(x).all():
                raise NonFiniteError(
                    f"features[{m!r}]: utterance {position} holds NaN or infinity; pass None "
                    "for a modality the utterance lacks"
                )
            rows[m] = x[None]
        d = Dialogue(
            id="stream",
            features=rows,
            speakers=np.array([speaker_id]),
            labels=np.array([IGNORE_INDEX]),
            presence={m: np.array([p]) for m, p in present.items()},
        )
        batch = DialogueBatch.collate(self.predictor.standardize([d]))
        e = explain(model, batch, self.caches)
        probs, names = e.probabilities[0, 0], self.predictor.label_names
        k = int(probs.argmax())
        relied = e.reliance()
        return UtterancePrediction(
            position=position,
            label=names[k],
            probabilities=probs,
            label_names=names,
            modalities=[] if e.share_names is None else list(e.share_names[:-1]),
            reliance=None if relied is None else relied[0][0, 0],
            prior_share=None if relied is None else float(relied[1][0, 0]),
            if_absent={m: names[int(p[0, 0].argmax())] for m, p in e.if_absent.items()},
            if_absent_drop={m: float(probs[k] - p[0, 0, k]) for m, p in e.if_absent.items()},
        )
