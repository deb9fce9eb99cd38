"""End-to-end runs of ``fusionkit train`` on tiny synthetic data (marked slow: the inner
loop runs ``pytest -m "not slow"``)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fusionkit import cli
from fusionkit.data.sources import MeldCsv, Prepare
from fusionkit.models.cmath import fit, load_config, override
from fusionkit.models.cmath.run import load_data
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(out, *extra):
    assert cli.main(["train", *TINY, "--out", str(out), *extra]) == 0
    return json.loads((out / "seed0" / "results.json").read_text())


def test_training_reports_everything(tmp_path):
    res = _run(tmp_path, "--epochs", "4", "--probe")
    history = res["history"]
    assert len(history) == 4
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for key in ("test_at_best_dev", "best_test_over_epochs", "dev_at_best_dev"):
        assert {"accuracy", "weighted_f1", "per_class_f1", "confusion"} <= set(res[key])
    assert set(res["test_at_best_dev"]["per_class_f1"]) == {
        "hap",
        "sad",
        "neu",
        "ang",
        "exc",
        "fru",
    }
    best = max(h["test_weighted_f1"] for h in history)
    assert res["best_test_over_epochs"]["weighted_f1"] == pytest.approx(best)
    at_dev = history[res["best_dev_epoch"] - 1]
    assert res["test_at_best_dev"]["weighted_f1"] == pytest.approx(at_dev["test_weighted_f1"])
    assert {"accuracy", "weighted_f1", "C"} <= set(res["linear_probe"])
    for name in ("confusion.png", "curves.png", "best.pt", "state.pt"):
        assert (tmp_path / "seed0" / name).stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_at_best_dev/weighted_f1"]["mean"] == pytest.approx(
        res["test_at_best_dev"]["weighted_f1"]
    )


def test_same_seed_same_numbers(tmp_path):
    a = _run(tmp_path / "a", "--epochs", "2")
    b = _run(tmp_path / "b", "--epochs", "2")
    assert _without_seconds(a["history"]) == _without_seconds(b["history"])


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


class Interrupted(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path):
    """A cosine schedule with warmup over 6 epochs, the state saved every 2: a run killed
    during epoch 5 (its last state at 4) and resumed ends as the uninterrupted one."""
    config = override(load_config("synthetic"), [s for s in TINY if "=" in s])
    config = override(config, ["train.epochs=6", "train.schedule='cosine'", "train.warmup=0.2"])
    config = override(config, ["train.save_every=2"])
    ds, stats = load_data(config)
    full = fit(config, ds, stats, 0, tmp_path / "full", quiet=True).results

    def die_after_4(record):
        if record["epoch"] == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(config, ds, stats, 0, tmp_path / "cut", quiet=True, on_epoch=die_after_4)
    cut = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert cut["state"]["epoch"] == 4 and "optimizer" in cut and "scheduler" in cut
    resumed = fit(config, ds, stats, 0, tmp_path / "cut", quiet=True, resume=True).results
    assert _without_seconds(resumed["history"]) == _without_seconds(full["history"])
    a = torch.load(tmp_path / "full" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_best_pt_holds_no_resumable_state_and_state_pt_is_written_every_n_epochs(tmp_path):
    _run(tmp_path, "--epochs", "3", "--set", "train.save_every=2")
    best = torch.load(tmp_path / "seed0" / "best.pt", weights_only=True)
    assert not {"optimizer", "scheduler", "rng", "state"} & set(best)
    state = torch.load(tmp_path / "seed0" / "state.pt", weights_only=True)
    assert state["state"]["epoch"] == 3  # written at 2, then replaced at the end
    assert not list((tmp_path / "seed0").glob("*.tmp"))  # written atomically


def test_eval_scores_a_checkpoint(tmp_path, capsys):
    res = _run(tmp_path, "--epochs", "2")
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "seed0" / "best.pt")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["weighted_f1"] == pytest.approx(res["test_at_best_dev"]["weighted_f1"])


def test_several_seeds_give_mean_and_std(tmp_path):
    cli.main(["train", *TINY, "--out", str(tmp_path), "--epochs", "1", "--seeds", "0", "1"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    stat = summary["test_at_best_dev/weighted_f1"]
    assert len(stat["values"]) == 2 and stat["std"] >= 0
    assert stat["mean"] == pytest.approx(sum(stat["values"]) / 2)


def test_ablation_table(tmp_path):
    cli.main(["train", *TINY, "--out", str(tmp_path), "--epochs", "1", "--ablations"])
    table = (tmp_path / "ablations.md").read_text()
    for row in (
        "CMATH (full)",
        "w/o modality reconstruction",
        "symmetric fusion",
        "central = text only",
        "central = audio only",
        "w/o variational fusion",
        "w/o hierarchical distillation",
        "single granularity",
    ):
        assert row in table


def test_ablations_turn_the_shortcut_off_where_the_model_has_one():
    from fusionkit.data.sources import Synthetic
    from fusionkit.models.cmath import CMATHConfig
    from fusionkit.models.cmath.run import ablations

    ds = Synthetic(num_dialogues=4, min_len=2, max_len=3).load()
    with_shortcut = dict(ablations(ds, CMATHConfig(shortcut=True)))
    assert with_shortcut["w/o input shortcut"] == {"shortcut": False}
    assert "w/o input shortcut" not in dict(ablations(ds, CMATHConfig(shortcut=False)))


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_process_ddp_equals_one_process(tmp_path):
    """With the stochastic parts off, 2 gloo processes train to the same model and figures."""
    det = [
        *("--set", "model.dropout=0.0", "--set", "model.input_dropout=0.0"),
        *("--set", "model.fusion='concat'", "--epochs", "2"),
    ]
    single = _run(tmp_path / "one", *det)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        "torchrun",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "fusionkit",
        "train",
        *TINY,
        *det,
        "--out",
        str(tmp_path / "two"),
    ]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=300)
    double = json.loads((tmp_path / "two" / "seed0" / "results.json").read_text())
    assert double["world_size"] == 2
    for a, b in zip(single["history"], double["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        for k in ("dev_weighted_f1", "test_weighted_f1", "test_accuracy"):
            assert b[k] == pytest.approx(a[k], abs=1e-6)
    p1 = torch.load(tmp_path / "one" / "seed0" / "state.pt", weights_only=True)["model"]
    p2 = torch.load(tmp_path / "two" / "seed0" / "state.pt", weights_only=True)["model"]
    for k in p1:
        # Adam turns float-rounding differences of near-zero gradients into steps of up to
        # lr: a wrong gradient would differ by ~lr (3e-3), not 1e-4.
        torch.testing.assert_close(p2[k], p1[k], atol=1e-4, rtol=1e-3)


MELD = ROOT.parent / "shared" / "data" / "meld"


@pytest.mark.skipif(not MELD.exists(), reason=f"MELD transcripts not found at {MELD}")
def test_meld_csv_slice_end_to_end(tmp_path):
    """Real MELD transcripts: text features (cached), a short training, and the report."""
    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    args = [
        "--dataset",
        "meld-csv",
        "--data",
        str(MELD),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "2",
        "--set",
        "data.limit_dialogues=12",
        "--set",
        f"data.cache_dir='{tmp_path / 'cache'}'",
        "--set",
        "model.hidden_dim=16",
        "--set",
        "model.heads=2",
        "--set",
        "model.compressed_dim=16",
        "--set",
        "train.seeds=[0]",
        "--quiet",
    ]
    assert cli.main(["train", *args]) == 0
    res = json.loads((tmp_path / "run" / "seed0" / "results.json").read_text())
    assert res["dataset"] == "meld" and res["modalities"] == ["text"]
    assert set(res["test_at_best_dev"]["per_class_f1"]) == {
        "neutral",
        "surprise",
        "fear",
        "sadness",
        "joy",
        "disgust",
        "anger",
    }
    data = MeldCsv(path=str(MELD), limit_dialogues=12, cache_dir=str(tmp_path / "cache"))
    assert res["test_at_best_dev"]["support"] == Prepare()(data.load())[0].num_utterances("test")
    assert 0 <= res["linear_probe"]["weighted_f1"] <= 100  # the meld-csv config reports the probe
    assert list((tmp_path / "cache").glob("meld-*.npz"))


def test_compile_flag_trains(tmp_path):
    res = _run(tmp_path, "--epochs", "1", "--compile")
    assert res["config"]["train"]["compile"] is True
    assert res["history"][0]["train_loss"] > 0
