"""Classification metrics of the field, computed by scikit-learn on real utterances only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from fusionkit.batch import IGNORE_INDEX


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracy and weighted F1 in percent, per-class F1 (percent) and the confusion matrix."""

    accuracy: float
    weighted_f1: float
    per_class_f1: dict[str, float]
    confusion: list[list[int]]
    support: int

    def to_dict(self) -> dict:
        return asdict(self)


def classification_report(
    predictions: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> ClassificationReport:
    """Score flat ``predictions`` against ``labels``; entries labelled -100 are dropped.

    Weighted F1 is sklearn's ``f1_score(average="weighted")``, the field's figure.
    """
    predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions {predictions.shape} and labels {labels.shape} differ in shape"
        )
    keep = labels != IGNORE_INDEX
    y, p = labels[keep], predictions[keep]
    if y.size == 0:
        raise ValueError("labels: no labelled utterance to score")
    classes = list(range(len(class_names)))
    per_class = f1_score(y, p, labels=classes, average=None, zero_division=0)
    return ClassificationReport(
        accuracy=100.0 * accuracy_score(y, p),
        weighted_f1=100.0 * f1_score(y, p, labels=classes, average="weighted", zero_division=0),
        per_class_f1={n: 100.0 * float(f) for n, f in zip(class_names, per_class)},
        confusion=confusion_matrix(y, p, labels=classes).tolist(),
        support=int(y.size),
    )
