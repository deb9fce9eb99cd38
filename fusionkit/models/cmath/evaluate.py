"""Scoring: predictions of a model over dialogues, split reports, and the linear probe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fusionkit import Dialogue, batches, classification_report
from fusionkit.data import ConversationDataset
from fusionkit.metrics import ClassificationReport
from fusionkit.models.cmath.model import CMATH


@torch.no_grad()
def predict_logits(
    model: CMATH, dialogues: Sequence[Dialogue], batch_size: int, device: torch.device
) -> dict[str, np.ndarray]:
    """Coarse logits (t, classes) per dialogue id, in eval mode."""
    model.eval()
    out = {}
    for batch in batches(dialogues, batch_size):
        logits = model(batch.to(device)).logits.float().cpu().numpy()
        for i, did in enumerate(batch.ids):
            out[did] = logits[i, : int(batch.mask[i].sum())]
    return out


def evaluate(
    model: CMATH,
    ds: ConversationDataset,
    split: str,
    batch_size: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
    gather=None,
) -> ClassificationReport:
    """Report on ``split``. Under DDP (``shard=(rank, size)``) each process predicts its
    share and ``gather`` collects every share, so the figures equal a single process's."""
    dialogues = ds.split(split)
    rank, size = shard
    logits = predict_logits(model, dialogues[rank::size], batch_size, device)
    if gather is not None:
        logits = {k: v for part in gather(logits) for k, v in part.items()}
    p = np.concatenate([logits[d.id].argmax(-1) for d in dialogues])
    y = np.concatenate([np.asarray(d.labels) for d in dialogues])
    return classification_report(p, y, ds.label_names)


def linear_probe(ds: ConversationDataset) -> dict:
    """Per-utterance logistic regression on the concatenated features (no dialogue context),
    its inverse regularisation C chosen on dev among 0.01, 0.1, 1, 10."""
    from sklearn.linear_model import LogisticRegression

    (x, y), (xd, yd), (xt, yt) = (ds.utterances(s) for s in ("train", "dev", "test"))
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        dev = classification_report(clf.predict(xd), yd, ds.label_names)
        if best is None or dev.weighted_f1 > best[0].weighted_f1:
            best = (dev, clf, c)
    test = classification_report(best[1].predict(xt), yt, ds.label_names)
    return {"C": best[2], "dev_weighted_f1": best[0].weighted_f1, **test.to_dict()}
