"""A search over the settings that matter, with Optuna: TPE sampling, trials pruned on dev
weighted F1 as they train, a budget in trials or minutes, scored on dev only.

Each trial trains the configuration with the sampled settings (:data:`SPACE`; the first
trial: the configuration's own values) for ``seeds`` seeds from the configuration's first;
its score is the mean over seeds of the best dev weighted F1 of their epochs (test figures
are never looked at). The study lives in a database: an SQLite file by default, or any URL
Optuna's storage takes (``postgresql://...``), so that several processes or machines can
share one study by naming the same ``--storage`` and ``--study``. Written to the output
folder: ``best.toml`` (a configuration ``fusionkit train --config`` reads), ``trials.csv``
and ``importance.png``.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fusionkit.data import ConversationDataset
from fusionkit.data.dataset import Stats
from fusionkit.errors import ConfigError
from fusionkit.models.cmath.config import RunConfig
from fusionkit.models.cmath.report import pyplot
from fusionkit.models.cmath.train import fit


@dataclass(frozen=True)
class Range:
    """A float setting's search range (log-uniform with ``log``)."""

    low: float
    high: float
    log: bool = False


SPACE: dict[str, Range | tuple] = {
    "train.lr": Range(1e-4, 3e-3, log=True),
    "train.weight_decay": Range(1e-5, 1e-1, log=True),
    "model.dropout": Range(0.0, 0.6),
    "model.input_dropout": Range(0.0, 0.6),
    "model.shortcut": (True, False),
    "model.hidden_dim": (32, 64, 128, 256),
    "model.modality_dropout": Range(0.0, 0.5),
    "model.alpha": Range(1e-4, 1e-2, log=True),
    "model.beta": Range(1e-3, 1e-1, log=True),
    "model.gamma": Range(0.1, 3.0, log=True),
}
"""Config key -> its range, or its choices: learning rate, weight decay, dropout, input
dropout, the shortcut, hidden width, modality dropout and the loss weights (reconstruction
alpha, KL beta, distillation gamma)."""


def suggest(trial, key: str):
    """``trial``'s value for the setting ``key`` of :data:`SPACE`."""
    where = SPACE[key]
    if isinstance(where, Range):
        return trial.suggest_float(key, where.low, where.high, log=where.log)
    return trial.suggest_categorical(key, list(where))


def base_params(config: RunConfig, space: tuple[str, ...]) -> dict:
    """``config``'s own values of the settings in ``space`` that lie in their range or
    among their choices: the study's first trial, so the search starts from the recipe."""
    out = {}
    for key in space:
        section, name = key.split(".")
        value, where = getattr(getattr(config, section), name), SPACE[key]
        if where.low <= value <= where.high if isinstance(where, Range) else value in where:
            out[key] = value
    return out


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise ImportError("fusionkit tune needs the 'tune' extra: pip install -e '.[tune]'") from e
    return optuna


def with_params(config: RunConfig, params: dict) -> RunConfig:
    """``config`` with ``section.key`` values of ``params`` set."""
    sections: dict[str, dict] = {}
    for key, value in params.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return replace(config, **{s: replace(getattr(config, s), **v) for s, v in sections.items()})


def storage_for(url: str | None, out: Path):
    """Optuna storage at ``url`` (default: ``study.db`` in ``out``); SQLite waits for a
    lock held by another process instead of failing at once."""
    optuna = _optuna()
    url = url or f"sqlite:///{(out / 'study.db').absolute()}"
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _create(optuna, name: str, url: str | None, out: Path, sampler, pruner, attempts: int = 5):
    """The study ``name`` in the storage at ``url``, created or joined. Processes started
    together race to create the database's tables (SQLAlchemy's OperationalError or
    IntegrityError: locked, exists, UNIQUE): the loser waits and connects again."""

    def create():
        return optuna.create_study(
            study_name=name,
            storage=storage_for(url, out),
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )

    for attempt in range(attempts - 1):
        try:
            return create()
        except Exception as e:
            if not any(w in str(e) for w in ("locked", "exists", "UNIQUE")):
                raise
            time.sleep(1 + attempt)
    return create()


