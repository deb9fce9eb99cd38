"""Every reader fuzzed: whatever the bytes, it ends as a dataset whose present features are
finite, or as fusionkit's own error of one line naming the file; never another exception,
a hang, or NaN in a dataset.

Feature pickles, fusionkit's npz, conversation tables (CSV and JSON Lines, default columns)
and MELD's CSVs: mutated, inserted, deleted and truncated bytes, empty files, BOMs and other
encodings; rows shuffled, dropped and repeated; columns missing and extra; fields, cells and
entries of the wrong type, huge, negative or non-finite.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from numpy._core.multiarray import _reconstruct

from fusionkit.batch import DialogueBatch
from fusionkit.data import load_npz, read_feature_pickle, save_npz
from fusionkit.data.tables import MELD_FILES, Features, read_conversation_table, read_meld_csv
from fusionkit.errors import DataError, NonFiniteError, UserError
from tests.data.layouts import make_layout

EXAMPLES = int(os.environ.get("FUSIONKIT_FUZZ_EXAMPLES", "50"))
"""Examples per property: a few seconds each by default; set the variable for a deep run."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECONDS = 20  # a reader that takes longer on a file of a few kB hangs


def ends_well(read, path: Path, *, named: str | None = None):
    """``read(path)``: a dataset whose present features are finite and that batches, or a
    :class:`UserError` of one line naming the file (``named``, default its name)."""
    start = time.perf_counter()
    try:
        ds = read(path)
    except UserError as e:
        message = str(e)
        assert "\n" not in message, message
        assert (named or path.name) in message, message
        ds = None
    assert time.perf_counter() - start < SECONDS
    if ds is not None:
        for d in ds.dialogues.values():
            for m, x in d.features.items():
                assert np.isfinite(np.asarray(x, dtype=np.float64)[d.present(m)]).all(), (d.id, m)
        assert ds.summary()
        DialogueBatch.collate(list(ds.dialogues.values()))
    return ds


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "insert", "delete", "truncate"]),
        st.integers(0, 2**32),  # where, modulo the length
        st.binary(min_size=1, max_size=8),  # what is set or inserted
    ),
    min_size=1,
    max_size=4,
)
"""A few edits of a file's bytes, for :func:`mutate`: drawn apart from the bytes, so that
a failing example prints a few numbers, not the file."""


