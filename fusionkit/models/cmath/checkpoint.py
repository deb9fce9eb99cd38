"""Self-sufficient checkpoints: weights, configuration, data spec, standardisation, features.

A checkpoint holds all that predicting on new conversations needs: the run configuration,
the :class:`~examples.cmath.model.DataSpec` (modality widths, label names, speakers), the
training split's standardisation statistics and the feature extraction settings the data
reported. It loads with ``torch.load(..., weights_only=True)``: nothing in it runs code.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from examples.cmath.config import ConfigError, RunConfig, from_dict
from examples.cmath.data import Stats
from examples.cmath.model import CMATH, DataSpec

FORMAT = "fusionkit-cmath-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable CMATH checkpoint: the message names the file."""


def payload(model: CMATH, config: RunConfig, stats: Stats | None, features: dict, **extra) -> dict:
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
        "features": features,
        **extra,
    }


def save(obj: dict, path: Path) -> None:
    """Write atomically: a temporary file, then a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load fails in many ways on foreign or cut bytes
        first = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        raise CheckpointError(
            f"checkpoint {path}: not readable as a torch checkpoint (truncated, or another kind of file): {first}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path}: not a fusionkit CMATH checkpoint (no {FORMAT!r} format tag)"
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {ckpt.get('version')}, this code reads {VERSION}"
        )
    return ckpt


def restore(ckpt: dict) -> tuple[CMATH, RunConfig, Stats | None]:
    """The model (eval mode, on the CPU), run configuration and statistics of a checkpoint."""
    try:
        config = from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config: {e}") from None
    model = CMATH(config.model, DataSpec(**ckpt["spec"]), ckpt["model"].get("class_weights"))
    model.load_state_dict(ckpt["model"])
    raw = ckpt["standardization"]
    stats = (
        None if raw is None else {m: (s["mean"].numpy(), s["std"].numpy()) for m, s in raw.items()}
    )
    return model.eval(), config, stats
