"""Conversation tables: one row per utterance (CSV or JSON Lines), and MELD's CSVs as a preset.

A table has a dialogue id, an utterance index and a speaker per row, then a text and/or an
audio file (the modalities), optionally a label and a split (or the caller gives the split).
Within a file each dialogue's rows are contiguous and its utterance indices strictly increase
(gaps are allowed: MELD has some). Every problem is an error that names the file, the row
(1-based, header excluded) and what is wrong.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fusionkit.batch import IGNORE_INDEX, Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.finite import OnNonFinite, finite_dataset
from fusionkit.data.pickles import MELD_LABELS, MELD_SENTIMENTS
from fusionkit.errors import ConfigError, MissingFileError, TableError

CELL_KINDS = {"text": "text", "audio": "media", "visual": "media"}
"""How each modality's table cells are read: ``text`` (the utterance's words) or ``media``
(a file path relative to the table, with the ``start``/``end`` columns). Adding a modality
to tables is one entry here, and a feature-settings class with ``extract`` for it
(:func:`fusionkit.data.manifest.manifest_dataset`)."""


@dataclass(frozen=True)
class TableColumns:
    """Column names of a conversation table.

    ``dialogue``, ``utterance`` and ``speaker`` are required. ``modalities`` maps each
    modality (a key of :data:`CELL_KINDS`) to its column; the modalities of a file are
    those whose column it has (at least one). The ``video`` column gives the ``visual``
    modality; a file with it and no ``audio`` column takes each utterance's audio from its
    video. The others are read when
    the file has them: ``start`` and ``end`` (seconds into a media file), ``label``
    (without it every label is ``IGNORE_INDEX``), ``flag`` formatted with a modality
    (``has_text``, ``has_audio``, ...: yes/no flags marking that modality absent),
    ``split`` (``None``: the caller gives the split). A column named ``None`` is never read.
    """

    dialogue: str = "dialogue_id"
    utterance: str = "utterance_id"
    speaker: str = "speaker"
    modalities: Mapping[str, str] = field(
        default_factory=lambda: {"text": "text", "audio": "audio", "visual": "video"}
    )
    start: str | None = "start"
    end: str | None = "end"
    label: str | None = "label"
    split: str | None = "split"
    flag: str | None = "has_{modality}"

    def __post_init__(self):
        unknown = sorted(set(self.modalities) - set(CELL_KINDS))
        if unknown:
            raise ConfigError(
                f"TableColumns.modalities: {unknown} have no cell kind; known: {sorted(CELL_KINDS)}"
            )

    def flag_of(self, modality: str) -> str | None:
        """The presence-flag column of ``modality`` (None: not configured)."""
        return None if self.flag is None else self.flag.format(modality=modality)


MELD_COLUMNS = TableColumns(
    dialogue="Dialogue_ID",
    utterance="Utterance_ID",
    speaker="Speaker",
    modalities={"text": "Utterance"},
    label="Emotion",
    split=None,
    # MELD's StartTime/EndTime are times in its episodes, not in a clip: never read
    start=None,
    end=None,
    flag=None,
)
MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


class Segment(NamedTuple):
    """An utterance's media: ``path`` (absolute), ``start``/``end`` seconds into it (None:
    the file's start/end)."""

    path: Path
    start: float | None = None
    end: float | None = None


@dataclass
class TableDialogue:
    """One dialogue of a table: ``speakers`` are ids into ``speaker_names`` (order of first
    appearance); ``cells`` modality -> one value per utterance (text: a string, media: a
    :class:`Segment`), None where the utterance lacks that modality; ``rows`` are the
    utterances' rows in ``file``."""

    id: str
    split: str
    file: Path = Path()
    rows: list[int] = field(default_factory=list)
    utterance_ids: list[int] = field(default_factory=list)
    speaker_names: list[str] = field(default_factory=list)
    speakers: list[int] = field(default_factory=list)
    cells: dict[str, list[str | Segment | None]] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)


