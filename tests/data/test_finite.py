"""Non-finite features at present utterances: refused by every reader, or made absent."""

import pickle
import re

import numpy as np
import pytest

from fusionkit.batch import Dialogue
from fusionkit.data import load_npz, read_feature_pickle, save_npz
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.finite import REASON, finite_dataset, refuse_nonfinite
from fusionkit.data.tables import Features, read_conversation_table
from fusionkit.errors import ConfigError, DataError, NonFiniteError
from tests.data.layouts import make_layout


def _dialogue(did, t=4, *, presence=None, seed=0):
    rng = np.random.default_rng(seed)
    return Dialogue(
        id=did,
        features={"text": rng.normal(size=(t, 3)), "audio": rng.normal(size=(t, 2))},
        speakers=np.zeros(t, dtype=np.int64),
        labels=np.zeros(t, dtype=np.int64),
        presence=presence or {},
    )


def test_raise_names_file_dialogue_utterance_modality_and_count():
    a, b = _dialogue("a"), _dialogue("b", seed=1)
    b.features["audio"][2, 1] = np.inf
    b.features["text"][3, 0] = np.nan
    b.features["audio"][3, 0] = -np.inf
    with pytest.raises(NonFiniteError) as e:
        refuse_nonfinite([a, b], where="feats.pkl", utterance_names={"b": ["u0", "u1", "u2", "u3"]})
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("feats.pkl: dialogue 'b', utterance 2 (u2): audio features")
    assert "3 such utterance features in 1 dialogue(s)" in message
    assert "(audio 2, text 1)" in message and "on_nonfinite='absent'" in message


def test_absent_flips_presence_of_that_modality_only_and_counts():
    a, b = _dialogue("a"), _dialogue("b", seed=1)
    b.features["text"][1] = np.nan
    b.features["audio"][1, 0] = np.inf
    b.features["audio"][3, 1] = np.nan
    before = {m: x.copy() for m, x in b.features.items()}
    out, counts = refuse_nonfinite([a, b], where="f", on_nonfinite="absent")
    assert counts == {"text": 1, "audio": 2}
    assert out[0] is a
    assert out[1].present("text").tolist() == [True, False, True, True]
    assert out[1].present("audio").tolist() == [True, False, True, False]
    for m, x in before.items():  # values left as they are: absent ones carry no meaning
        np.testing.assert_array_equal(out[1].features[m], x)


def test_nan_at_an_absent_utterance_is_ignored():
    d = _dialogue("a", presence={"text": np.array([True, False, True, True])})
    d.features["text"][1] = np.nan
    out, counts = refuse_nonfinite([d], where="f")
    assert out == [d] and counts == {}
    d.features["text"][2, 0] = np.nan  # present: refused
    with pytest.raises(NonFiniteError, match="utterance 2"):
        refuse_nonfinite([d], where="f")


def test_integer_features_pass_and_other_dtypes_are_refused():
    d = Dialogue(
        id="a",
        features={"text": np.arange(6).reshape(3, 2)},
        speakers=np.zeros(3, dtype=np.int64),
        labels=np.zeros(3, dtype=np.int64),
    )
    assert refuse_nonfinite([d], where="f") == ([d], {})
    s = Dialogue(
        id="s",
        features={"text": np.array([["x"], ["y"]])},
        speakers=np.zeros(2, dtype=np.int64),
        labels=np.zeros(2, dtype=np.int64),
    )
    with pytest.raises(DataError, match="f: dialogue 's': text features must be numbers"):
        refuse_nonfinite([s], where="f")
    with pytest.raises(ConfigError, match="on_nonfinite: expected 'raise' or 'absent'"):
        refuse_nonfinite([d], where="f", on_nonfinite="drop")


