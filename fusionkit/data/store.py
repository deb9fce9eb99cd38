"""fusionkit's own on-disk format for conversation datasets: one ``.npz`` file, no pickle.

Arrays: ``features/<modality>`` (N, d_m) float32 with every utterance of every dialogue in
order, ``presence/<modality>`` (N,) bool where some utterance lacks that modality,
``speakers`` and ``labels`` (N,) int64, ``offsets`` (D + 1,) int64 (dialogue i holds rows
``offsets[i]:offsets[i+1]``), and ``meta``: a JSON string with the format name and version,
dataset name, label names, dialogue ids, splits, number of speakers, source and info.
Entries are read with ``allow_pickle=False`` (nothing in the file can run code), each
header checked before its data are (a corrupted shape cannot make numpy allocate more than
the entry holds), and every array and metadata field checked against the others: a file
that is cut short, corrupted or not of this format is a
:class:`~fusionkit.errors.DataError` naming it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fusionkit.batch import IGNORE_INDEX, Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.finite import OnNonFinite, finite_dataset
from fusionkit.errors import ConfigError, DataError, MissingFileError, UserError

FORMAT = "fusionkit-conversations"
VERSION = 1


def save_npz(
    dataset: ConversationDataset, path: str | Path, *, extra_meta: dict | None = None
) -> Path:
    """Write ``dataset`` to ``path`` (atomically: a temporary file, then a rename)."""
    path = Path(path)
    ids = list(dataset.dialogues)
    dialogues = [dataset.dialogues[i] for i in ids]
    offsets = np.cumsum([0] + [len(d) for d in dialogues]).astype(np.int64)
    arrays = {
        f"features/{m}": np.concatenate(
            [np.asarray(d.features[m], dtype=np.float32) for d in dialogues]
        )
        for m in dataset.modalities
    }
    for m in dataset.modalities:  # only where something is absent: old files stay as they were
        present = np.concatenate([d.present(m) for d in dialogues])
        if not present.all():
            arrays[f"presence/{m}"] = present
    arrays["speakers"] = np.concatenate([np.asarray(d.speakers, dtype=np.int64) for d in dialogues])
    arrays["labels"] = np.concatenate([np.asarray(d.labels, dtype=np.int64) for d in dialogues])
    arrays["offsets"] = offsets
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "name": dataset.name,
        "label_names": dataset.label_names,
        "dialogue_ids": ids,
        "splits": dataset.splits,
        "num_speakers": dataset.num_speakers,
        "source": dataset.source,
        "info": dataset.info,
        **(extra_meta or {}),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fail(path: str | Path, why: str) -> DataError:
    return DataError(f"{path}: not a fusionkit dataset file (an .npz written by save_npz): {why}")


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | Path) -> np.ndarray:
    """One ``.npy`` entry; its header is checked first, so that a corrupted shape cannot make
    numpy allocate more than the entry holds, and object arrays are refused unread."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _fail(path, f"entry {info.filename!r} has .npy format version {version}")
    if dtype.hasobject:
        raise _fail(path, f"entry {info.filename!r} holds Python objects (dtype {dtype})")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise _fail(path, f"entry {info.filename!r} declares shape {shape} but is too short")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_arrays(path: str | Path, only: str | None = None) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path`` (or the one named ``only``) by name (without
    ``.npy``), read and checked."""
    if not Path(path).exists():
        raise MissingFileError(f"{path}: dataset file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            arrays = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise _fail(path, f"entry {info.filename!r} is not an array")
                if only is None or info.filename == f"{only}.npy":
                    arrays[info.filename[:-4]] = _read_entry(zf, info, path)
    except UserError:
        raise
    except (OSError, EOFError, ValueError, TypeError, SyntaxError, KeyError, IndexError,
            OverflowError, MemoryError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as e:  # fmt: skip
        # zipfile and numpy fail in many ways on cut or corrupted bytes
        raise _fail(path, _first(e)) from None
    return arrays


def _meta(arrays: dict[str, np.ndarray], path: str | Path) -> dict:
    """The JSON metadata entry, its format and version checked."""
    raw = arrays.get("meta")
    if raw is None:
        raise _fail(path, f"no 'meta' entry; found {sorted(arrays)[:5]}")
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise _fail(path, f"'meta' is not a string (dtype {raw.dtype}, shape {raw.shape})")
    try:
        meta = json.loads(str(raw))
    except (ValueError, RecursionError) as e:
        raise _fail(path, f"'meta' is not JSON ({_first(e)})") from None
    if not isinstance(meta, dict):
        raise _fail(path, f"'meta' is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(
            f"{path}: format {meta.get('format')!r:.60} v{meta.get('version')!r:.20}, "
            f"expected {FORMAT!r} v{VERSION}"
        )
    return meta


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a fusionkit ``.npz`` file (a clear error for any other file)."""
    return _meta(_read_arrays(path, only="meta"), path)


_META_TYPES = {
    "name": str,
    "label_names": list,
    "dialogue_ids": list,
    "splits": dict,
    "num_speakers": int,
    "source": str,
    "info": dict,
}