class Features(NamedTuple):
    """One modality's features for every utterance of a table, in order: ``x`` (N, d),
    ``present`` bool (N,), ``settings`` (how they were made), ``errors`` (a message for each
    utterance made absent because its data was unusable)."""

    x: np.ndarray
    present: np.ndarray
    settings: dict
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConversationTable:
    """Dialogues in file order, the label names, the ``modalities`` the table has, and what
    was read."""

    dialogues: list[TableDialogue]
    label_names: list[str]
    source: str
    modalities: tuple[str, ...] = ("text",)

    def keys(self) -> list[str]:
        """``dialogue/utterance`` for every utterance, in order."""
        return [f"{d.id}/{u}" for d in self.dialogues for u in d.utterance_ids]

    def cells(self, modality: str) -> list[str | Segment | None]:
        """``modality``'s cell of every utterance, in order (None where absent)."""
        if modality not in self.modalities:
            raise KeyError(f"modality {modality!r}: the table has {list(self.modalities)}")
        return [v for d in self.dialogues for v in d.cells[modality]]

    def presence(self, modality: str) -> np.ndarray:
        """Bool (N,) over every utterance in order: True where it has ``modality``."""
        return np.array([v is not None for v in self.cells(modality)], dtype=bool)

    def where(self) -> list[str]:
        """``"{file}: row {n}"`` of every utterance, in order: how errors name them."""
        return [f"{d.file}: row {r}" for d in self.dialogues for r in d.rows]

    def to_dataset(
        self,
        name: str,
        features: dict[str, Features],
        *,
        source: str,
        on_nonfinite: OnNonFinite | None = "raise",
    ) -> ConversationDataset:
        """A :class:`ConversationDataset` of these dialogues with ``features`` by modality.

        Its ``info``: ``extraction`` (each modality's settings), ``absent`` (per modality
        with absent utterances: how many the table marks, how many had unusable data, how
        many had non-finite features), ``errors`` (the messages of the unusable ones),
        ``feature_dims``, ``modalities``, and per dialogue ``utterance_ids``,
        ``speaker_names`` (``speakers`` index it) and, with a text column, ``texts``. ``on_nonfinite``: NaN or infinity in a
        present utterance's features is a :class:`~fusionkit.errors.NonFiniteError` naming
        the file and row (``"raise"``), makes it absent (``"absent"``), or is not checked
        (None: a cache of raw features, checked when a dataset is made from them).
        """
        dialogues, start = {}, 0
        for d in self.dialogues:
            rows = slice(start, start + len(d.labels))
            dialogues[d.id] = Dialogue(
                id=d.id,
                features={m: f.x[rows] for m, f in features.items()},
                speakers=np.asarray(d.speakers, dtype=np.int64),
                labels=np.asarray(d.labels, dtype=np.int64),
                presence={m: f.present[rows] for m, f in features.items()},
            )
            start = rows.stop
        splits: dict[str, list[str]] = {}
        for d in self.dialogues:
            splits.setdefault(d.split, []).append(d.id)
        absent = {
            m: {
                "marked in the table": int((~self.presence(m)).sum()),
                "unusable data": len(f.errors),
            }
            for m, f in features.items()
            if not f.present.all()
        }
        dataset = ConversationDataset(
            name=name,
            dialogues=dialogues,
            splits=splits,
            label_names=list(self.label_names),
            num_speakers=max(len(d.speaker_names) for d in self.dialogues),
            source=source,
            info={
                "extraction": {m: f.settings for m, f in features.items()},
                "absent": absent,
                "errors": [e for f in features.values() for e in f.errors],
                "feature_dims": {m: int(f.x.shape[1]) for m, f in features.items()},
                "modalities": sorted(features),
                "utterance_ids": {d.id: d.utterance_ids for d in self.dialogues},
                "speaker_names": {d.id: d.speaker_names for d in self.dialogues},
                **(
                    {"texts": {d.id: d.cells["text"] for d in self.dialogues}}
                    if "text" in self.modalities
                    else {}
                ),
            },
        )
        rows = {
            d.id: [f"utterance_id {u}, {d.file}: row {r}" for u, r in zip(d.utterance_ids, d.rows)]
            for d in self.dialogues
        }
        return finite_dataset(
            dataset, where=self.source, on_nonfinite=on_nonfinite, utterance_names=rows
        )


_ASCII = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_MOJIBAKE = re.compile("[\u00e2\u00c3][\u0080-\u00bf\u20ac-\u2122]")


