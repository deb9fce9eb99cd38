"""Run configuration: dataclasses hold every default; TOML files and ``--set`` hold what differs.

A config file has the tables ``[data]`` (``source`` names a data source of
:data:`fusionkit.data.sources.SOURCES`, the other keys are that source's fields), ``[prepare]``
(modality subset, dev split, standardisation: :class:`~fusionkit.data.sources.Prepare`),
``[model]`` (any :class:`CMATHConfig` field) and ``[train]`` (:class:`TrainConfig`); see
``configs/*.toml``, shipped with the package, one per dataset kind. ``--set
section.key=value`` overrides one value, parsed as TOML (``--set model.centrals='["text"]'``;
a bare word is a string). Every value is checked against its field's type when the config is
built, and an error names the key. Data-derived values (modality widths, classes, speakers)
are not config keys: the model takes them from the data (:class:`DataSpec`).
"""

from __future__ import annotations

import sys
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Literal

from beartype import BeartypeConf
from beartype.door import is_bearable

from fusionkit.data.sources import SOURCES, Prepare, Source, Synthetic
from fusionkit.errors import ConfigError
from fusionkit.models.cmath.model import CMATHConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).parent / "configs"


def config_names() -> list[str]:
    """The configurations shipped with the package (``configs/*.toml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


@dataclass
class TrainConfig:
    """How a model is trained: the budget, the schedule, the optimizer, the checkpoints.

    The defaults are fusionkit's recipe for data nobody tuned for (docs/results.md,
    "The default recipe"): AdamW, a linear warmup over ``warmup`` of the steps then a
    cosine to 0, a budget in optimizer steps, early stopping on dev weighted F1 after
    ``patience`` epochs without a better one (0: never), the best epoch's weights kept.
    The budget: ``epochs`` when set (the field's published configurations count epochs),
    else ``steps`` when set, else 20 epochs' worth of steps, at least 500 and at most 3,000
    (:func:`fusionkit.models.cmath.train.budget`); rounded up to whole epochs.
    """

    epochs: int | None = None
    steps: int | None = None
    patience: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup: float = 0.05  # share of the steps
    weight_decay: float = 1e-2
    optimizer: Literal["adam", "adamw"] = "adamw"
    grad_clip: float = 1.0
    class_weights: bool = True  # inverse class frequencies of the training split
    bucket: bool = False  # batches of dialogues of similar length (order shuffled per epoch)
    seeds: list[int] = field(default_factory=lambda: [0])
    amp: bool = True  # mixed precision, on CUDA only
    compile: bool = False
    deterministic: bool = True
    device: str = "auto"
    probe: bool = False  # also fit a per-utterance linear probe on the same features
    save_every: int = 10  # epochs between resumable states (state.pt); also at the end

    def __post_init__(self):
        positive = {"batch_size": self.batch_size, "save_every": self.save_every, "lr": self.lr}
        positive.update(
            {k: v for k, v in (("epochs", self.epochs), ("steps", self.steps)) if v is not None}
        )
        bad = {k: v for k, v in positive.items() if v <= 0}
        if bad:
            raise ConfigError(f"train: expected > 0, got {bad}")
        if self.patience < 0 or not 0.0 <= self.warmup < 1.0:
            raise ConfigError(
                f"train: patience >= 0 and warmup in [0, 1) expected, got {self.patience}, {self.warmup}"
            )


@dataclass
class RunConfig:
    data: Source = field(default_factory=Synthetic)
    prepare: Prepare = field(default_factory=Prepare)
    model: CMATHConfig = field(default_factory=CMATHConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Nested dicts (what a TOML file holds; ``data.source`` names the source)."""
        return {
            "data": {"source": self.data.name, **asdict(self.data)},
            "prepare": asdict(self.prepare),
            "model": asdict(self.model),
            "train": asdict(self.train),
        }


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
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a table of keys, got {raw!r}")
    raw = dict(raw)
    data = dict(raw.pop("data", {}))
    name = data.pop("source", Synthetic.name)
    if name not in SOURCES:
        raise ConfigError(f"data.source: unknown {name!r}; known: {sorted(SOURCES)}")
    config = build(RunConfig, raw)
    return replace(config, data=build(SOURCES[name], data, "data"))


def load_config(name: str | Path | None) -> RunConfig:
    """Read a TOML file (a bare name is one of :func:`config_names`); None gives the defaults."""
    if name is None:
        return RunConfig()
    path = Path(name)
    if not path.exists() and (CONFIG_DIR / f"{name}.toml").exists():
        path = CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"--config {name}: no such file, nor a config name among {config_names()}"
        )
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from None
    try:
        return from_dict(raw)
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
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None


def with_model(config: RunConfig, **changes) -> RunConfig:
    return replace(config, model=replace(config.model, **changes))
