"""Your own conversations: a manifest (a conversation table of one row per utterance, with
text and media files) to a :class:`ConversationDataset` with features.

The manifest is read by :func:`~fusionkit.data.tables.read_conversation_table` (columns:
:class:`~fusionkit.data.tables.TableColumns`); each modality's features come from its
settings class in :data:`FEATURE_KINDS` (text: :mod:`fusionkit.data.text`, frozen or
fine-tuned; audio: :mod:`fusionkit.data.audio`, openSMILE). See docs/own-conversations.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fusionkit.data.audio import AudioFeatures, OnError
from fusionkit.data.dataset import SPLITS, ConversationDataset
from fusionkit.data.finite import OnNonFinite
from fusionkit.data.tables import TableColumns, read_conversation_table
from fusionkit.data.text import TextFeatures
from fusionkit.data.visual import VisualFeatures
from fusionkit.errors import TableError

FEATURE_KINDS: dict[str, type] = {
    "text": TextFeatures,
    "audio": AudioFeatures,
    "visual": VisualFeatures,
}
"""Modality -> its feature-settings class: ``extract(table, ...)`` makes the
features, ``from_record(settings)`` rebuilds the settings a dataset's extraction records."""


def manifest_dataset(
    path: str | Path,
    *,
    features: Mapping[str, object] | None = None,
    columns: TableColumns = TableColumns(),  # noqa: B008 (frozen dataclasses)
    label_names: list[str] | None = None,
    split: str | None = None,
    cache_dir: str | Path | None = None,
    on_error: OnError = "raise",
    on_nonfinite: OnNonFinite = "raise",
    progress: bool = True,
) -> ConversationDataset:
    """The conversations of the manifest at ``path`` (``.csv`` or ``.jsonl``) with features.

    Args:
        path: the manifest; media paths in it are relative to its folder.
        features: modality -> how to make its features (:data:`FEATURE_KINDS`' classes);
            None: default settings for every kind. Only the modalities the manifest has
            columns for are made (the dataset's ``modalities`` say which); a modality the
            manifest has and ``features`` leaves out is not used.
        columns: its column names.
        label_names: the labels in model order; None: the labels found, sorted. A manifest
            without a label column (for prediction) gives ``IGNORE_INDEX`` labels.
        split: the split of every row, for a manifest without a split column.
        cache_dir: where features (and a fine-tuned encoder) are cached; default
            ``.fusionkit-cache`` next to the manifest.
        on_error: ``"raise"``: unusable media is an error naming the row and the file;
            ``"absent"``: that utterance's modality is absent, counted in ``info["absent"]``.
        on_nonfinite: NaN or infinity in an utterance's extracted features: an error naming
            the file and row (``"raise"``), or that modality absent there, counted.
        progress: show progress bars.

    The dataset is named after the manifest's file name; its ``info`` holds ``extraction``
    (per modality, the settings: :func:`extraction_settings` turns them back into
    ``features`` that make new conversations' features the same way), ``absent``,
    ``errors``, and per dialogue ``utterance_ids`` and ``speaker_names``.
    """
    path = Path(path)
    table = read_conversation_table(path, label_names=label_names, columns=columns, split=split)
    for d in table.dialogues:
        if d.split not in SPLITS:
            raise TableError(
                f"{path}: row {d.rows[0]}: split {d.split!r} of dialogue {d.id} is not one of {list(SPLITS)}"
            )
    if features is None:
        features = {m: FEATURE_KINDS[m]() for m in FEATURE_KINDS}
    asked, features = (
        sorted(features),
        {m: how for m, how in features.items() if m in table.modalities},
    )
    if not features:
        raise TableError(
            f"{path}: no modality to extract: the manifest has {list(table.modalities)} "
            f"(columns {dict(columns.modalities)}), features were asked for {asked}"
        )
    cache_dir = path.parent / ".fusionkit-cache" if cache_dir is None else Path(cache_dir)
    made = {
        m: how.extract(
            table, name=path.stem, cache_dir=cache_dir, on_error=on_error, progress=progress
        )
        for m, how in sorted(features.items())
    }
    how = "; ".join(f.settings["description"] for f in made.values())
    return table.to_dataset(
        path.stem, made, source=f"{table.source}; {how}", on_nonfinite=on_nonfinite
    )


def extraction_settings(extraction: Mapping[str, dict]) -> dict[str, object]:
    """The ``features=`` of :func:`manifest_dataset` that make features the way
    ``extraction`` (a dataset's ``info["extraction"]``) records: new conversations then get
    the features a model was trained on (a fine-tuned encoder is loaded from the folder it
    was saved to, not trained again)."""
    unknown = sorted(set(extraction) - set(FEATURE_KINDS))
    if unknown:
        raise TableError(f"extraction: no feature kind for modalities {unknown}")
    return {m: FEATURE_KINDS[m].from_record(record) for m, record in extraction.items()}
