import json
from pathlib import Path

import pytest

from fusionkit.data.pickles import MELD_LABELS
from fusionkit.data.tables import (
    TableColumns,
    TableError,
    clean_text,
    read_conversation_table,
    read_meld_csv,
)

MELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "meld"
LABELS = ["neutral", "joy", "anger"]
HEADER = "dialogue_id,utterance_id,speaker,text,label,split\n"


def _write(tmp_path, body, name="t.csv"):
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_reads_a_table(tmp_path):
    path = _write(
        tmp_path,
        "7,0,Ann,Hi there,neutral,train\n7,1,Bob,Great!,joy,train\n7,3,Ann,Hmph,anger,train\n8,0,Bob,Yo,neutral,test\n",
    )
    table = read_conversation_table(path, label_names=LABELS)
    d7, d8 = table.dialogues
    assert (d7.id, d7.split, d7.utterance_ids, d7.speakers, d7.labels) == (
        "7",
        "train",
        [0, 1, 3],
        [0, 1, 0],
        [0, 1, 2],
    )
    assert d7.speaker_names == ["Ann", "Bob"] and d8.speakers == [
        0
    ]  # numbered within each dialogue
    assert table.keys() == ["7/0", "7/1", "7/3", "8/0"]


def test_jsonl_and_custom_columns(tmp_path):
    rows = [{"conv": "a", "idx": i, "who": "x", "utt": f"u{i}", "emo": "joy"} for i in range(3)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cols = TableColumns(
        dialogue="conv",
        utterance="idx",
        speaker="who",
        modalities={"text": "utt"},
        label="emo",
        split=None,
    )
    table = read_conversation_table(path, label_names=LABELS, columns=cols, split="dev")
    assert table.dialogues[0].labels == [1, 1, 1] and table.dialogues[0].split == "dev"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "1,0,A,x,neutral,train\n1,0,B,y,joy,train\n",
            r"row 2: duplicate \(dialogue, utterance\) = \(1, 0\)",
        ),
        (
            "1,1,A,x,neutral,train\n1,0,B,y,joy,train\n",
            r"row 2: rows out of order: utterance 0 of dialogue 1 after 1",
        ),
        (
            "1,0,A,x,neutral,train\n2,0,B,y,joy,train\n1,1,A,z,joy,train\n",
            r"row 3: rows out of order: dialogue 1 appears again",
        ),
        (
            "1,0,A,x,sadness,train\n",
            r"row 1: unknown label 'sadness'; expected one of \['neutral', 'joy', 'anger'\]",
        ),
        ("1,0,A,   ,neutral,train\n", r"row 1: empty text \(dialogue 1, utterance 0\)"),
        ("1,zero,A,x,neutral,train\n", r"row 1: utterance index 'zero' is not an integer"),
    ],
)
def test_malformed_tables_name_file_row_and_problem(tmp_path, body, message):
    path = _write(tmp_path, body)
    with pytest.raises(TableError, match=rf"t\.csv: {message}"):
        read_conversation_table(path, label_names=LABELS)


def test_missing_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("dialogue_id,speaker,text\n1,A,x\n")
    with pytest.raises(TableError, match=r"t\.csv: missing columns \['utterance_id', 'split'\]"):
        read_conversation_table(path, label_names=LABELS)  # label is optional
    path.write_text("dialogue_id,utterance_id,speaker,split\n1,0,A,train\n")
    with pytest.raises(TableError, match=r"t\.csv: no modality column"):
        read_conversation_table(path, label_names=LABELS)


def test_clean_text_handles_quotes_and_cp1252_leftovers():
    assert clean_text("you’re “so” good… —ok") == 'you\'re "so" good... -ok'
    assert clean_text("youâ€™re") == "you're"  # UTF-8 read as cp1252
    assert clean_text("you\x92re  here") == "you're here"  # a cp1252 byte read as Latin-1
    assert clean_text("Nestlé") == "Nestlé"


def test_cp1252_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes((HEADER + "1,0,A,you’re,neutral,train\n").encode("cp1252"))  # ’ is byte 0x92
    assert read_conversation_table(path, label_names=LABELS).dialogues[0].cells["text"] == [
        "you're"
    ]


@pytest.mark.skipif(not MELD.exists(), reason=f"MELD transcripts not found at {MELD}")
def test_meld_preset_reads_the_official_splits():
    table = read_meld_csv(MELD)
    counts = {}
    for d in table.dialogues:
        n, u = counts.get(d.split, (0, 0))
        counts[d.split] = (n + 1, u + len(d.labels))
    assert counts == {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)}
    ids = {d.id for d in table.dialogues}
    assert "train/60" not in ids and "train/59" in ids  # the missing train dialogue is no error
    assert table.label_names == MELD_LABELS
    assert table.modalities == ("text",)  # StartTime/EndTime are episode times: not read
    assert table.modalities == ("text",)
    assert max(max(d.speakers) for d in table.dialogues) == 8  # 9 speaker slots
    assert not any("’" in t for d in table.dialogues for t in d.cells["text"])