def mutate(data: bytes, edits) -> bytes:
    """``data`` with ``edits`` applied: a byte set, bytes inserted, up to 16 deleted, or the
    rest cut off."""
    b = bytearray(data)
    for op, where, what in edits:
        i = where % max(len(b), 1)
        if op == "set" and b:
            b[i] = what[0]
        elif op == "insert":
            b[i:i] = what
        elif op == "delete":
            del b[i : i + 1 + what[0] % 16]
        elif op == "truncate":
            del b[i:]
    return bytes(b)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` mutated (small data only: a strategy's arguments are part of its repr)."""
    return mutate(data, draw(EDITS))


def _write(folder: str, name: str, data: bytes) -> Path:
    path = Path(folder) / name
    path.write_bytes(data)
    return path


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN, infinities, huge and tiny
    st.sampled_from([-1, 0, 1, 6, 9, 2**31, 2**63, -(2**63) - 1, 1e300, -1e300]),
)
WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.one_of(NUMBERS, st.text(max_size=2), st.none()), max_size=6),
    st.lists(st.lists(NUMBERS, max_size=3), max_size=4),
    st.dictionaries(st.text(max_size=2), NUMBERS, max_size=2),
    st.builds(
        np.full,
        st.tuples(st.integers(0, 5), st.integers(0, 3)) | st.tuples(st.integers(0, 5)),
        st.floats(width=32),
    ),
    st.builds(np.array, st.lists(st.text(max_size=3), max_size=3)),
)

# ---------------------------------------------------------------------------------------
# Feature pickles

LAYOUT_KEYS = ["A", "B", "C", "D'", "E", "F"]
FEATURE_FIELDS = ("text", "text0", "text1", "text2", "text3", "audio", "visual")


def _narrow(layout_key: str) -> list:
    """:func:`make_layout`'s tuple with features 2 wide: small files, mostly structure."""
    from fusionkit.data.pickles import LAYOUTS

    obj = list(make_layout(layout_key, num_dialogues=3))
    layout = next(lay for lay in LAYOUTS if lay.key == layout_key)
    for i, field in enumerate(layout.fields):
        if field in FEATURE_FIELDS:
            obj[i] = {
                k: [a[:2] for a in v] if isinstance(v, list) else v[:, :2]
                for k, v in obj[i].items()
            }
    return obj


PICKLES = {
    (key, protocol): pickle.dumps(tuple(_narrow(key)), protocol=protocol)
    for key in LAYOUT_KEYS
    for protocol in (2, 4)
}


@FUZZ
@given(key=st.sampled_from(sorted(PICKLES)), edits=EDITS)
@example(key=("C", 2), edits=[("truncate", 0, b"x")])  # empty
@example(key=("C", 2), edits=[("truncate", 2, b"x")])  # a header only
@example(key=("C", 2), edits=[("truncate", len(PICKLES["C", 2]) - 1, b"x")])  # no STOP
def test_feature_pickle_mutated_bytes(key, edits):
    with tempfile.TemporaryDirectory() as folder:
        ends_well(read_feature_pickle, _write(folder, "fuzz.pkl", mutate(PICKLES[key], edits)))


@st.composite
def changed_layout(draw) -> tuple:
    """A layout's tuple with a field, a dialogue's value or one cell of it replaced by
    something of the wrong type or size, a dialogue or field added or left out."""
    obj = _narrow(draw(st.sampled_from(LAYOUT_KEYS)))
    i = draw(st.integers(0, len(obj) - 1))
    op = draw(st.sampled_from(["field", "value", "cell", "drop", "add", "fields", "split"]))
    if op == "fields":
        if draw(st.booleans()):
            obj.append(draw(WEIRD))
        else:
            del obj[i]
        return tuple(obj)
    if op == "field" or not isinstance(obj[i], dict) or not obj[i]:
        if op == "split":
            obj[i] = [*obj[i], draw(WEIRD)] if isinstance(obj[i], list) else draw(WEIRD)
        else:
            obj[i] = draw(WEIRD)
        return tuple(obj)
    field = dict(obj[i])
    key = draw(st.sampled_from(list(field)))
    if op == "value":
        field[key] = draw(WEIRD)
    elif op == "drop":
        del field[key]
    elif op == "add":
        field[draw(st.text(max_size=3) | st.integers())] = draw(WEIRD)
    else:  # one cell of a dialogue's list or array
        value = field[key]
        if isinstance(value, np.ndarray) and value.size:
            value = value.astype(np.float64)
            value.flat[draw(st.integers(0, value.size - 1))] = draw(st.floats())
        elif isinstance(value, list) and value:
            value = list(value)
            value[draw(st.integers(0, len(value) - 1))] = draw(WEIRD)
        else:
            value = draw(WEIRD)
        field[key] = value
    obj[i] = field
    return tuple(obj)


@FUZZ
@given(obj=changed_layout(), absent=st.booleans(), protocol=st.sampled_from([2, 4]))
def test_feature_pickle_wrong_values(obj, absent, protocol):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "fuzz.pkl", pickle.dumps(obj, protocol=protocol))
        mode = "absent" if absent else "raise"
        try:
            ends_well(lambda p: read_feature_pickle(p, on_nonfinite=mode), path)
        except NonFiniteError:  # pragma: no cover - a failure: absent never raises it
            raise AssertionError("on_nonfinite='absent' raised NonFiniteError") from None


# ---------------------------------------------------------------------------------------
# fusionkit's npz


def _npz_arrays() -> dict[str, np.ndarray]:
    """The arrays of a small npz with three modalities, one of them partly absent."""
    with tempfile.TemporaryDirectory() as folder:
        pkl = _write(folder, "a.pkl", PICKLES["B", 4])
        ds = read_feature_pickle(pkl)
        did, d = next(iter(ds.dialogues.items()))
        presence = np.arange(len(d)) > 0
        ds.dialogues[did] = replace(d, presence={"audio": presence})
        save_npz(ds, Path(folder) / "a.npz")
        with np.load(Path(folder) / "a.npz") as z:
            return {k: z[k] for k in z.files}


NPZ_ARRAYS = _npz_arrays()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ = _npz_bytes(NPZ_ARRAYS)
SHAPES = st.sampled_from([(), (0,), (1,), (5,), (20,), (5, 2), (20, 1), (2, 3, 1)])
ARRAYS = st.one_of(
    st.builds(np.full, SHAPES, st.floats(width=32)),
    st.builds(np.full, SHAPES, st.integers(-(2**63), 2**63 - 1)),
    st.builds(np.full, SHAPES, st.booleans()),
    st.builds(np.full, SHAPES, st.text(max_size=3)),
    st.builds(lambda shape: np.full(shape, None, dtype=object), SHAPES),  # pickled by savez
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@FUZZ
@given(edits=EDITS)
@example(edits=[("truncate", 0, b"x")])  # empty
@example(edits=[("truncate", len(NPZ) // 2, b"x")])
def test_npz_mutated_bytes(edits):
    with tempfile.TemporaryDirectory() as folder:
        ends_well(load_npz, _write(folder, "fuzz.npz", mutate(NPZ, edits)))


def test_npz_empty_zip(tmp_path):
    path = _write(str(tmp_path), "empty.npz", b"PK\x05\x06" + bytes(18))
    with pytest.raises(DataError, match=r"empty\.npz: not a fusionkit dataset file .*'meta'"):
        load_npz(path)


@st.composite
def changed_npz(draw) -> dict[str, np.ndarray]:
    """The npz's arrays with one left out, added, replaced, shuffled or changed in one
    element, or its metadata changed."""
    arrays = dict(NPZ_ARRAYS)
    name = draw(st.sampled_from(sorted(arrays)))
    op = draw(st.sampled_from(["drop", "add", "replace", "element", "shuffle", "meta", "info"]))
    if op == "drop":
        del arrays[name]
    elif op == "add":
        extra = draw(st.sampled_from(["junk", "features/extra", "presence/text", "presence/x"]))
        arrays[extra] = draw(ARRAYS)
    elif op == "replace":
        arrays[name] = draw(ARRAYS)
    elif op == "shuffle":
        x = arrays[name].copy()
        if x.ndim:
            np.random.default_rng(draw(st.integers(0, 99))).shuffle(x)
        arrays[name] = x
    elif op == "element" and arrays[name].ndim and arrays[name].size:
        x = arrays[name].copy()
        value = draw(NUMBERS if x.dtype.kind in "iuf" else st.booleans())
        if x.dtype.kind in "iu" and isinstance(value, float):
            x = x.astype(np.float64)
        elif x.dtype.kind in "iu" and not -(2**63) <= value < 2**63:
            value = -1
        x.flat[draw(st.integers(0, x.size - 1))] = value
        arrays[name] = x
    else:
        meta = json.loads(str(NPZ_ARRAYS["meta"]))
        key = draw(st.sampled_from(sorted(meta)))
        if op == "info":  # what readers and summaries look up in it
            inner = draw(st.sampled_from(["absent", "utterance_ids", *sorted(meta["info"])]))
            meta["info"][inner] = draw(JSON | st.just({"audio": {"x": 1}}))
        elif draw(st.booleans()):
            del meta[key]
        else:
            meta[key] = draw(JSON)
        arrays["meta"] = np.array(json.dumps(meta))
    return arrays


@FUZZ
@given(arrays=changed_npz(), absent=st.booleans())
def test_npz_wrong_entries(arrays, absent):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "fuzz.npz", _npz_bytes(arrays))
        mode = "absent" if absent else "raise"
        try:
            ends_well(lambda p: load_npz(p, on_nonfinite=mode), path)
        except NonFiniteError:  # pragma: no cover - a failure: absent never raises it
            raise AssertionError("on_nonfinite='absent' raised NonFiniteError") from None


# ---------------------------------------------------------------------------------------
# Conversation tables (manifests) and MELD's CSVs


def _stub(table, name: str):
    """The table's dataset with one made-up feature per utterance (its text's length, its
    media's start): what the reader gives the extractors, without running them."""
    features = {}
    for m in table.modalities:
        cells = table.cells(m)
        x = [
            len(c) if isinstance(c, str) else (c.start or 0.0) if c is not None else 0.0
            for c in cells
        ]
        features[m] = Features(
            x=np.asarray(x, dtype=np.float32).reshape(len(cells), 1),
            present=table.presence(m),
            settings={},
        )
    return table.to_dataset(name, features, source=table.source)


def read_table(path: Path):
    return _stub(read_conversation_table(path), path.stem)


TABLE_ROWS = [
    {"dialogue_id": "d1", "utterance_id": "0", "speaker": "Ann", "text": "Hello there.",
     "label": "joy", "split": "train", "audio": "a.wav", "start": "0", "end": "1.5",
     "has_text": "1", "has_audio": "1"},
    {"dialogue_id": "d1", "utterance_id": "1", "speaker": "Bob", "text": "It’s you — again…",
     "label": "anger", "split": "train", "audio": "a.wav", "start": "1.5", "end": "3",
     "has_text": "yes", "has_audio": ""},
    {"dialogue_id": "d1", "utterance_id": "3", "speaker": "Ann", "text": "",
     "label": "", "split": "train", "audio": "b.wav", "start": "", "end": "",
     "has_text": "0", "has_audio": "1"},
    {"dialogue_id": "d2", "utterance_id": "0", "speaker": "Cy", "text": "Naïve café, ok?",
     "label": "neutral", "split": "dev", "audio": "", "start": "", "end": "",
     "has_text": "", "has_audio": "0"},
    {"dialogue_id": "d2", "utterance_id": "1", "speaker": "Ann", "text": 'She said "no"',
     "label": "joy", "split": "dev", "audio": "c.wav", "start": "2", "end": "2.25",
     "has_text": "true", "has_audio": "true"},
]  # fmt: skip
CELLS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        ["", " ", "1e400", "-1", "-0", "nan", "inf", "9" * 30, "0x10", " 3 ", "１", "1_0",
         "\ufeff", '"', "\n", "\r\n", "\u2028", "\x00", "NaN", "None", "yes", "2.5", "é", "x" * 140_000]
    ),
)  # fmt: skip
ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"]


def _csv(rows: list[dict], columns: list[str], encoding: str) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding, errors="replace")


@st.composite
def changed_rows(draw, rows: list[dict], cells=CELLS) -> tuple[list[dict], list[str]]:
    """``rows`` shuffled, some dropped or repeated, cells replaced, a column left out or
    added; and the column names."""
    rows = [dict(r) for r in rows]
    columns = list(rows[0])
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cell", "cell", "shuffle", "drop", "repeat", "column", "extra"]))
        if op == "shuffle":
            rows = draw(st.permutations(rows))
        elif op == "drop" and rows:
            del rows[draw(st.integers(0, len(rows) - 1))]
        elif op == "repeat" and rows:
            rows.append(dict(draw(st.sampled_from(rows))))
        elif op == "column" and columns:
            gone = draw(st.sampled_from(columns))
            columns.remove(gone)
            rows = [{k: v for k, v in r.items() if k != gone} for r in rows]
        elif op == "extra":
            name = draw(st.sampled_from(["extra", "has_visual", "video", ""]))
            columns.append(name)
            for r in rows:
                r[name] = draw(cells)
        elif op == "cell" and rows and columns:
            rows[draw(st.integers(0, len(rows) - 1))][draw(st.sampled_from(columns))] = draw(cells)
    return rows, columns


@st.composite
def csv_files(draw, rows: list[dict]) -> bytes:
    rows, columns = draw(changed_rows(rows))
    data = _csv(rows, columns, draw(st.sampled_from(ENCODINGS)))
    return draw(mutated(data)) if draw(st.booleans()) else data


@FUZZ
@given(data=csv_files(TABLE_ROWS))
@example(data=b"")
@example(data=_csv(TABLE_ROWS, list(TABLE_ROWS[0]), "utf-8")[:40])  # the header only, cut
@example(data=_csv([], list(TABLE_ROWS[0]), "utf-8"))  # a header and no row
@example(data=_csv([{**TABLE_ROWS[0], "text": "x" * 140_000}], list(TABLE_ROWS[0]), "utf-8"))
def test_csv_manifest(data):
    with tempfile.TemporaryDirectory() as folder:
        ends_well(read_table, _write(folder, "talk.csv", data))


ODD_LINES = [
    "",
    "[1]",
    "null",
    "{",
    "1",
    '{"dialogue_id": "d1", "utterance_id": 1' + "0" * 5000 + "}",  # over int's 4,300 digits
    "[" * 5000 + "]" * 5000,  # deeper than the recursion limit
]


@st.composite
def jsonl_files(draw) -> bytes:
    rows, columns = draw(changed_rows(TABLE_ROWS, cells=CELLS | JSON))
    lines = [json.dumps({k: r[k] for k in columns if k in r}) for r in rows]
    if draw(st.booleans()):  # a line that is not an object, or blank, or too deep or long
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(ODD_LINES)))
    data = "\n".join(lines).encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    return draw(mutated(data)) if draw(st.booleans()) else data


@FUZZ
@given(data=jsonl_files())
@example(data=b"")
@example(data=b"\n\n")
@example(data=ODD_LINES[-2].encode())  # an integer of 5,000 digits
@example(data=ODD_LINES[-1].encode())  # nested 5,000 deep
@example(data=b'{"dialogue_id": "d", "utterance_id": 1e400, "speaker": "A", "text": "x"}')
@example(  # a later row of a dialogue without the split key (was a KeyError in the message)
    data=b'{"dialogue_id": "d", "utterance_id": "0", "speaker": "A", "text": "x", "split": "dev"}\n'
    b'{"dialogue_id": "d", "utterance_id": "1", "speaker": "A", "text": "y", " plit": "dev"}'
)
def test_jsonl_manifest(data):
    with tempfile.TemporaryDirectory() as folder:
        ends_well(read_table, _write(folder, "talk.jsonl", data))


MELD_HEADER = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]


def _meld_rows(first: int) -> list[dict]:
    """Rows in MELD's layout (as in its CSVs: curly quotes, an ellipsis)."""
    rows = [
        ("Oh my God, he’s lost it.", "Phoebe", "sadness", "negative", 0, 0),
        ("What?", "Monica", "surprise", "negative", 0, 1),
        ("Or! Or, we could go to the bank…", "Ross", "neutral", "neutral", 1, 0),
        ("You’re a genius!", "Chandler", "joy", "positive", 1, 1),
        ("Hey.", "Phoebe", "neutral", "neutral", 1, 3),
    ]
    return [
        dict(
            zip(
                MELD_HEADER,
                [str(first + i), *map(str, row), "4", "7", "00:20:57,256", "00:21:00,049"],
                strict=True,
            )
        )
        for i, row in enumerate(rows)
    ]


MELD_CSV = {
    split: _csv(_meld_rows(10 * i), MELD_HEADER, "utf-8") for i, split in enumerate(MELD_FILES)
}


@st.composite
def meld_folders(draw) -> tuple[str, bytes]:
    split = draw(st.sampled_from(sorted(MELD_FILES)))
    rows, columns = draw(changed_rows(_meld_rows(0)))
    data = _csv(rows, columns, draw(st.sampled_from(ENCODINGS)))
    return split, draw(mutated(data)) if draw(st.booleans()) else data


@FUZZ
@given(case=meld_folders())
@example(case=("dev", b""))
@example(case=("test", "\ufeff".encode() + MELD_CSV["test"]))
@example(case=("train", MELD_CSV["train"].decode().encode("cp1252")))
def test_meld_csvs(case):
    split, data = case
    with tempfile.TemporaryDirectory() as folder:
        for s, name in MELD_FILES.items():
            _write(folder, name, data if s == split else MELD_CSV[s])
        ds = ends_well(
            lambda p: _stub(read_meld_csv(p), "meld"), Path(folder), named=MELD_FILES[split]
        )
    if ds is not None:
        assert set(ds.splits) <= set(MELD_FILES)
        assert all(d.startswith(f"{s}/") for s, ids in ds.splits.items() for d in ids)


# ---------------------------------------------------------------------------------------
# Feature pickles crafted to exhaust the memory or crash the interpreter: refused at once


class _Reduce:
    """Pickles as ``func(*args)``, then ``state`` (set by the unpickler's BUILD)."""

    def __init__(self, func, args, state=None):
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.reduced


def _object_array_short_list():
    state = (1, (10**8,), np.dtype(object), False, [1, 2, 3])
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), state)


CRAFTED = {
    # a memo slot 2**31 ahead: the C unpickler would first grow its memo to 16 GB
    "memo": b"\x80\x02]r\xff\xff\xff\x7f.",
    "memo-put": b"]p99999999999\n.",
    # 10 GB of zeros from a 30-byte file
    "bytearray": pickle.dumps(_Reduce(bytearray, (10**10,)), protocol=4),
    # hex-encoding chained: each call doubles its input
    "codecs": b"\x80\x02c_codecs\nencode\nC\x02ab\x8c\x03hex\x86R.",
    # an object array whose list is shorter than its shape: numpy itself crashes on it
    "object-array": pickle.dumps(_object_array_short_list(), protocol=2),
    # an array of 10**11 elements allocated before its state arrives
    "reconstruct": pickle.dumps(
        _Reduce(_reconstruct, (np.ndarray, (10**11,), b"b")),
        protocol=2,
    ),
    "ndarray-called": pickle.dumps(_Reduce(np.ndarray, ((10**11,), "O")), protocol=2),
    "structured-dtype": pickle.dumps(np.zeros(2, dtype=[("a", "f4"), ("b", "O")]), protocol=2),
}


def test_crafted_pickles_are_refused_before_they_allocate(tmp_path):
    for name, data in CRAFTED.items():
        _write(str(tmp_path), f"{name}.pkl", data)
    # read in a child process with 4 GB of address space: were a guard missing, the crash
    # or the memory would be its own; one process for all, as importing torch takes seconds
    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from fusionkit.data import read_feature_pickle\n"
        "from fusionkit.errors import UnsafePickleError\n"
        "for path in sorted(Path(sys.argv[1]).glob('*.pkl')):\n"
        "    start = time.perf_counter()\n"
        "    try:\n        read_feature_pickle(path)\n"
        "    except UnsafePickleError as e:\n"
        "        print(path.name, round(time.perf_counter() - start, 1), e, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == sorted(f"{n}.pkl" for n in CRAFTED)
    for line in lines:
        name, seconds, message = line.split(" ", 2)
        assert message.startswith(f"{tmp_path / name}: ") and float(seconds) < 1, line
