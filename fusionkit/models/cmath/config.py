"""Run configuration: dataclasses hold every default; TOML files and ``--set`` hold what differs.

A config file has up to three tables, ``[data]``, ``[model]`` (any :class:`CMATHConfig`
field) and ``[train]``, and ``[data.synthetic]`` for the generator's parameters
(:class:`~fusionkit.data.SyntheticConversations`); see ``configs/*.toml``, one per dataset
kind. ``--set section.key=value`` overrides one value, parsed as TOML
(``--set model.centrals='["text"]'``; a bare word is a string). Every value is checked
against its field's type when the config is built, and an error names the key.
Data-derived values (modality widths, classes, speakers) are not config keys: the model
takes them from the data (:class:`examples.cmath.model.DataSpec`).
"""

from __future__ import annotations

import sys
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Literal

from beartype import BeartypeConf
from beartype.door import is_bearable

from examples.cmath.model import CMATHConfig
from fusionkit.data import AudioFeatures, SyntheticConversations, TextFeatures
from fusionkit.data.finetune import FineTune
from fusionkit.data.text import DEFAULT_ENCODER

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).parent / "configs"
DATASETS = ("synthetic", "iemocap", "meld", "npz", "meld-csv", "table")


class ConfigError(ValueError):
    """A configuration that cannot be used as it is: the message names the key."""


@dataclass
class DataConfig:
    """Which data: ``dataset`` is synthetic, iemocap or meld (feature pickles), npz
    (fusionkit's format), meld-csv (MELD's transcripts) or table (a manifest of your own
    conversations: text and audio, docs/own-conversations.md)."""

    dataset: Literal["synthetic", "iemocap", "meld", "npz", "meld-csv", "table"] = "synthetic"
    path: str | None = None
    modalities: list[str] | None = None  # None: every modality the data has
    text_layer: int | Literal["mean"] = 0  # RoBERTa layer of the 4-layer pickles, or "mean"
    dev_fraction: float = 0.1  # used when the data has no dev split
    dev_seed: int = 0
    standardize: bool = True  # per-feature mean/std of the training split
    synthetic: SyntheticConversations = field(default_factory=SyntheticConversations)
    # meld-csv and table: features made from text and audio, cached in cache_dir
    label_names: list[str] | None = None  # table: the model's label order (None: sorted)
    text_encoder: str = DEFAULT_ENCODER  # a sentence-transformers model name or folder
    finetune: bool = False  # fine-tune the encoder on the train split's labels first
    fine_tuning: FineTune = field(default_factory=FineTune)  # [data.fine_tuning]
    audio_features: Literal["eGeMAPSv02", "emobase", "ComParE_2016", "IS10", "none"] = "eGeMAPSv02"
    on_error: Literal["raise", "absent"] = "raise"  # unusable audio: an error, or absent
    cache_dir: str | None = None  # default: .fusionkit-cache (meld-csv: here; table: beside it)
    limit_dialogues: int | None = None  # meld-csv: first N dialogues of each split (quick runs)

    def text_features(self) -> TextFeatures:
        """How text features are made: the encoder, fine-tuned or frozen."""
        return TextFeatures(self.text_encoder, finetune=self.fine_tuning if self.finetune else None)

    def audio(self) -> AudioFeatures | None:
        return None if self.audio_features == "none" else AudioFeatures(self.audio_features)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: Literal["adam", "adamw"] = "adam"
    grad_clip: float = 1.0
    class_weights: bool = True  # inverse class frequencies of the training split
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


_TYPES = BeartypeConf(is_pep484_tower=True)  # an integer is a valid float


def _type_name(hint: object) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def build(cls: type, values: dict, where: str = ""):
    """An instance of dataclass ``cls`` from ``values``, each key known and each value of
    its field's type (nested dataclasses from nested tables); ``where`` prefixes key names."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a table of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown keys {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint, key = hints[name], f"{where}.{name}" if where else name
        if is_dataclass(hint):
            kwargs[name] = build(hint, value, key)
        elif not is_bearable(value, hint, conf=_TYPES):
            raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
        else:
            kwargs[name] = float(value) if hint is float else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def from_dict(raw: dict) -> RunConfig:
    """A checked RunConfig from nested dicts (a TOML file's, or a checkpoint's)."""
    return build(RunConfig, raw)


def load_config(name: str | Path | None) -> RunConfig:
    """Read a TOML file (a bare name is looked up in ``configs/``); None gives the defaults."""
    if name is None:
        return RunConfig()
    path = Path(name)
    if not path.exists() and (CONFIG_DIR / f"{name}.toml").exists():
        path = CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        raise ConfigError(f"--config {name}: no such file, nor a config name among {names}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from None
    try:
        return build(RunConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None


def override(config: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply ``section.key=value`` assignments (values parsed as TOML)."""
    raw = config.to_dict()
    for item in assignments:
        key, sep, value = item.partition("=")
        *path, name = key.split(".")
        table = raw
        for part in path:
            table = table.get(part) if isinstance(table, dict) else None
        if not sep or not path or not isinstance(table, dict) or name not in table:
            raise ConfigError(
                f"--set {item!r}: expected section.key=value with a known key, e.g. model.hidden_dim=64"
            )
        try:
            table[name] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            table[name] = value  # a bare string
    try:
        return build(RunConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None


def with_model(config: RunConfig, **changes) -> RunConfig:
    return replace(config, model=replace(config.model, **changes))
