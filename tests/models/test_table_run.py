"""Your own conversations end to end: a manifest with text and audio -> features -> a few
training steps -> results.json -> predictions on a new, unlabelled manifest."""

import csv
import json

import pytest

from fusionkit import cli
from tests.data.recordings import conversations

pytest.importorskip("opensmile", reason="the 'audio' extra is not installed")
pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
pytestmark = pytest.mark.slow


def test_manifest_trains_and_predicts(tmp_path):
    manifest = conversations(tmp_path)
    args = ["--dataset", "table", "--data", str(manifest), "--out", str(tmp_path / "run")]
    sets = ['data.label_names=["neutral", "joy", "surprise", "anger"]', "train.seeds=[0]"]
    sets += ["model.hidden_dim=16", "model.heads=2", "model.compressed_dim=8", "train.probe=false"]
    assert (
        cli.main(
            ["train", *args, "--epochs", "2", "--quiet", *(a for s in sets for a in ("--set", s))]
        )
        == 0
    )
    res = json.loads((tmp_path / "run" / "seed0" / "results.json").read_text())
    assert res["modalities"] == ["audio", "text"]
    assert res["test_at_best_dev"]["support"] == 2

    new = conversations(tmp_path, labelled=False)  # the same talk, no labels or splits
    out = tmp_path / "pred"
    ckpt = str(tmp_path / "run" / "seed0" / "best.pt")
    assert cli.main(["predict", ckpt, "--data", str(new), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 8 and {r["dialogue"] for r in rows} == {"call1", "call2", "call3"}
    assert [r["utterance"] for r in rows[:4]] == ["0", "1", "2", "3"]
    assert all(r["label"] == "" for r in rows) and not (out / "report.json").exists()
    assert {r["predicted"] for r in rows} <= {"neutral", "joy", "surprise", "anger"}