def _check_meta(meta: dict, path: str | Path) -> None:
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise DataError(f"{path}: meta {key!r} is not a {kind.__name__}: {meta.get(key)!r:.60}")
    for key in ("label_names", "dialogue_ids"):
        if not all(isinstance(x, str) for x in meta[key]):
            raise DataError(f"{path}: meta {key!r} holds something other than strings")
        if len(set(meta[key])) != len(meta[key]):
            raise DataError(f"{path}: meta {key!r} repeats a name")
    if not meta["dialogue_ids"] or meta["num_speakers"] < 1:
        raise DataError(f"{path}: no dialogues or no speakers")
    absent = meta["info"].get("absent", {})
    if not isinstance(absent, dict) or not all(
        isinstance(why, dict) and all(type(n) is int for n in why.values())
        for why in absent.values()
    ):
        raise DataError(f"{path}: meta info 'absent' is not modality -> reason -> count")
    known = set(meta["dialogue_ids"])
    for split, ids in meta["splits"].items():
        if not isinstance(ids, list) or not all(isinstance(i, str) and i in known for i in ids):
            raise DataError(f"{path}: split {split!r:.40} names dialogues the file does not hold")


def _vector(arrays: dict[str, np.ndarray], name: str, kinds: str, n: int, path) -> np.ndarray:
    x = arrays.get(name)
    if x is None:
        raise _fail(path, f"no {name!r} entry")
    if x.ndim != 1 or x.dtype.kind not in kinds or len(x) != n:
        raise DataError(f"{path}: {name!r} is {x.dtype} {x.shape}, expected ({n},) of {kinds!r}")
    return x


def load_npz(
    path: str | Path, *, on_nonfinite: OnNonFinite | None = "raise"
) -> ConversationDataset:
    """Read a dataset written by :func:`save_npz`.

    ``on_nonfinite``: NaN or infinity in an utterance's features: ``"raise"`` a
    :class:`~fusionkit.errors.NonFiniteError` naming the file, dialogue, utterance and
    modality; ``"absent"``: that utterance lacks that modality (counted in
    ``info["absent"]``); None: not checked (a cache of raw features, checked when a dataset
    is made from them). Anything else in the file that cannot be used is a
    :class:`~fusionkit.errors.DataError` naming it.
    """
    if on_nonfinite not in ("raise", "absent", None):
        raise ConfigError(f"on_nonfinite: expected 'raise' or 'absent', got {on_nonfinite!r}")
    arrays = _read_arrays(path)
    meta = _meta(arrays, path)
    _check_meta(meta, path)
    ids = meta["dialogue_ids"]
    offsets = _vector(arrays, "offsets", "iu", len(ids) + 1, path).astype(np.int64)
    total = int(offsets[-1])
    if offsets[0] != 0 or (np.diff(offsets) < 1).any():
        raise DataError(f"{path}: 'offsets' must start at 0 and increase (no empty dialogue)")
    speakers = _vector(arrays, "speakers", "iu", total, path).astype(np.int64)
    labels = _vector(arrays, "labels", "iu", total, path).astype(np.int64)
    if total and (speakers.min() < 0 or speakers.max() >= meta["num_speakers"]):
        raise DataError(f"{path}: speaker ids outside 0..{meta['num_speakers'] - 1}")
    num_labels = len(meta["label_names"])
    if ((labels < 0) & (labels != IGNORE_INDEX) | (labels >= num_labels)).any():
        raise DataError(f"{path}: labels outside 0..{num_labels - 1} (and {IGNORE_INDEX})")
    feats, presence = {}, {}
    for name, x in arrays.items():
        kind, _, modality = name.partition("/")
        if kind == "features" and modality:
            if x.ndim != 2 or len(x) != total or x.dtype.kind not in "fiub":
                raise DataError(
                    f"{path}: {name!r} is {x.dtype} {x.shape}, expected ({total}, width) numbers"
                )
            with np.errstate(over="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                feats[modality] = x.astype(np.float32, copy=False)
        elif kind == "presence" and modality:
            presence[modality] = _vector(arrays, name, "b", total, path)
        elif name not in ("meta", "offsets", "speakers", "labels"):
            raise _fail(path, f"unknown entry {name!r}")
    if not feats or set(presence) - set(feats):
        raise DataError(
            f"{path}: features for {sorted(feats)}, presence for {sorted(presence)}: "
            "expected at least one modality, and presence only for those"
        )
    dialogues = {}
    for i, did in enumerate(ids):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        dialogues[did] = Dialogue(
            id=did,
            features={m: x[lo:hi] for m, x in feats.items()},
            speakers=speakers[lo:hi],
            labels=labels[lo:hi],
            presence={m: p[lo:hi] for m, p in presence.items()},
        )
    dataset = ConversationDataset(
        name=meta["name"],
        dialogues=dialogues,
        splits={k: list(v) for k, v in meta["splits"].items()},
        label_names=list(meta["label_names"]),
        num_speakers=int(meta["num_speakers"]),
        source=f"{Path(path).name} (fusionkit npz; converted from: {meta['source']})",
        info=meta["info"],
    )
    names = meta["info"].get("utterance_ids")
    names = (
        {k: [f"id {u}" for u in v] for k, v in names.items() if isinstance(v, list)}
        if isinstance(names, dict)
        else None
    )
    return finite_dataset(
        dataset, where=str(path), on_nonfinite=on_nonfinite, utterance_names=names
    )
