import os
import pickle

import numpy as np
import pytest

from fusionkit.data import (
    IEMOCAP_LABELS,
    MELD_LABELS,
    LayoutError,
    UnsafePickleError,
    load_npz,
    read_feature_pickle,
    save_npz,
)
from fusionkit.data.pickles import LAYOUTS
from tests.data.layouts import WIDTHS, make_layout, write_layout

ALL = ["A", "A'", "B", "C", "D", "D'", "E", "F"]
WITH_UNUSED = ["B", "D", "D'"]  # the layouts with a trailing unused field
VARIANTS = {  # how real files differ from one another beyond their layout
    "split lists": {},
    "split sets": {"split_type": set},
    "split frozensets": {"split_type": frozenset},
    "unused None": {"unused": None},
    "unused 0": {"unused": 0},
}
CASES = [
    (key, variant)
    for key in ALL
    for variant in VARIANTS
    if key in WITH_UNUSED or not variant.startswith("unused")
]


@pytest.mark.parametrize("protocol", [2, 4])  # Python 2 files; Python 3.8+ default
@pytest.mark.parametrize(("key", "variant"), CASES)
def test_every_layout_is_detected_and_read(tmp_path, key, variant, protocol):
    path = tmp_path / "features.pkl"  # the same name for every layout: detection is by content
    obj = write_layout(
        path, key, small=key not in ("A", "A'"), protocol=protocol, **VARIANTS[variant]
    )
    if protocol == 2 and "sets" in variant:  # as a Python 2 pickle names them
        assert f"__builtin__\n{variant.split()[1][:-1]}\n".encode() in path.read_bytes()
    ds = read_feature_pickle(path)
    assert ds.info["layout"] == key
    assert f"layout {key} " in ds.source
    iemocap = key in ("A", "A'", "C", "E")
    assert ds.name == ("iemocap" if iemocap else "meld")
    assert ds.label_names == (IEMOCAP_LABELS if iemocap else MELD_LABELS)
    text_only = key in ("E", "F")
    assert ds.modalities == (["text"] if text_only else ["audio", "text", "visual"])
    if key in ("A", "A'"):
        assert ds.feature_dims == dict(zip(("text", "audio", "visual"), WIDTHS[key], strict=True))
    assert set(ds.splits) == ({"train", "test", "dev"} if text_only else {"train", "test"})
    fields = next(lay for lay in LAYOUTS if lay.key == ("A" if key == "A'" else key)).fields
    for split in ds.splits:
        assert ds.splits[split] == sorted(str(i) for i in obj[fields.index(split)])
    labels = obj[1] if text_only else obj[2]
    for did, d in ds.dialogues.items():
        original = next(v for k, v in labels.items() if str(k) == did)
        assert d.labels.tolist() == original
        assert d.speakers.dtype == np.int64 and d.speakers.min() >= 0
        assert d.speakers.max() < (2 if iemocap else 9)


def test_speakers_become_integer_ids(tmp_path):
    obj = write_layout(tmp_path / "a.pkl", "C")
    ds = read_feature_pickle(tmp_path / "a.pkl")
    did, codes = next(iter(obj[1].items()))
    assert ds.dialogues[did].speakers.tolist() == [{"M": 0, "F": 1}[c] for c in codes]
    obj = write_layout(tmp_path / "b.pkl", "D")
    ds = read_feature_pickle(tmp_path / "b.pkl")
    did, onehots = next(iter(obj[1].items()))
    assert ds.dialogues[str(did)].speakers.tolist() == [int(np.argmax(v)) for v in onehots]


def test_text_layer_choice(tmp_path):
    obj = write_layout(tmp_path / "c.pkl", "C")
    did = next(iter(obj[0]))
    layer2 = read_feature_pickle(tmp_path / "c.pkl", text=2).dialogues[did].features["text"]
    mean = read_feature_pickle(tmp_path / "c.pkl", text="mean").dialogues[did].features["text"]
    np.testing.assert_allclose(layer2, np.stack(obj[5][did]))
    np.testing.assert_allclose(
        mean, np.mean([np.stack(obj[i][did]) for i in (3, 4, 5, 6)], 0), rtol=1e-6
    )
    with pytest.raises(ValueError, match="text: expected 0, 1, 2, 3 or 'mean'"):
        read_feature_pickle(tmp_path / "c.pkl", text=7)


