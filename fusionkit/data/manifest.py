"""Your own conversations: a manifest (a conversation table of one row per utterance, with
text and/or audio files) to a :class:`ConversationDataset` with text and audio features.

The manifest is read by :func:`~fusionkit.data.tables.read_conversation_table` (columns:
:class:`~fusionkit.data.tables.TableColumns`); text features come from
:mod:`fusionkit.data.text` (frozen or fine-tuned), audio features from
:mod:`fusionkit.data.audio` (openSMILE). See docs/own-conversations.md.
"""

from __future__ import annotations

from pathlib import Path

from fusionkit.data.audio import AudioFeatures, OnError, audio_features
from fusionkit.data.dataset import SPLITS, ConversationDataset
from fusionkit.data.tables import TableColumns, TableError, read_conversation_table
from fusionkit.data.text import TextFeatures, text_features


def manifest_dataset(
    path: str | Path,
    *,
    columns: TableColumns = TableColumns(),  # noqa: B008 (frozen dataclasses)
    label_names: list[str] | None = None,
    split: str | None = None,
    text: TextFeatures | None = TextFeatures(),  # noqa: B008
    audio: AudioFeatures | None = AudioFeatures(),  # noqa: B008
    cache_dir: str | Path | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
) -> ConversationDataset:
    """The conversations of the manifest at ``path`` (``.csv`` or ``.jsonl``) with features.

    Args:
        path: the manifest; audio paths in it are relative to its folder.
        columns: its column names.
        label_names: the labels in model order; None: the labels found, sorted. A manifest
            without a label column (for prediction) gives ``IGNORE_INDEX`` labels.
        split: the split of every row, for a manifest without a split column.
        text: how to make text features (frozen or fine-tuned encoder); None: no text.
        audio: which openSMILE feature set; None: no audio.
        cache_dir: where features (and a fine-tuned encoder) are cached; default
            ``.fusionkit-cache`` next to the manifest.
        on_error: ``"raise"``: unusable audio is an error naming the row and the file;
            ``"absent"``: that utterance's audio is absent, counted in ``info["absent"]``.
        progress: show progress bars.

    The modalities are those the manifest has columns for (text, audio) and that are not
    switched off. The dataset is named after the manifest's file name; its ``info`` holds
    ``extraction`` (per modality, the settings: :func:`extraction_settings` turns them back
    into arguments to make new conversations' features the same way), ``absent``,
    ``errors``, and per dialogue ``utterance_ids`` and ``speaker_names``.
    """
    path = Path(path)
    table = read_conversation_table(path, label_names=label_names, columns=columns, split=split)
    for d in table.dialogues:
        if d.split not in SPLITS:
            raise TableError(
                f"{path}: row {d.rows[0]}: split {d.split!r} of dialogue {d.id} is not one of {list(SPLITS)}"
            )
    cache_dir = path.parent / ".fusionkit-cache" if cache_dir is None else Path(cache_dir)
    name = path.stem
    features = {}
    if text is not None and "text" in table.modalities:
        features["text"] = text_features(
            table,
            name=name,
            encoder=text.encoder,
            finetune=text.finetune,
            batch_size=text.batch_size,
            max_length=text.max_length,
            cache_dir=cache_dir,
            progress=progress,
        )
    if audio is not None and "audio" in table.modalities:
        features["audio"] = audio_features(
            table,
            name=name,
            features=audio,
            cache_dir=cache_dir,
            on_error=on_error,
            progress=progress,
        )
    if not features:
        raise ValueError(
            f"{path}: no modality left: the manifest has {list(table.modalities)}, "
            f"text={text!r}, audio={audio!r}"
        )
    how = "; ".join(f.settings["description"] for f in features.values())
    return table.to_dataset(name, features, source=f"{table.source}; {how}")


def extraction_settings(extraction: dict) -> dict:
    """``text=`` and ``audio=`` arguments of :func:`manifest_dataset` that make features the
    way ``extraction`` (a dataset's ``info["extraction"]``) records: new conversations
    then get the features a model was trained on (a fine-tuned encoder is loaded from the
    folder it was saved to, not trained again)."""
    settings: dict = {"text": None, "audio": None}
    if "text" in extraction:
        t = extraction["text"]
        encoder = t["encoder"]
        if t.get("finetune") is not None:
            encoder = t.get("finetuned_encoder")
            if encoder is None or not Path(encoder).is_dir():
                raise FileNotFoundError(
                    f"extraction['text']['finetuned_encoder']: the fine-tuned encoder {encoder!r} "
                    "is not on disk (it is saved in the cache folder when there is one)"
                )
        settings["text"] = TextFeatures(encoder=encoder, max_length=t["max_length"])
    if "audio" in extraction:
        settings["audio"] = AudioFeatures(feature_set=extraction["audio"]["feature_set"])
    return settings
