"""``fusionkit tune``: a tiny study whose best configuration trains, scored on dev only, and
two processes sharing one SQLite study."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionkit import cli
from fusionkit.errors import ConfigError
from fusionkit.models.cmath import RunConfig, load_config
from fusionkit.models.cmath.tune import SPACE, base_params, storage_for, tune, with_params
from tests.helpers import TINY

optuna = pytest.importorskip("optuna", reason="the 'tune' extra is not installed")
ROOT = Path(__file__).resolve().parents[2]
QUICK = [*TINY, "--set", "train.epochs=2"]


def test_every_searched_setting_is_a_config_key():
    config = RunConfig()
    for key in SPACE:
        section, name = key.split(".")
        assert hasattr(getattr(config, section), name), key
    changed = with_params(config, {"train.lr": 0.5, "model.dropout": 0.1})
    assert changed.train.lr == 0.5 and changed.model.dropout == 0.1
    assert changed.train.batch_size == config.train.batch_size


def test_a_study_without_a_budget_or_seeds_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--trials or --minutes"):
        tune(RunConfig(), None, None, tmp_path, trials=None)
    with pytest.raises(ConfigError, match=r"seeds \(--seeds-per-trial\) must be at least 1"):
        tune(RunConfig(), None, None, tmp_path, seeds=0)
    with pytest.raises(ConfigError, match="unknown settings"):
        tune(RunConfig(), None, None, tmp_path, space=("model.nothing",))


def test_the_first_trial_is_the_configuration_itself_where_it_lies_in_the_space():
    config = RunConfig()
    base = base_params(config, tuple(SPACE))
    assert base == {
        k: getattr(getattr(config, k.split(".")[0]), k.split(".")[1]) for k in SPACE
    }  # the defaults lie in the space
    small = with_params(config, {"model.hidden_dim": 16, "train.lr": 0.5})
    assert set(SPACE) - set(base_params(small, tuple(SPACE))) == {"model.hidden_dim", "train.lr"}


@pytest.mark.slow
def test_a_tiny_study_writes_a_best_config_that_trains(tmp_path, monkeypatch):
    monkeypatch.setitem(SPACE, "train.batch_size", (4, 8))  # a key a user adds is searched
    out = tmp_path / "tune"
    argv = ["tune", *QUICK, "--trials", "3", "--seeds-per-trial", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert len(rows) == 3 and {"model.hidden_dim", "train.lr", "train.batch_size"} <= set(rows[0])
    study = optuna.load_study(study_name="fusionkit", storage=storage_for(None, out))
    first, config = study.trials[0].params, load_config("synthetic")
    keys = ("train.lr", "train.batch_size", "train.weight_decay", "model.gamma")
    assert [first[k] for k in keys] == [
        3e-3,  # TINY's
        4,  # TINY's, among the added key's choices
        config.train.weight_decay,
        config.model.gamma,
    ]
    for trial in study.trials:  # a trial scores its seeds' mean best dev weighted F1, not test
        if trial.state == optuna.trial.TrialState.COMPLETE:
            dev = [
                json.loads((out / f"trial{trial.number}" / seed / "results.json").read_text())[
                    "dev_at_best_dev"
                ]["weighted_f1"]
                for seed in ("seed0", "seed1")
            ]
            assert trial.value == pytest.approx(sum(dev) / 2)
            assert trial.user_attrs["dev_weighted_f1_per_seed"] == pytest.approx(dev)
    assert [t.user_attrs["base"] for t in study.trials] == [True, False, False]
    header = (out / "best.toml").read_text().splitlines()[1]  # the best beside the base
    best_trial, base = study.best_trial, study.trials[0]
    assert f"F1 {best_trial.value:.2f} (trial {best_trial.number}; seeds " in header
    assert f"base configuration's {base.value:.2f} (trial 0; seeds " in header
    best = load_config(out / "best.toml")
    for key, value in study.best_params.items():
        section, name = key.split(".")
        assert getattr(getattr(best, section), name) == pytest.approx(value)
    assert best.data.num_dialogues == 18  # the base configuration is kept
    assert (out / "importance.png").stat().st_size > 0
    run = tmp_path / "run"
    assert (
        cli.main(["train", "--config", str(out / "best.toml"), "--quiet", "--out", str(run)]) == 0
    )
    assert (run / "seed0" / "best.pt").exists()


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [sys.executable, "-m", "fusionkit", "tune", *QUICK, "--trials", "2"]
    cmd += ["--seeds-per-trial", "1", "--storage", db, "--study", "shared"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([*cmd, "--out", str(tmp_path / f"p{i}")], cwd=ROOT, env=env)
        for i in range(2)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=db)
    assert len(study.trials) == 4
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    assert len({t.number for t in study.trials}) == 4
    # each process's outputs cover the whole study as it stood when that process ended
    rows = list(csv.DictReader((tmp_path / "p1" / "trials.csv").read_text().splitlines()))
    assert len(rows) >= 2