def tune(
    config: RunConfig,
    ds: ConversationDataset,
    stats: Stats | None,
    out: Path,
    *,
    trials: int | None = 20,
    minutes: float | None = None,
    storage: str | None = None,
    study: str = "fusionkit",
    space: tuple[str, ...] | None = None,
    seeds: int = 3,
    quiet: bool = True,
):
    """Run trials until ``trials`` (this process's) or ``minutes`` are spent; write the
    outputs of the whole study (every process's trials) to ``out``; return the study.
    A trial trains ``seeds`` seeds and scores their mean best dev weighted F1; it is pruned
    on its first seed's epochs. ``space``: the keys of :data:`SPACE` to search (None: all of
    them, as SPACE is when called, so that a key added to it is searched)."""
    optuna = _optuna()
    space = tuple(SPACE) if space is None else space
    unknown = sorted(set(space) - set(SPACE))
    if unknown:
        raise ConfigError(f"tune: unknown settings {unknown} (known: {sorted(SPACE)})")
    if trials is None and minutes is None:
        raise ConfigError("tune: give a budget, --trials or --minutes")
    if seeds < 1:
        raise ConfigError(f"tune: seeds (--seeds-per-trial) must be at least 1, got {seeds}")
    out.mkdir(parents=True, exist_ok=True)
    first = config.train.seeds[0]
    sampler = optuna.samplers.TPESampler(seed=first + os.getpid() % 1000)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    found = _create(optuna, study, storage, out, sampler, pruner)
    base = base_params(config, space)
    found.enqueue_trial(base, skip_if_exists=True)

    def objective(trial) -> float:
        params = {key: suggest(trial, key) for key in space}
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("base", all(params[k] == v for k, v in base.items()))
        run = with_params(config, params)

        def report(record: dict) -> None:
            trial.report(record["dev_weighted_f1"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned

        scores = []
        for seed in range(first, first + seeds):
            result = fit(
                replace(run, train=replace(run.train, seeds=[seed])),
                ds,
                stats,
                seed,
                out / f"trial{trial.number}" / f"seed{seed}",
                quiet=quiet,
                on_epoch=report if seed == first else None,
            )
            scores.append(result.results["dev_at_best_dev"]["weighted_f1"])
        trial.set_user_attr("dev_weighted_f1_per_seed", scores)
        return sum(scores) / len(scores)

    timeout = None if minutes is None else minutes * 60
    started = time.time()
    found.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=True)
    write_outputs(found, config, out)
    if not quiet:
        print(
            f"{len(found.trials)} trials in {time.time() - started:.0f} s; {summary(found)}; "
            f"settings {found.best_params} -> {out / 'best.toml'}"
        )
    return found


def summary(study) -> str:
    """The best trial's dev weighted F1 and its seeds', beside the base configuration's
    (the trial with its own settings), so a gain can be weighed against the seeds' spread."""

    def scores(t) -> str:
        seeds = " ".join(f"{v:.2f}" for v in t.user_attrs.get("dev_weighted_f1_per_seed", []))
        return f"{t.value:.2f} (trial {t.number}; seeds {seeds})"

    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    base = next((t for t in done if t.user_attrs.get("base")), None)
    line = f"best dev weighted F1 {scores(study.best_trial)}"
    return line + (f" against the base configuration's {scores(base)}" if base else "")


def write_outputs(study, config: RunConfig, out: Path) -> None:
    """``best.toml`` (the base configuration with the best trial's settings), ``trials.csv``
    (one row a trial: number, state, dev weighted F1, each seed's, seconds, settings) and
    ``importance.png`` (each setting's importance, Optuna's fANOVA), for the whole study."""
    import tomli_w

    optuna = _optuna()
    best = with_params(config, study.best_params)
    (out / "best.toml").write_text(
        f"# fusionkit tune: study {study.study_name!r}, {len(study.trials)} trials\n"
        f"# {summary(study)}\n" + tomli_w.dumps(_toml(best.to_dict()))
    )
    names = sorted({k for t in study.trials for k in t.params})
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "dev_weighted_f1", "per_seed", "seconds", *names])
        for t in study.trials:
            seconds = t.duration.total_seconds() if t.duration else ""
            per_seed = " ".join(
                f"{v:.2f}" for v in t.user_attrs.get("dev_weighted_f1_per_seed", [])
            )
            row = [t.number, t.state.name, t.value, per_seed, seconds]
            writer.writerow([*row, *(t.params.get(k) for k in names)])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plt = pyplot()
    if plt is None or len(done) < 2:
        return
    importance = optuna.importance.get_param_importances(study)
    fig, ax = plt.subplots(figsize=(6, 0.4 + 0.35 * len(importance)))
    ax.barh(list(importance)[::-1], list(importance.values())[::-1])
    ax.set_xlabel("importance for dev weighted F1 (fANOVA)")
    ax.set_title(f"{len(done)} completed trials", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=120)
    plt.close(fig)


def _toml(value):
    """``value`` with None dropped (TOML has no null: a missing key takes its default)."""
    if isinstance(value, dict):
        return {k: _toml(v) for k, v in value.items() if v is not None}
    return value
