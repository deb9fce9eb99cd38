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
from fusionkit.models.cmath import RunConfig, load_config
from fusionkit.models.cmath.tune import SPACE, base_params, storage_for, with_params
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


def test_the_first_trial_is_the_configuration_itself_where_it_lies_in_the_space():
    config = RunConfig()
    base = base_params(config, tuple(SPACE))
    assert base == {
        k: getattr(getattr(config, k.split(".")[0]), k.split(".")[1]) for k in SPACE
    }  # the defaults lie in the space
    small = with_params(config, {"model.hidden_dim": 16, "train.lr": 0.5})
    assert set(SPACE) - set(base_params(small, tuple(SPACE))) == {"model.hidden_dim", "train.lr"}


@pytest.mark.slow
def test_a_tiny_study_writes_a_best_config_that_trains(tmp_path):
    out = tmp_path / "tune"
    assert cli.main(["tune", *QUICK, "--trials", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert len(rows) == 3 and {"model.hidden_dim", "train.lr"} <= set(rows[0])
    study = optuna.load_study(study_name="fusionkit", storage=storage_for(None, out))
    first, config = study.trials[0].params, load_config("synthetic")
    assert (first["train.lr"], first["train.weight_decay"], first["model.gamma"]) == (
        3e-3,  # TINY's
        config.train.weight_decay,
        config.model.gamma,
    )
    for trial in study.trials:  # each trial's score is its best dev weighted F1, not test
        if trial.state == optuna.trial.TrialState.COMPLETE:
            res = json.loads((out / f"trial{trial.number}" / "results.json").read_text())
            assert trial.value == pytest.approx(res["dev_at_best_dev"]["weighted_f1"])
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
    cmd += ["--storage", db, "--study", "shared"]
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
