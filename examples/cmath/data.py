"""The dataset a run configuration names: read, modality subset, dev split, standardisation."""

from __future__ import annotations

from pathlib import Path

from examples.cmath.config import DataConfig
from fusionkit.data import ConversationDataset, load_npz, manifest_dataset, read_feature_pickle
from fusionkit.data.dataset import Stats


def _path(cfg: DataConfig, *, folder: bool = False) -> Path:
    if cfg.path is None:
        raise ValueError(
            f"--data: a {'folder' if folder else 'file'} is needed for dataset {cfg.dataset!r}"
        )
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such {'folder' if folder else 'file'}")
    if folder != path.is_dir():
        raise ValueError(
            f"--data {path}: expected a {'folder' if folder else 'file'} for {cfg.dataset!r}"
        )
    return path


def read_dataset(cfg: DataConfig) -> ConversationDataset:
    """The dataset as read, before any split or standardisation."""
    if cfg.dataset == "synthetic":
        return cfg.synthetic.build()
    if cfg.dataset in ("iemocap", "meld"):
        ds = read_feature_pickle(_path(cfg), text=cfg.text_layer)
        if ds.name != cfg.dataset:
            raise ValueError(
                f"--dataset {cfg.dataset}: {cfg.path} holds {ds.name} features ({ds.source})"
            )
        return ds
    if cfg.dataset == "npz":
        return load_npz(_path(cfg))
    if cfg.dataset == "meld-csv":
        from fusionkit.data.text import meld_text_dataset

        text = cfg.text_features()
        return meld_text_dataset(
            _path(cfg, folder=True),
            encoder=text.encoder,
            finetune=text.finetune,
            cache_dir=cfg.cache_dir,
            limit_dialogues=cfg.limit_dialogues,
        )
    if cfg.dataset == "table":
        return manifest_dataset(
            _path(cfg),
            label_names=cfg.label_names,
            text=cfg.text_features(),
            audio=cfg.audio(),
            cache_dir=cfg.cache_dir,
            on_error=cfg.on_error,
        )
    raise ValueError(f"dataset: unknown {cfg.dataset!r}")


def split(ds: ConversationDataset, cfg: DataConfig) -> ConversationDataset:
    """The configured modality subset, and a seeded dev split if the data have none."""
    if cfg.modalities is not None:
        ds = ds.select_modalities(cfg.modalities)
    return ds.with_dev_split(cfg.dev_fraction, seed=cfg.dev_seed) if "train" in ds.splits else ds


def prepare(
    ds: ConversationDataset, cfg: DataConfig, stats: Stats | None = None
) -> tuple[ConversationDataset, Stats | None]:
    """:func:`split`, then standardisation by ``stats`` (default: the training split's);
    returns the dataset and the statistics used (None if ``standardize`` is off)."""
    ds = split(ds, cfg)
    if not cfg.standardize:
        return ds, None
    stats = ds.standardization("train") if stats is None else stats
    return ds.standardized(stats=stats), stats


def load_data(cfg: DataConfig) -> tuple[ConversationDataset, Stats | None]:
    """:func:`read_dataset`, then :func:`prepare` with the training split's statistics."""
    return prepare(read_dataset(cfg), cfg)
