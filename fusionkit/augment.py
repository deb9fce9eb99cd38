"""Augmentations a training loop applies to a batch before the model sees it."""

from __future__ import annotations

import torch
from torch import Tensor

from fusionkit.batch import DialogueBatch


def modality_dropout(batch: DialogueBatch, p: float) -> dict[str, Tensor]:
    """Presence masks (modality -> bool (b, t)) with modalities hidden: each modality of
    each whole dialogue, then of each utterance, with probability ``p``. An utterance that
    would lose every modality keeps its dialogue-level draw only, or else what it has, so
    no real utterance is left without input. Pass the result as the model's ``presence``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a value in [0, 1), got {p}")
    mask = batch.mask
    have = {m: batch.present(m) for m in batch.modalities}
    dialogue = {m: have[m] & (torch.rand(mask.shape[0], 1, device=mask.device) >= p) for m in have}
    utterance = {m: dialogue[m] & (torch.rand(mask.shape, device=mask.device) >= p) for m in have}

    def left(kept: dict[str, Tensor]) -> Tensor:  # (b, t): some modality remains
        return torch.stack(list(kept.values())).any(0)

    fallback = {m: torch.where(left(dialogue), dialogue[m], have[m]) for m in have}
    return {m: torch.where(left(utterance), utterance[m], fallback[m]) for m in have}
