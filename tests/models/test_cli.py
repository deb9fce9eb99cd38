"""Command-line errors: each user error prints one line naming the argument or file and
what was expected, and exits with status 2; ``--debug`` shows the traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from examples.cmath import train
from examples.cmath.config import RunConfig, load_config, override
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[2]


def _error(capsys, *argv) -> str:
    assert train.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_missing_data_file(capsys, tmp_path):
    err = _error(capsys, "--dataset", "npz", "--data", str(tmp_path / "nope.npz"))
    assert f"--data {tmp_path / 'nope.npz'}: no such file" in err


def test_data_needed_and_folder_expected(capsys, tmp_path):
    assert "--data: a file is needed for dataset 'iemocap'" in _error(
        capsys, "--dataset", "iemocap"
    )
    err = _error(capsys, "--dataset", "meld-csv", "--data", str(tmp_path))
    assert "MELD files" in err and str(tmp_path) in err
    err = _error(capsys, "--dataset", "npz", "--data", str(tmp_path))
    assert f"--data {tmp_path}: expected a file for 'npz'" in err


def test_csv_where_an_npz_is_expected(capsys, tmp_path):
    csv = tmp_path / "table.csv"
    csv.write_text("dialogue_id,text\n1,hello\n")
    err = _error(capsys, "--dataset", "npz", "--data", str(csv))
    assert f"{csv}: not a fusionkit dataset file" in err and "allow_pickle" not in err


def test_wrong_value_type_unknown_key_and_unknown_config(capsys):
    assert "model.hidden_dim: expected int, got 'abc'" in _error(
        capsys, "--set", "model.hidden_dim=abc"
    )
    assert "train.seeds: expected list[int]" in _error(capsys, "--set", "train.seeds=[0.5]")
    assert "model.fusion: expected Literal['poe', 'vconcat', 'concat'], got 'sum'" in _error(
        capsys, "--set", "model.fusion=sum"
    )
    assert "--set 'model.nope=1': expected section.key=value with a known key" in _error(
        capsys, "--set", "model.nope=1"
    )
    err = _error(capsys, "--config", "nope")
    assert "--config nope: no such file, nor a config name among" in err and "iemocap" in err


def test_unknown_modality(capsys):
    err = _error(capsys, *TINY, "--set", 'data.modalities=["depth"]')
    assert "modalities: ['depth'] not available" in err


def test_missing_and_foreign_and_truncated_checkpoints(capsys, tmp_path):
    assert f"checkpoint {tmp_path / 'x.pt'}: no such file" in _error(
        capsys, "--eval", str(tmp_path / "x.pt")
    )
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert "not a fusionkit CMATH checkpoint" in _error(capsys, "--eval", str(foreign))
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert "not readable as a torch checkpoint" in _error(capsys, "--eval", str(text))
    assert train.main([*TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    whole = (tmp_path / "run" / "seed0" / "best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    assert f"checkpoint {cut}: not readable as a torch checkpoint (truncated" in _error(
        capsys, "--eval", str(cut)
    )


@pytest.mark.slow
def test_status_2_from_the_shell_and_debug_shows_the_traceback():
    cmd = [sys.executable, str(ROOT / "examples/cmath/train.py"), "--set", "model.heads=x"]
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 2
    assert plain.stderr.strip() == "error: --set: model.heads: expected int, got 'x'"
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, cwd=ROOT)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_every_dataset_kind_has_its_config():
    for name in ("synthetic", "iemocap", "meld", "npz", "meld-csv"):
        assert load_config(name).data.dataset == name
    assert load_config("iemocap").model.hidden_dim == 1024  # SDT's, not the synthetic default


def test_defaults_live_in_the_dataclasses():
    """The synthetic config holds only what differs from the defaults: nothing but its name."""
    assert load_config("synthetic") == RunConfig()
    changed = override(RunConfig(), ["data.synthetic.num_dialogues=12", "train.lr=1"])
    assert changed.data.synthetic.num_dialogues == 12
    assert changed.train.lr == 1.0 and isinstance(changed.train.lr, float)


@pytest.mark.slow
def test_runs_as_a_script_from_anywhere_and_as_a_module(tmp_path):
    script = [sys.executable, str(ROOT / "examples/cmath/train.py"), "--help"]
    module = [sys.executable, "-m", "examples.cmath.train", "--help"]
    for cmd, cwd in ((script, tmp_path), (module, ROOT)):
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        assert done.returncode == 0 and "Train and evaluate CMATH" in done.stdout, done.stderr
