"""The ``fusionkit`` command's errors: each user error prints one line naming the argument
or file and what was expected, and exits with status 2 (``--debug`` shows the traceback);
any other exception is a bug and keeps its traceback."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fusionkit import cli
from fusionkit.data.sources import FeaturePickle, MeldCsv, Npz, Synthetic, Table
from fusionkit.models.cmath import RunConfig, load_config, override
from fusionkit.models.cmath.config import config_names
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[2]


def _error(capsys, *argv) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_missing_data_file(capsys, tmp_path):
    err = _error(capsys, "train", "--dataset", "npz", "--data", str(tmp_path / "nope.npz"))
    assert f"--data {tmp_path / 'nope.npz'}: no such file" in err


def test_data_needed_and_folder_expected(capsys, tmp_path):
    err = _error(capsys, "train", "--dataset", "iemocap")
    assert "--data: the 'pickle' source needs a file (data.path)" in err
    err = _error(capsys, "train", "--dataset", "meld-csv", "--data", str(tmp_path))
    assert "MELD files" in err and str(tmp_path) in err
    err = _error(capsys, "train", "--dataset", "npz", "--data", str(tmp_path))
    assert f"--data {tmp_path}: expected a file for the 'npz' source" in err
    err = _error(capsys, "train", "--data", str(tmp_path))
    assert "--data: the 'synthetic' source reads no file" in err


def test_csv_where_an_npz_is_expected(capsys, tmp_path):
    csv = tmp_path / "table.csv"
    csv.write_text("dialogue_id,text\n1,hello\n")
    err = _error(capsys, "train", "--dataset", "npz", "--data", str(csv))
    assert f"{csv}: not a fusionkit dataset file" in err and "allow_pickle" not in err


def test_wrong_value_type_unknown_key_and_unknown_config(capsys):
    assert "model.hidden_dim: expected int, got 'abc'" in _error(
        capsys, "train", "--set", "model.hidden_dim=abc"
    )
    assert "train.seeds: expected list[int]" in _error(
        capsys, "train", "--set", "train.seeds=[0.5]"
    )
    assert "model.fusion: expected Literal['poe', 'vconcat', 'concat'], got 'sum'" in _error(
        capsys, "train", "--set", "model.fusion=sum"
    )
    assert "--set 'model.nope=1': expected section.key=value with a known key" in _error(
        capsys, "train", "--set", "model.nope=1"
    )
    err = _error(capsys, "train", "--config", "nope")
    assert "--config nope: no such file, nor a config name among" in err and "iemocap" in err


def test_unknown_source_and_a_field_of_another_source(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nsource = "parquet"\n')
    assert "data.source: unknown 'parquet'; known: [" in _error(
        capsys, "train", "--config", str(bad)
    )
    bad.write_text('[data]\nsource = "npz"\ntext_layer = 1\n')
    err = _error(capsys, "train", "--config", str(bad))
    assert "data: unknown keys ['text_layer']; known: ['on_nonfinite', 'path']" in err


def test_unknown_modality(capsys):
    err = _error(capsys, "train", *TINY, "--set", 'prepare.modalities=["depth"]')
    assert "modalities: ['depth'] not available" in err


def test_missing_and_foreign_and_truncated_checkpoints(capsys, tmp_path):
    assert f"checkpoint {tmp_path / 'x.pt'}: no such file" in _error(
        capsys, "evaluate", str(tmp_path / "x.pt")
    )
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert "not a fusionkit CMATH checkpoint" in _error(capsys, "predict", str(foreign))
    old = tmp_path / "old.pt"
    torch.save({"format": "fusionkit-cmath-checkpoint", "version": 1}, old)
    assert "format version 1, this fusionkit reads version 3: retrain" in _error(
        capsys, "evaluate", str(old)
    )
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert "not readable as a torch checkpoint" in _error(capsys, "evaluate", str(text))
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    whole = (tmp_path / "run" / "seed0" / "best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    assert f"checkpoint {cut}: not readable as a torch checkpoint (truncated" in _error(
        capsys, "evaluate", str(cut)
    )


def test_a_bug_is_not_a_user_error(monkeypatch):
    """A ValueError from inside fusionkit is not the user's mistake: it propagates."""

    def broken(config):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr("fusionkit.models.cmath.run.load_data", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        cli.main(["train", *TINY])


@pytest.mark.slow
def test_status_2_from_the_shell_and_debug_shows_the_traceback():
    cmd = [sys.executable, "-m", "fusionkit", "train", "--set", "model.heads=x"]
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 2
    assert plain.stderr.strip() == "error: --set: model.heads: expected int, got 'x'"
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, cwd=ROOT)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_every_dataset_kind_has_its_config():
    assert set(config_names()) >= {"synthetic", "iemocap", "meld", "npz", "meld-csv", "table"}
    kinds = {
        "synthetic": Synthetic,
        "synthetic-paper": Synthetic,
        "iemocap": FeaturePickle,
        "meld": FeaturePickle,
        "npz": Npz,
        "meld-csv": MeldCsv,
        "table": Table,
    }
    for name, cls in kinds.items():
        assert type(load_config(name).data) is cls
    assert load_config("iemocap").data.expect == "iemocap"
    assert load_config("iemocap").model.hidden_dim == 1024  # SDT's, not the synthetic default
    assert load_config("iemocap").model.ff_mult == 1  # SDT's d_ff = hidden_dim


def test_defaults_live_in_the_dataclasses():
    """The default run's config names its source only: data, model and training are the
    dataclasses' defaults (the default recipe). ``synthetic-paper`` pins the paper's model
    and the training the synthetic figures were measured with."""
    assert load_config("synthetic") == RunConfig()
    paper = load_config("synthetic-paper")
    assert paper.data == RunConfig().data
    assert paper.model == replace(RunConfig().model, shortcut=False, input_dropout=0.0)
    assert (paper.train.epochs, paper.train.schedule, paper.train.optimizer) == (
        20,
        "constant",
        "adam",
    )
    changed = override(RunConfig(), ["data.num_dialogues=12", "train.lr=1"])
    assert changed.data.num_dialogues == 12
    assert changed.train.lr == 1.0 and isinstance(changed.train.lr, float)


@pytest.mark.slow
def test_examples_run_as_scripts_from_anywhere(tmp_path):
    for script, words in (("train.py", "fusionkit train"), ("predict.py", "checkpoint")):
        cmd = [sys.executable, str(ROOT / "examples/cmath" / script), "--help"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0 and words in done.stdout, done.stderr
