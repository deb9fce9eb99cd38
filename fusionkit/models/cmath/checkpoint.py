"""Self-sufficient checkpoints: weights, configuration, data spec, standardisation, features.

``best.pt`` holds all that predicting on new conversations needs: the run configuration,
the :class:`~fusionkit.models.cmath.model.DataSpec` (modality widths, label names,
speakers), the training split's standardisation statistics and the feature extraction
settings the data reported. ``state.pt`` adds what resuming needs (optimizer, scheduler,
random state, history). Both load with ``torch.load(..., weights_only=True)``: nothing in
them runs code. :func:`restore` gives the model back, with a reader of its own kind of data.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fusionkit.data import ConversationDataset
from fusionkit.data.dataset import Stats
from fusionkit.errors import CheckpointError, ConfigError, MissingFileError
from fusionkit.models.cmath.config import RunConfig, from_dict
from fusionkit.models.cmath.model import CMATH, DataSpec

FORMAT = "fusionkit-cmath-checkpoint"
VERSION = 3  # 3: the model's shortcut and input dropout; 2: [data] names a source, [prepare]
# apart. Earlier versions cannot be read: retrain


def payload(
    model: CMATH, config: RunConfig, stats: Stats | None, ds: ConversationDataset, **extra
) -> dict:
    """What every checkpoint holds, plus ``extra`` entries (epoch, optimizer state, ...)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "config": config.to_dict(),
        "spec": dataclasses.asdict(model.spec),
        "standardization": None
        if stats is None
        else {
            m: {"mean": torch.from_numpy(mu), "std": torch.from_numpy(sd)}
            for m, (mu, sd) in stats.items()
        },
        "features": ds.info.get("extraction", {}),
        **extra,
    }


def save(obj: dict, path: Path) -> None:
    """Write atomically: a temporary file, then a rename over the previous one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path}: no such file")
    if zipfile.is_zipfile(path):  # torch.load does not check the entries' CRCs
        try:
            bad = zipfile.ZipFile(path).testzip()
        except Exception as e:  # a damaged central directory or compressed entry
            bad = f"({type(e).__name__})"
        if bad is not None:
            raise CheckpointError(f"checkpoint {path}: entry {bad} is corrupted (CRC mismatch)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load fails in many ways on foreign or cut bytes
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"checkpoint {path}: not readable as a torch checkpoint (truncated, or another kind of file): {type(e).__name__}: {first}"
        ) from None
    tag = ckpt.get("format") if isinstance(ckpt, dict) else None
    if not isinstance(tag, str) or tag != FORMAT:
        raise CheckpointError(
            f"checkpoint {path}: not a fusionkit CMATH checkpoint (no {FORMAT!r} format tag)"
        )
    version = ckpt.get("version")
    if type(version) is not int or version != VERSION:
        shown = " ".join(repr(version).split())[:40]
        raise CheckpointError(
            f"checkpoint {path}: format version {shown}, this fusionkit reads "
            f"version {VERSION}: retrain the model with this version"
        )
    return ckpt


@dataclass(frozen=True)
class Restored:
    """A checkpoint's model (eval mode, on the CPU), run configuration, standardisation
    statistics and feature extraction settings."""

    model: CMATH
    config: RunConfig
    stats: Stats | None
    features: dict

    def reader(
        self, path: str | None = None, *, standardize: bool = True
    ) -> Callable[[], ConversationDataset]:
        """How to read data for this model: its own source (``path`` replaces the
        source's file or folder), features made with its extraction settings and read in
        its label order; call the result for the dataset, prepared as in training
        (modality subset, dev split, and with ``standardize`` its standardisation)."""
        source = self.config.data
        if path is not None:
            if "path" not in {f.name for f in dataclasses.fields(source)}:
                raise ConfigError(f"--data {path}: the {source.name!r} source reads no file")
            source = replace(source, path=path)
        read = source.reader_for(self.features, list(self.model.spec.label_names))
        prepare = self.config.prepare
        if standardize:
            return lambda: prepare(read(), self.stats)[0]
        return lambda: prepare.split(read())


def restore(path: str | Path) -> Restored:
    """The model and what it was trained with, from the checkpoint at ``path``; contents
    that do not make that model (missing entries, wrong shapes, non-finite weights or
    statistics) are a :class:`CheckpointError` naming the file."""
    ckpt = load(path)
    try:
        config = from_dict(ckpt["config"])
        model = CMATH(config.model, DataSpec(**ckpt["spec"]), ckpt["model"].get("class_weights"))
        model.load_state_dict(ckpt["model"])
        raw = ckpt["standardization"]
        stats = (
            None
            if raw is None
            else {m: (s["mean"].numpy(), s["std"].numpy()) for m, s in raw.items()}
        )
    except (KeyError, IndexError, AttributeError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a usable CMATH checkpoint: {first}"
        ) from None
    bad = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    for m, (mean, std) in (stats or {}).items():
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            bad.append(f"standardization[{m}]")
    if bad:
        raise CheckpointError(f"checkpoint {path}: non-finite or zero values in {bad[:5]}")
    return Restored(model.eval(), config, stats, ckpt.get("features", {}))
