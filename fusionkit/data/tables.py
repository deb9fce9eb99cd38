"""Conversation tables: one row per utterance (CSV or JSON Lines), and MELD's CSVs as a preset.

A table has a dialogue id, an utterance index, a speaker, the text, a label and (or the
caller gives) a split. Within a file each dialogue's rows are contiguous and its utterance
indices strictly increase (gaps are allowed: MELD has some). Every problem is an error that
names the file, the row (1-based, header excluded) and what is wrong.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fusionkit.data.pickles import MELD_LABELS, MELD_SENTIMENTS


@dataclass(frozen=True)
class TableColumns:
    """Column names of a conversation table; ``split=None`` when the caller gives the split."""

    dialogue: str = "dialogue_id"
    utterance: str = "utterance_id"
    speaker: str = "speaker"
    text: str = "text"
    label: str = "label"
    split: str | None = "split"


MELD_COLUMNS = TableColumns(
    dialogue="Dialogue_ID",
    utterance="Utterance_ID",
    speaker="Speaker",
    text="Utterance",
    label="Emotion",
    split=None,
)
MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


@dataclass
class TableDialogue:
    """One dialogue of a table: ``speakers`` are ids by order of first appearance."""

    id: str
    split: str
    utterance_ids: list[int] = field(default_factory=list)
    speaker_names: list[str] = field(default_factory=list)
    speakers: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ConversationTable:
    """Dialogues in file order, the label names, and what was read."""

    dialogues: list[TableDialogue]
    label_names: list[str]
    source: str

    def keys(self) -> list[str]:
        """``dialogue/utterance`` for every utterance, in order."""
        return [f"{d.id}/{u}" for d in self.dialogues for u in d.utterance_ids]


class TableError(ValueError):
    """A conversation table that cannot be read as it is."""


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
    """Header and rows of a CSV or JSON Lines file (UTF-8, falling back to cp1252)."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("cp1252", errors="replace")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(content.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TableError(f"{path}: row {i}: not valid JSON ({e.msg})") from None
        header = sorted({k for r in rows for k in r})
        return header, rows
    reader = csv.DictReader(content.splitlines())
    return list(reader.fieldnames or []), list(reader)


def read_conversation_table(
    paths: str | Path | Sequence[str | Path],
    *,
    label_names: Sequence[str],
    columns: TableColumns = TableColumns(),
    split: str | None = None,
    id_prefix: str = "",
) -> ConversationTable:
    """Read one or more conversation tables (``.csv``, ``.jsonl``).

    Args:
        paths: the files; dialogues of several files are concatenated.
        label_names: the ordered label list; a label not in it is an error.
        columns: the column names.
        split: the split of every row, for files without a split column.
        id_prefix: prepended to dialogue ids (``"{split}/"`` keeps ids unique across files).
    """
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    index = {name: i for i, name in enumerate(label_names)}
    dialogues: list[TableDialogue] = []
    for path in paths:
        header, rows = _rows(path)
        needed = [columns.dialogue, columns.utterance, columns.speaker, columns.text, columns.label]
        if split is None:
            if columns.split is None:
                raise TableError(f"{path}: no split column configured and no split given")
            needed.append(columns.split)
        missing = [c for c in needed if c not in header]
        if missing:
            raise TableError(f"{path}: missing columns {missing}; found {header}")
        seen: set[str] = set()
        current: TableDialogue | None = None
        for i, row in enumerate(rows, 1):
            where = f"{path}: row {i}"
            did = f"{id_prefix}{str(row[columns.dialogue]).strip()}"
            try:
                utt = int(str(row[columns.utterance]).strip())
            except ValueError:
                raise TableError(
                    f"{where}: utterance index {row[columns.utterance]!r} is not an integer"
                ) from None
            text = clean_text(str(row[columns.text] or ""))
            if not text:
                raise TableError(f"{where}: empty text (dialogue {did}, utterance {utt})")
            label = str(row[columns.label]).strip()
            if label not in index:
                raise TableError(
                    f"{where}: unknown label {label!r}; expected one of {list(label_names)}"
                )
            if current is None or current.id != did:
                if did in seen:
                    raise TableError(
                        f"{where}: rows out of order: dialogue {did} appears again after other dialogues"
                    )
                seen.add(did)
                row_split = split if split is not None else str(row[columns.split]).strip()
                current = TableDialogue(id=did, split=row_split)
                dialogues.append(current)
            elif utt in current.utterance_ids:
                raise TableError(f"{where}: duplicate (dialogue, utterance) = ({did}, {utt})")
            elif utt < current.utterance_ids[-1]:
                raise TableError(
                    f"{where}: rows out of order: utterance {utt} of dialogue {did} after {current.utterance_ids[-1]}"
                )
            if split is None and str(row[columns.split]).strip() != current.split:
                raise TableError(
                    f"{where}: dialogue {did} is in split {current.split!r} and {row[columns.split]!r}"
                )
            speaker = str(row[columns.speaker]).strip()
            if speaker not in current.speaker_names:
                current.speaker_names.append(speaker)
            current.utterance_ids.append(utt)
            current.speakers.append(current.speaker_names.index(speaker))
            current.texts.append(text)
            current.labels.append(index[label])
    names = ", ".join(p.name for p in paths)
    return ConversationTable(dialogues=dialogues, label_names=list(label_names), source=names)


def read_meld_csv(folder: str | Path, *, labels: str = "emotion") -> ConversationTable:
    """MELD's three CSVs (official splits) from ``folder``: dialogue ids ``"{split}/{id}"``,
    speakers by first appearance in each dialogue, MELD's label order (or sentiment with
    ``labels="sentiment"``). The train split's missing dialogue 60 is simply absent."""
    folder = Path(folder)
    missing = [f for f in MELD_FILES.values() if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: MELD files {missing} not found (expected {list(MELD_FILES.values())})"
        )
    if labels not in ("emotion", "sentiment"):
        raise ValueError(f"labels: expected 'emotion' or 'sentiment', got {labels!r}")
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
    )