def clean_text(text: str) -> str:
    """Undo cp1252 leftovers (mojibake, C1 control characters), make quotes, dashes and
    ellipses ASCII, and collapse white space."""
    if _MOJIBAKE.search(text):
        with contextlib.suppress(UnicodeError):
            text = text.encode("cp1252").decode("utf-8")
    text = "".join(
        bytes([ord(c)]).decode("cp1252", errors="replace") if 0x80 <= ord(c) <= 0x9F else c
        for c in text
    )
    return " ".join(text.translate(_ASCII).split())


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    """Header and rows of a CSV or JSON Lines file (UTF-8, falling back to cp1252); lines
    end at newlines only (a U+2028 inside a text stays in it)."""
    if not path.exists():
        raise MissingFileError(f"{path}: no such file")
    if not path.is_file():
        raise TableError(f"{path}: not a file")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("cp1252", errors="replace")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(content.split("\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
                    why = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
                    raise TableError(f"{path}: row {i}: not valid JSON ({why})") from None
                if not isinstance(row, dict):
                    raise TableError(f"{path}: row {i}: expected a JSON object, got {row!r:.60}")
                rows.append(row)
        header = sorted({k for r in rows for k in r})
        return header, rows
    reader = csv.DictReader(io.StringIO(content, newline=""))
    try:
        return list(reader.fieldnames or []), list(reader)
    except csv.Error as e:
        raise TableError(f"{path}: row {reader.line_num}: not readable as CSV ({e})") from None


_YES, _NO = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f"}


def _cell(row: dict, column: str | None) -> str:
    """A cell as stripped text; "" for a column not configured, missing or null."""
    value = row.get(column) if column is not None else None
    return "" if value is None else str(value).strip()


def _flag(row: dict, column: str | None, where: str) -> bool | None:
    """A yes/no cell (1/0, true/false, yes/no, any case); None when empty."""
    value = _cell(row, column).lower()
    if not value:
        return None
    if value in _YES | _NO:
        return value in _YES
    raise TableError(f"{where}: {column} {value!r} is not a yes/no flag (1/0, true/false, yes/no)")


def _seconds(row: dict, column: str | None, where: str) -> float | None:
    """A time in seconds (>= 0); None when empty."""
    value = _cell(row, column)
    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if not math.isfinite(t) or t < 0:
        raise TableError(f"{where}: {column} {value!r} is not a time in seconds (a number >= 0)")
    return t


def _text(row: dict, column: str, flag: str | None, where: str, key: str) -> str | None:
    """The cleaned text, or None where the ``flag`` column says the utterance has none."""
    if _flag(row, flag, where) is False:
        return None
    text = clean_text(_cell(row, column))
    if not text:
        hint = f"; a {flag} column set to 0 marks it absent" if flag else ""
        raise TableError(f"{where}: empty text ({key}){hint}")
    return text


def _media(
    row: dict, column: str, flag: str | None, columns: TableColumns, where: str, folder: Path
) -> Segment | None:
    """The media segment, or None where the cell is empty or the ``flag`` column says 0."""
    on = _flag(row, flag, where)
    cell = _cell(row, column)
    if on is False or (not cell and on is None):
        return None
    if not cell:
        raise TableError(f"{where}: {flag} is 1 but the {column} cell is empty")
    start, end = _seconds(row, columns.start, where), _seconds(row, columns.end, where)
    if end is not None and end <= (start or 0.0):
        raise TableError(
            f"{where}: {columns.end} {end} s is not after {columns.start} {start or 0.0} s"
        )
    return Segment(Path(os.path.abspath(folder / cell)), start, end)


def _modality_columns(header: list[str], columns: TableColumns) -> dict[str, str]:
    """Modality -> the column its cells are read from, for the modalities a file has: a
    ``video`` column without an ``audio`` one also gives the audio (from the video file)."""
    found = {m: c for m, c in columns.modalities.items() if c in header}
    if "audio" in columns.modalities and "audio" not in found and "visual" in found:
        found["audio"] = found["visual"]
    return dict(sorted(found.items()))


def read_conversation_table(
    paths: str | Path | Sequence[str | Path],
    *,
    label_names: Sequence[str] | None = None,
    columns: TableColumns = TableColumns(),
    split: str | None = None,
    id_prefix: str = "",
) -> ConversationTable:
    """Read one or more conversation tables (``.csv``, ``.jsonl``).

    Args:
        paths: the files; dialogues of several files are concatenated. Every file has the
            same modality columns; media paths are relative to their file.
        label_names: the ordered label list (a label not in it is an error); None: the
            labels found in the files, sorted (Python string order). An empty label cell,
            or a file without a label column, gives ``IGNORE_INDEX``.
        columns: the column names.
        split: the split of every row of a file without a split column (one with a split
            column is read by it).
        id_prefix: prepended to dialogue ids (``"{split}/"`` keeps ids unique across files).
    """
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    index = None if label_names is None else {name: i for i, name in enumerate(label_names)}
    dialogues: list[TableDialogue] = []
    labels: list[str] = []  # every utterance's label cell, in order
    modalities: list[str] | None = None
    for path in paths:
        header, rows = _rows(path)
        needed = [columns.dialogue, columns.utterance, columns.speaker]
        if split is None:
            if columns.split is None:
                raise TableError(f"{path}: no split column configured and no split given")
            needed.append(columns.split)
        missing = [c for c in needed if c not in header]
        if missing:
            raise TableError(f"{path}: missing columns {missing}; found {header}")
        by_column = columns.split is not None and columns.split in header  # else: ``split``
        found = _modality_columns(header, columns)
        if not found:
            raise TableError(
                f"{path}: no modality column (one of {dict(columns.modalities)}); found {header}"
            )
        if modalities is not None and list(found) != modalities:
            raise TableError(
                f"{path}: has modalities {list(found)}, the files before it {modalities}"
            )
        modalities = list(found)
        has_label = columns.label in header
        seen: set[str] = set()
        current: TableDialogue | None = None
        for i, row in enumerate(rows, 1):
            where = f"{path}: row {i}"
            if not _cell(row, columns.dialogue):
                raise TableError(f"{where}: empty dialogue id")
            did = f"{id_prefix}{_cell(row, columns.dialogue)}"
            try:
                utt = int(_cell(row, columns.utterance))
            except ValueError:
                raise TableError(
                    f"{where}: utterance index {row.get(columns.utterance)!r} is not an integer"
                ) from None
            key = f"dialogue {did}, utterance {utt}"
            cells = {
                m: _text(row, column, columns.flag_of(m), where, key)
                if CELL_KINDS[m] == "text"
                else _media(row, column, columns.flag_of(m), columns, where, path.parent)
                for m, column in found.items()
            }
            label = _cell(row, columns.label) if has_label else ""
            if label and index is not None and label not in index:
                raise TableError(
                    f"{where}: unknown label {label!r}; expected one of {list(label_names)}"
                )
            row_split = _cell(row, columns.split) if by_column else split
            if current is None or current.id != did:
                if did in seen:
                    raise TableError(
                        f"{where}: rows out of order: dialogue {did} appears again after other dialogues"
                    )
                seen.add(did)
                current = TableDialogue(
                    id=did, split=row_split, file=path, cells={m: [] for m in found}
                )
                dialogues.append(current)
            elif utt in current.utterance_ids:
                raise TableError(f"{where}: duplicate (dialogue, utterance) = ({did}, {utt})")
            elif utt < current.utterance_ids[-1]:
                raise TableError(
                    f"{where}: rows out of order: utterance {utt} of dialogue {did} after {current.utterance_ids[-1]}"
                )
            if row_split != current.split:
                raise TableError(
                    f"{where}: dialogue {did} is in split {current.split!r} and {row_split!r}"
                )
            speaker = _cell(row, columns.speaker)
            if speaker not in current.speaker_names:
                current.speaker_names.append(speaker)
            current.rows.append(i)
            current.utterance_ids.append(utt)
            current.speakers.append(current.speaker_names.index(speaker))
            for m, value in cells.items():
                current.cells[m].append(value)
            labels.append(label)
    if not dialogues:
        raise TableError(f"{', '.join(str(p) for p in paths)}: no rows")
    names = list(label_names) if label_names is not None else sorted(set(labels) - {""})
    index = {name: i for i, name in enumerate(names)}
    ids = iter(index.get(label, IGNORE_INDEX) for label in labels)
    for d in dialogues:
        d.labels = [next(ids) for _ in d.utterance_ids]
    return ConversationTable(
        dialogues=dialogues,
        label_names=names,
        source=", ".join(p.name for p in paths),
        modalities=tuple(modalities or ()),
    )


def read_meld_csv(folder: str | Path, *, labels: str = "emotion") -> ConversationTable:
    """MELD's three CSVs (official splits) from ``folder``: dialogue ids ``"{split}/{id}"``,
    speakers by first appearance in each dialogue, MELD's label order (or sentiment with
    ``labels="sentiment"``). The train split's missing dialogue 60 is simply absent."""
    folder = Path(folder)
    missing = [f for f in MELD_FILES.values() if not (folder / f).exists()]
    if missing:
        raise MissingFileError(
            f"{folder}: MELD files {missing} not found (expected {list(MELD_FILES.values())})"
        )
    if labels not in ("emotion", "sentiment"):
        raise ConfigError(f"labels: expected 'emotion' or 'sentiment', got {labels!r}")
    names = MELD_LABELS if labels == "emotion" else MELD_SENTIMENTS
    cols = (
        MELD_COLUMNS
        if labels == "emotion"
        else dataclasses.replace(MELD_COLUMNS, label="Sentiment")
    )
    parts = [
        read_conversation_table(
            folder / f, label_names=names, columns=cols, split=s, id_prefix=f"{s}/"
        )
        for s, f in MELD_FILES.items()
    ]
    return ConversationTable(
        dialogues=[d for p in parts for d in p.dialogues],
        label_names=list(names),
        source=f"MELD CSVs in {folder}",
        modalities=("text",),
    )