def test_sentiment_labels(tmp_path):
    obj = write_layout(tmp_path / "f.pkl", "F")
    ds = read_feature_pickle(tmp_path / "f.pkl", label_set="sentiment")
    assert ds.label_names == ["neutral", "positive", "negative"]
    did, sent = next(iter(obj[2].items()))
    assert ds.dialogues[str(did)].labels.tolist() == sent
    write_layout(tmp_path / "c.pkl", "C")
    with pytest.raises(ValueError, match="no sentiment labels"):
        read_feature_pickle(tmp_path / "c.pkl", label_set="sentiment")


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_unknown_layout_says_what_it_found(tmp_path):
    _dump(tmp_path / "x.pkl", ({}, {}, {}))
    with pytest.raises(LayoutError, match=r"x\.pkl: matches no known .* found a tuple of 3"):
        read_feature_pickle(tmp_path / "x.pkl")
    _dump(tmp_path / "y.pkl", [1, 2])
    with pytest.raises(LayoutError, match="found a list of 2"):
        read_feature_pickle(tmp_path / "y.pkl")


def test_malformed_files_fail_clearly(tmp_path):
    obj = list(make_layout("C"))
    did = next(iter(obj[2]))
    obj[2] = dict(obj[2])
    obj[2][did] = [99] * len(obj[2][did])
    _dump(tmp_path / "labels.pkl", tuple(obj))
    with pytest.raises(ValueError, match=r"labels\.pkl: dialogue .* labels outside 0\.\.5"):
        read_feature_pickle(tmp_path / "labels.pkl")
    obj = list(make_layout("C"))
    obj[7] = {k: v[:-1] for k, v in obj[7].items()}  # audio one row short
    _dump(tmp_path / "rows.pkl", tuple(obj))
    with pytest.raises(
        ValueError, match=r"rows\.pkl: dialogue .*, audio: expected \d+ feature vectors"
    ):
        read_feature_pickle(tmp_path / "rows.pkl")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    obj = list(make_layout("C"))
    obj[0] = {"x": _Exploit(marker)}
    _dump(tmp_path / "evil.pkl", tuple(obj))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused to load (posix|os)\.system"):
        read_feature_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_arbitrary_class_is_refused(tmp_path):
    import collections

    _dump(tmp_path / "c.pkl", collections.Counter("abc"))
    with pytest.raises(UnsafePickleError, match=r"collections\.Counter"):
        read_feature_pickle(tmp_path / "c.pkl")


class _Call:
    """Pickles as a call of ``func(*args)``: what a hostile file would ask for."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("protocol", [2, 4])  # Python 2 files; Python 3.8+ default
@pytest.mark.parametrize("func", [eval, exec, getattr, __import__])
def test_other_builtins_are_refused_under_both_names(tmp_path, func, protocol):
    """Sets are admitted under __builtin__ and builtins; nothing else of either module is."""
    path = tmp_path / "b.pkl"
    with open(path, "wb") as f:
        pickle.dump(({"x": _Call(func, "1")}, {1, 2}), f, protocol=protocol)
    module = "__builtin__" if protocol == 2 else "builtins"
    with pytest.raises(UnsafePickleError, match=rf"refused to load {module}\.{func.__name__}"):
        read_feature_pickle(path)


def test_npz_round_trip(tmp_path):
    write_layout(tmp_path / "d.pkl", "D'")
    ds = read_feature_pickle(tmp_path / "d.pkl")
    save_npz(ds, tmp_path / "d.npz")
    back = load_npz(tmp_path / "d.npz")
    assert back.splits == ds.splits and back.label_names == ds.label_names
    assert back.info == ds.info and back.num_speakers == ds.num_speakers
    for did, d in ds.dialogues.items():
        e = back.dialogues[did]
        assert np.array_equal(e.labels, d.labels) and np.array_equal(e.speakers, d.speakers)
        for m in d.features:
            assert np.array_equal(e.features[m], d.features[m])
    assert not list(tmp_path.glob("*.tmp"))
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a fusionkit dataset file"):
        load_npz(tmp_path / "other.npz")


def test_convert_command_writes_a_readable_npz(tmp_path, capsys):
    from fusionkit.data.convert import main

    write_layout(tmp_path / "c.pkl", "C")
    main([str(tmp_path / "c.pkl"), str(tmp_path / "c.npz"), "--text", "mean"])
    assert "layout C" in capsys.readouterr().out
    original = read_feature_pickle(tmp_path / "c.pkl", text="mean")
    converted = load_npz(tmp_path / "c.npz")
    assert converted.splits == original.splits and converted.modalities == original.modalities
    did = next(iter(original.dialogues))
    assert np.array_equal(
        converted.dialogues[did].features["text"], original.dialogues[did].features["text"]
    )
