"""Fine-tuning a sentence encoder on a table's labelled training utterances.

The field's text features are made this way (COSMIC fine-tunes RoBERTa on the utterance
emotion labels of the training split, then encodes every split with it). Here: the
SentenceTransformer (an ``nn.Module``) with a linear head on its sentence embedding,
cross-entropy (optionally class-weighted), AdamW, plain PyTorch; early stopping on the dev
split's weighted F1. Seeded; on CPU the same settings (and number of threads) give the
same weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from fusionkit.batch import IGNORE_INDEX
from fusionkit.data.tables import ConversationTable
from fusionkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class FineTune:
    """Fine-tuning settings.

    ``epochs`` at most; ``lr`` for the encoder, ``head_lr`` for the linear head; AdamW with
    ``weight_decay``; ``batch_size`` utterances a step, each cut to ``max_length`` tokens
    (also when encoding afterwards); ``class_weights``: inverse class frequencies of the
    training utterances in the loss; stop after ``patience`` epochs without a better dev
    weighted F1 (ties: a lower dev loss) and keep the best epoch's weights; ``seed`` for the
    head, dropout and order.
    """

    epochs: int = 4
    lr: float = 2e-5
    head_lr: float = 1e-3
    batch_size: int = 32
    max_length: int = 64
    weight_decay: float = 0.01
    class_weights: bool = False
    patience: int = 1
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_length", "patience"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ConfigError(
                    f"FineTune.{name}: expected an integer >= 1, got {getattr(self, name)!r}"
                )
        for name in ("lr", "head_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"FineTune.{name}: expected > 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _labelled(table: ConversationTable, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels of the utterances of ``split`` that have both."""
    pairs = [
        (t, y)
        for d in table.dialogues
        if d.split == split
        for t, y in zip(d.cells["text"], d.labels)
        if t is not None and y != IGNORE_INDEX
    ]
    return [t for t, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64)


def _method(model, name: str, before_6: str):
    """``model.name``; ``model.before_6`` on sentence-transformers < 6, which named it so."""
    return getattr(model, name, None) or getattr(model, before_6)


def _logits(model, head: nn.Linear, texts: list[str]) -> torch.Tensor:
    tokenize = _method(model, "preprocess", "tokenize")
    batch = {
        k: v.to(model.device) if isinstance(v, torch.Tensor) else v
        for k, v in tokenize(texts).items()
    }
    return head(model(batch)["sentence_embedding"])


def finetune_encoder(
    model, table: ConversationTable, settings: FineTune, *, progress: bool = True
) -> dict:
    """Fine-tune ``model`` (a SentenceTransformer, in place) on the labelled ``train``
    utterances of ``table``, with early stopping on its ``dev`` ones when it has any (else
    all ``settings.epochs``). Leaves ``model`` in eval mode, cut to ``settings.max_length``
    tokens. Returns a report: per-epoch history (train loss, dev weighted F1 and loss,
    seconds), the epoch kept and how it was chosen."""
    from tqdm.auto import tqdm  # the text extra's

    x_train, y_train = _labelled(table, "train")
    x_dev, y_dev = _labelled(table, "dev")
    if not len(y_train):
        raise DataError(
            f"finetune: {table.source} has no labelled utterance with text in split 'train'"
        )
    num_classes = len(table.label_names)
    weight = None
    if settings.class_weights:  # inverse class frequency, as ConversationDataset.class_weights
        counts = np.bincount(y_train, minlength=num_classes).astype(np.float64)
        weight = torch.tensor(
            np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0), dtype=torch.float32
        )
    model.max_seq_length = settings.max_length
    history, best, best_state, best_epoch, waited = [], (-1.0, 0.0), None, 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = nn.Linear(
            _method(model, "get_embedding_dimension", "get_sentence_embedding_dimension")(),
            num_classes,
        ).to(model.device)
        loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else weight.to(model.device))
        optimizer = torch.optim.AdamW(
            [
                {"params": model.parameters(), "lr": settings.lr},
                {"params": head.parameters(), "lr": settings.head_lr},
            ],
            weight_decay=settings.weight_decay,
        )
        order_rng = np.random.default_rng(settings.seed)
        bar = tqdm(
            total=settings.epochs * math.ceil(len(y_train) / settings.batch_size),
            desc="fine-tuning",
            disable=not progress,
        )
        for epoch in range(1, settings.epochs + 1):
            started = time.perf_counter()
            model.train()
            head.train()
            order, losses = order_rng.permutation(len(y_train)), []
            for lo in range(0, len(order), settings.batch_size):
                idx = order[lo : lo + settings.batch_size]
                logits = _logits(model, head, [x_train[i] for i in idx])
                loss = loss_fn(logits, torch.from_numpy(y_train[idx]).to(model.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item() * len(idx))
                bar.update()
            entry = {"epoch": epoch, "train_loss": sum(losses) / len(y_train)}
            if len(y_dev):
                model.eval()
                head.eval()
                with torch.no_grad():
                    logits = torch.cat(
                        [
                            _logits(model, head, x_dev[lo : lo + settings.batch_size])
                            for lo in range(0, len(y_dev), settings.batch_size)
                        ]
                    )
                    dev_loss = loss_fn(logits, torch.from_numpy(y_dev).to(model.device))
                entry["dev_loss"] = float(dev_loss)
                entry["dev_weighted_f1"] = float(
                    f1_score(
                        y_dev, logits.argmax(1).cpu().numpy(), average="weighted", zero_division=0
                    )
                )
            entry["seconds"] = time.perf_counter() - started
            history.append(entry)
            bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k != "epoch"})
            if not len(y_dev):
                continue
            score = (entry["dev_weighted_f1"], -entry["dev_loss"])  # ties: the lower loss
            if score > best:
                best, best_epoch, waited = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= settings.patience:
                    break
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "history": history,
        "kept_epoch": best_epoch or len(history),
        "chosen_by": "dev weighted F1" if len(y_dev) else "last epoch (no labelled dev utterance)",
        "train_utterances": len(y_train),
        "dev_utterances": len(y_dev),
    }
