"""fusionkit's own on-disk format for conversation datasets: one ``.npz`` file, no pickle.

Arrays: ``features/<modality>`` (N, d_m) float32 with every utterance of every dialogue in
order, ``presence/<modality>`` (N,) bool where some utterance lacks that modality, ``speakers`` and ``labels`` (N,) int64, ``offsets`` (D + 1,) int64 (dialogue i holds
rows ``offsets[i]:offsets[i+1]``), and ``meta``: a JSON string with the format name and
version, dataset name, label names, dialogue ids, splits, number of speakers, source and
info. ``np.load(..., allow_pickle=False)`` reads it: nothing in it can run code.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset

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


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a fusionkit ``.npz`` file (a clear error for any other file)."""
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a zip archive")
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise ValueError(f"no 'meta' entry; found {z.files[:5]}")
            meta = json.loads(str(z["meta"]))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{path}: not a fusionkit dataset file (an .npz written by save_npz): {first}"
        ) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} v{meta.get('version')}, expected {FORMAT!r} v{VERSION}"
        )
    return meta


def load_npz(path: str | Path) -> ConversationDataset:
    """Read a dataset written by :func:`save_npz`."""
    meta = read_meta(path)
    with np.load(path, allow_pickle=False) as z:
        feats = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("features/")}
        presence = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("presence/")}
        speakers, labels, offsets = z["speakers"], z["labels"], z["offsets"]
    dialogues = {}
    for i, did in enumerate(meta["dialogue_ids"]):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        dialogues[did] = Dialogue(
            id=did,
            features={m: x[lo:hi] for m, x in feats.items()},
            speakers=speakers[lo:hi],
            labels=labels[lo:hi],
            presence={m: p[lo:hi] for m, p in presence.items()},
        )
    return ConversationDataset(
        name=meta["name"],
        dialogues=dialogues,
        splits={k: list(v) for k, v in meta["splits"].items()},
        label_names=list(meta["label_names"]),
        num_speakers=int(meta["num_speakers"]),
        source=f"{Path(path).name} (fusionkit npz; converted from: {meta['source']})",
        info=meta["info"],
    )
