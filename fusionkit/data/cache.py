"""Feature caches: one fusionkit ``.npz`` file (:mod:`fusionkit.data.store`) per table,
modality and settings, reused only when it was made from the same inputs. Only features,
presence and extraction settings are taken from a cache: labels, splits and speakers always
come from the table as it is now.

A cache's metadata holds, under ``"cache"``, its ``identity`` (settings and utterance keys,
which also name the file) and its ``content`` (what the inputs held when it was made: a hash
of the texts, the audio files' sizes and modification times, library versions). A file whose
metadata differs is reported as stale, rebuilt and replaced, never reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusionkit.data.store import load_npz, read_meta, save_npz
from fusionkit.data.tables import ConversationTable, Features


def fingerprint(path: Path) -> list[int] | None:
    """[size, modification time in ns] of a file (what a cache of its features is keyed
    on); None if it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def slug(name: str, length: int = 60) -> str:
    """``name`` (an encoder id or folder) as a file-name part: letters and digits kept,
    the rest dashes, its last ``length`` characters."""
    return "".join(c if c.isalnum() else "-" for c in name)[-length:]


def digest(obj: object) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _differences(old: dict, new: dict) -> str:
    """What differs between two cache records, briefly."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed = sorted(x for x in set(a) | set(b) if a.get(x) != b.get(x))
            parts.append(f"{k}: {len(changed)} changed, e.g. {changed[0]}")
        elif isinstance(a, list | dict) or isinstance(b, list | dict):
            parts.append(f"{k} differ")
        else:
            parts.append(f"{k} {a!r} != {b!r}")
    return "; ".join(parts)


def _stale(path: Path, record: dict) -> str | None:
    """None if the cache at ``path`` was made from ``record``, else why not."""
    try:
        meta = read_meta(path)
    except Exception as e:  # unreadable, or not ours
        return f"unreadable ({e})"
    old = meta.get("cache")
    if not isinstance(old, dict):
        return "no cache record"
    return _differences(old, record) or None


def cached_features(
    table: ConversationTable,
    modality: str,
    cache_dir: str | Path | None,
    stem: str,
    identity: dict,
    content: dict,
    build: Callable[[], Features],
    *,
    what: str,
) -> Features:
    """``build()``'s :class:`Features` of ``modality`` for every utterance of ``table``, read
    from the cache when it was made from the same ``identity`` and ``content``, else built
    and written there (a stale file is reported and replaced). ``cache_dir=None``: no
    cache. ``what`` names the features in the report."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{stem}-{digest(identity)[:12]}.npz"
    record = json.loads(json.dumps({**identity, **content}))  # as read back: lists, str keys
    if path.exists():
        why = _stale(path, record)
        if why is None:
            ds = load_npz(path, on_nonfinite=None)  # raw features: checked by the reader
            parts = [ds.dialogues[d.id] for d in table.dialogues]
            return Features(
                x=np.concatenate([d.features[modality] for d in parts]),
                present=np.concatenate([d.present(modality) for d in parts]),
                settings=ds.info["extraction"][modality],
                errors=tuple(ds.info["errors"]),
            )
        print(f"{what} cache {path} is stale ({why}): rebuilding")
    features = build()
    dataset = table.to_dataset(
        stem, {modality: features}, source=f"{what} cache", on_nonfinite=None
    )
    save_npz(dataset, path, extra_meta={"cache": record})
    return features
