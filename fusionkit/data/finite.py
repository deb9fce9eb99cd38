"""Non-finite features (NaN, infinity) at utterances that have the modality: refused, or
made absent.

Every reader (feature pickles, fusionkit's npz, conversation tables and manifests, MELD's
CSVs) and every entry point that takes features passes its dialogues through
:func:`refuse_nonfinite`: one NaN in one utterance would spread through attention to its
whole dialogue and, in training, to the weights. Values at absent utterances carry no
meaning (conventions.md, "Presence of a modality") and are never looked at.

An utterance whose every modality ends absent is kept, as a table row that has none is: it
still takes part in its dialogue through its speaker and position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.errors import ConfigError, DataError, NonFiniteError

OnNonFinite = Literal["raise", "absent"]
REASON = "non-finite values"
"""The key under which readers count utterances made absent here, in ``info["absent"][m]``."""


def nonfinite_rows(dialogue: Dialogue, modality: str, *, where: str = "") -> np.ndarray:
    """Bool (t,): the utterances that have ``modality`` and a NaN or infinity in its features
    (a :class:`~fusionkit.errors.DataError` for features that are not numbers)."""
    x = np.asarray(dialogue.features[modality])
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{where or '<features>'}: dialogue {dialogue.id!r}: {modality} features must be "
            f"numbers, got dtype {x.dtype}"
        )
    if x.dtype.kind != "f":
        return np.zeros(len(x), dtype=bool)
    return ~np.isfinite(x).all(axis=1) & dialogue.present(modality)


def refuse_nonfinite(
    dialogues: Iterable[Dialogue],
    *,
    where: str,
    on_nonfinite: OnNonFinite = "raise",
    utterance_names: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[Dialogue], dict[str, int]]:
    """``dialogues`` checked for NaN and infinity in the features of present utterances.

    Args:
        dialogues: the dialogues, in order.
        where: what they were read from (the file): the error starts with it.
        on_nonfinite: ``"raise"``: a :class:`~fusionkit.errors.NonFiniteError` naming
            ``where``, the first such utterance's dialogue, position (and name) and
            modality, and how many there are in all; ``"absent"``: those utterances lack
            that modality (their features are left as they are).
        utterance_names: dialogue id -> a name per utterance (an utterance id, a table row),
            shown after its position in the error.

    Returns:
        The dialogues (the same objects where nothing changed) and, per modality, how many
        utterances were made absent (modalities with none are left out).
    """
    if on_nonfinite not in ("raise", "absent"):
        raise ConfigError(f"on_nonfinite: expected 'raise' or 'absent', got {on_nonfinite!r}")
    out: list[Dialogue] = []
    counts: dict[str, int] = {}
    first: tuple[Dialogue, int, str] | None = None
    dialogues_hit = 0
    for d in dialogues:
        bad = {m: nonfinite_rows(d, m, where=where) for m in sorted(d.features)}
        bad = {m: b for m, b in bad.items() if b.any()}
        if not bad:
            out.append(d)
            continue
        dialogues_hit += 1
        for m, b in bad.items():
            counts[m] = counts.get(m, 0) + int(b.sum())
        if first is None:
            t = min(int(np.argmax(b)) for b in bad.values())
            first = (d, t, next(m for m, b in bad.items() if b[t]))
        presence = dict(d.presence)
        for m, b in bad.items():
            presence[m] = d.present(m) & ~b
        out.append(replace(d, presence=presence))
    if first is not None and on_nonfinite == "raise":
        d, t, m = first
        names = (utterance_names or {}).get(d.id)
        name = f" ({names[t]})" if names is not None and t < len(names) else ""
        total = sum(counts.values())
        per = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        raise NonFiniteError(
            f"{where}: dialogue {d.id!r}, utterance {t}{name}: {m} features hold NaN or "
            f"infinity (or a number beyond float32's range); {total} such utterance features "
            f"in {dialogues_hit} dialogue(s) ({per}); on_nonfinite='absent' makes them absent "
            "instead"
        )
    return out, counts


def record_absent(info: Mapping, counts: Mapping[str, int]) -> dict:
    """``info`` with ``counts`` (modality -> utterances) added to ``info["absent"]`` under
    :data:`REASON` (a new dict; ``info`` is not changed)."""
    absent = {m: dict(v) for m, v in dict(info.get("absent", {})).items()}
    for m, n in counts.items():
        if n:
            absent.setdefault(m, {})[REASON] = absent.get(m, {}).get(REASON, 0) + int(n)
    return {**info, "absent": absent}


def finite_dataset(
    dataset: ConversationDataset,
    *,
    where: str,
    on_nonfinite: OnNonFinite | None = "raise",
    utterance_names: Mapping[str, Sequence[str]] | None = None,
) -> ConversationDataset:
    """``dataset`` through :func:`refuse_nonfinite`, the counts recorded in
    ``info["absent"]`` (what :meth:`ConversationDataset.summary` prints). ``on_nonfinite``
    None: ``dataset`` as it is, unchecked (a cache of raw features, checked when a dataset
    is made from them)."""
    if on_nonfinite is None:
        return dataset
    keys = list(dataset.dialogues)
    dialogues, counts = refuse_nonfinite(
        dataset.dialogues.values(),
        where=where,
        on_nonfinite=on_nonfinite,
        utterance_names=utterance_names,
    )
    if not counts:
        return dataset
    return replace(
        dataset,
        dialogues=dict(zip(keys, dialogues, strict=True)),
        info=record_absent(dataset.info, counts),
    )