def test_dataset_records_the_counts_for_its_summary():
    d = _dialogue("a")
    d.features["audio"][0] = np.nan
    ds = ConversationDataset(
        name="x",
        dialogues={"a": d},
        splits={"train": ["a"]},
        label_names=["n"],
        num_speakers=1,
        info={"absent": {"audio": {"marked in the table": 2}}},
    )
    assert finite_dataset(ds, where="f", on_nonfinite=None) is ds
    out = finite_dataset(ds, where="f", on_nonfinite="absent")
    assert out.info["absent"]["audio"] == {"marked in the table": 2, REASON: 1}
    assert ds.info["absent"]["audio"] == {"marked in the table": 2}  # not changed
    assert "audio absent in 1 of 4 utterances (marked in the table: 2, non-finite values: 1)" in (
        out.summary()
    )


def _pickle_with(tmp_path, value):
    obj = list(make_layout("A", num_dialogues=4))  # ids, speakers, labels, text, audio, ...
    did = next(iter(obj[3]))
    obj[3] = {k: np.array(v, dtype=np.float64) for k, v in obj[3].items()}
    obj[3][did][1, 2] = value
    path = tmp_path / "feats.pkl"
    path.write_bytes(pickle.dumps(tuple(obj), protocol=2))
    return path, did, obj[0][did][1]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e300])  # 1e300: inf in float32
def test_feature_pickle_refuses_a_nonfinite_value(tmp_path, value):
    path, did, utt = _pickle_with(tmp_path, value)
    pattern = rf"{re.escape(str(path))}: dialogue '{did}', utterance 1 \({utt}\): text features"
    with pytest.raises(NonFiniteError, match=pattern):
        read_feature_pickle(path)
    ds = read_feature_pickle(path, on_nonfinite="absent")
    assert ds.dialogues[did].present("text").tolist()[:3] == [True, False, True]
    assert ds.info["absent"] == {"text": {REASON: 1}}
    assert "text absent in 1 of" in ds.summary()


def test_npz_refuses_a_nonfinite_value_at_present_utterances_only(tmp_path):
    a = _dialogue("a", presence={"text": np.array([True, False, True, True])})
    a.features["text"][1] = np.nan  # absent: fine
    ds = ConversationDataset(
        name="x", dialogues={"a": a}, splits={"train": ["a"]}, label_names=["n"], num_speakers=1
    )
    save_npz(ds, tmp_path / "ok.npz")
    assert np.isnan(load_npz(tmp_path / "ok.npz").dialogues["a"].features["text"][1]).all()
    a.features["audio"][2, 0] = np.inf
    save_npz(ds, tmp_path / "bad.npz")
    with pytest.raises(NonFiniteError, match=r"bad\.npz: dialogue 'a', utterance 2: audio"):
        load_npz(tmp_path / "bad.npz")
    back = load_npz(tmp_path / "bad.npz", on_nonfinite="absent")
    assert back.dialogues["a"].present("audio").tolist() == [True, True, False, True]
    assert back.dialogues["a"].present("text").tolist() == [True, False, True, True]
    assert back.info["absent"] == {"audio": {REASON: 1}}


def test_table_dataset_names_the_file_and_row(tmp_path):
    path = tmp_path / "talk.csv"
    path.write_text(
        "dialogue_id,utterance_id,speaker,text,split\n"
        "d,0,A,hello,train\nd,3,B,there,train\ne,0,A,bye,train\n"
    )
    table = read_conversation_table(path)
    x = np.ones((3, 2), dtype=np.float32)
    x[1, 1] = np.nan
    feats = {"text": Features(x=x, present=np.ones(3, dtype=bool), settings={})}
    with pytest.raises(
        NonFiniteError,
        match=rf"talk\.csv: dialogue 'd', utterance 1 \(utterance_id 3, "
        rf"{re.escape(str(path))}: row 2\): text features",
    ):
        table.to_dataset("talk", feats, source="s")
    ds = table.to_dataset("talk", feats, source="s", on_nonfinite="absent")
    assert ds.dialogues["d"].present("text").tolist() == [True, False]
    assert ds.info["absent"]["text"][REASON] == 1
    unchecked = table.to_dataset("talk", feats, source="s", on_nonfinite=None)
    assert unchecked.dialogues["d"].present("text").all()
