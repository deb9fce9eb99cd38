"""Prediction on new conversations: the Predictor API, ``fusionkit predict``, and their errors."""

import json

import numpy as np
import pytest
import torch

from fusionkit import Dialogue, cli
from fusionkit.errors import DataError, NonFiniteError
from fusionkit.models.cmath import CMATH, DataSpec, Predictor, RunConfig, checkpoint, override
from fusionkit.models.cmath.run import load_data
from tests.helpers import TINY

SMALL = [
    "data.num_dialogues=8",
    "data.min_len=3",
    "data.max_len=9",
    "model.hidden_dim=16",
    "model.heads=2",
]
SMALL += ["data.dims={text = 12, audio = 10}", "model.compressed_dim=8"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint of an untrained small model, written as training writes them."""
    config = override(RunConfig(), SMALL)
    ds, stats = load_data(config)
    torch.manual_seed(0)
    model = CMATH(config.model, DataSpec.of(ds), ds.class_weights())
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    checkpoint.save(checkpoint.payload(model, config, stats, ds, epoch=1), path)
    raw = config.data.load()
    return path, model, ds, raw


def test_predict_returns_typed_results_on_raw_data(saved):
    path, model, ds, raw = saved
    predictor = Predictor.from_checkpoint(path)
    dialogue = raw.split("test")[0]
    result = predictor.predict(dialogue)
    assert result.dialogue == dialogue.id and len(result.labels) == len(dialogue)
    assert result.probabilities.shape == (len(dialogue), 6)
    np.testing.assert_allclose(result.probabilities.sum(-1), 1.0, rtol=1e-5)
    assert set(result.labels) <= set(ds.label_names)
    # Raw features are standardised with the training statistics, as the training data were.
    with torch.no_grad():
        from fusionkit import DialogueBatch

        expected = model.eval()(DialogueBatch.collate([ds.dialogues[dialogue.id]])).logits.softmax(
            -1
        )[0]
    np.testing.assert_allclose(result.probabilities, expected.numpy(), rtol=1e-5, atol=1e-6)
    many = predictor.predict(raw)
    assert [r.dialogue for r in many] == list(raw.dialogues)
    assert result.rows()[0]["label"] == ds.label_names[int(dialogue.labels[0])]


def test_predict_errors_name_what_is_wrong(saved):
    path, _, _, raw = saved
    predictor = Predictor.from_checkpoint(path)
    d = raw.split("test")[0]
    with pytest.raises(
        DataError, match=r"dialogue .* modalities and widths \{'text': 12\} do not match"
    ):
        predictor.predict(Dialogue(d.id, {"text": d.features["text"]}, d.speakers, d.labels))
    wide = {**d.features, "audio": np.zeros((len(d), 11), np.float32)}
    with pytest.raises(ValueError, match=r"'audio': 11.*'audio': 10"):
        predictor.predict(Dialogue(d.id, wide, d.speakers, d.labels))
    with pytest.raises(ValueError, match="conversation: no dialogue to predict"):
        predictor.predict([])


@pytest.mark.slow
def test_predicting_the_test_split_gives_the_report_train_wrote(tmp_path, capsys):
    assert cli.main(["train", *TINY, "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    written = json.loads((tmp_path / "run" / "seed0" / "results.json").read_text())
    ckpt = str(tmp_path / "run" / "seed0" / "best.pt")
    assert cli.main(["predict", ckpt, "--split", "test", "--out", str(tmp_path / "p")]) == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report == written["test_at_best_dev"]
    rows = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("dialogue,utterance,predicted,label,p_hap")
    assert len(rows) - 1 == report["support"]
    saved = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert saved["label_names"] == ["hap", "sad", "neu", "ang", "exc", "fru"]
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_stream_session_equals_offline_causal_prediction(saved, tmp_path):
    """A causal checkpoint streamed utterance by utterance (raw features, speaker names,
    one utterance without audio) predicts what the offline predictor does."""
    raw = saved[3]
    config = override(RunConfig(), [*SMALL, "model.causal=true"])
    torch.manual_seed(0)
    data, stats = load_data(config)
    model = CMATH(config.model, DataSpec.of(data))
    path = tmp_path / "causal.pt"
    checkpoint.save(checkpoint.payload(model, config, stats, data), path)
    predictor = Predictor.from_checkpoint(path)
    d = raw.split("test")[0]
    no_audio = {"audio": np.arange(len(d)) != 2}
    offline = predictor.predict(Dialogue(d.id, d.features, d.speakers, d.labels, presence=no_audio))
    session = predictor.stream()
    assert d.speakers[0] == 0  # so names numbered by appearance are the data's ids
    for i in range(len(d)):
        features = {m: x[i] for m, x in d.features.items()}
        if i == 2:
            features["audio"] = None
        step = session.push(features, speaker=f"speaker {d.speakers[i]}")
        assert step.position == i
        np.testing.assert_allclose(
            step.probabilities, offline.probabilities[i], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(step.reliance, offline.reliance[i], rtol=1e-4, atol=1e-5)
        assert step.prior_share == pytest.approx(offline.prior_share[i], rel=1e-4)
        assert step.if_absent == {m: v[i] for m, v in offline.if_absent.items()}
        for m, drop in offline.if_absent_drop.items():
            assert step.if_absent_drop[m] == pytest.approx(drop[i], abs=1e-4)
    with pytest.raises(ValueError, match="stream: needs a causal model"):
        Predictor.from_checkpoint(saved[0]).stream()
    with pytest.raises(ValueError, match=r"features\['text'\]: expected shape \(12,\)"):
        session.push({"text": np.zeros(3), "audio": np.zeros(10)}, speaker=0)
    nan = np.full(12, np.nan)
    with pytest.raises(NonFiniteError, match=rf"features\['text'\]: utterance {len(d)} holds NaN"):
        session.push({"text": nan, "audio": np.zeros(10)}, speaker=0)


def test_reliance_columns_are_the_models_precision_shares(saved):
    """reliance_<m> against a float64 computation from the fusion's log-variance heads on
    the model's own fine-grained representations: each central branch's mean share of the
    posterior precision, renormalised without the prior."""
    path, model, ds, raw = saved
    result = Predictor.from_checkpoint(path).predict(raw.split("test")[0])
    d = ds.dialogues[result.dialogue]
    from fusionkit import DialogueBatch

    batch = DialogueBatch.collate([d])
    with torch.no_grad():
        out = model.eval()(batch)
        names = sorted(out.fine)
        logvar = torch.stack([model.fusion.logvar[k](out.fine[c]) for k, c in enumerate(names)])
    precision = logvar.double().clamp(-10, 10).neg().exp()[:, 0]  # (k, t, d)
    total = 1.0 + precision.sum(0)
    shares = (precision / total).mean(-1).T  # (t, k)
    prior = (1.0 / total).mean(-1)
    assert result.modalities == names == ["audio", "text"]
    np.testing.assert_allclose(result.prior_share, prior.numpy(), rtol=1e-4)
    expected = shares / (1 - prior)[:, None]
    np.testing.assert_allclose(result.reliance, expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.reliance.sum(-1), 1.0, rtol=1e-5)
    row = result.rows()[0]
    assert row["reliance_audio"] + row["reliance_text"] == pytest.approx(1.0)
    assert row["prior_share"] == pytest.approx(float(prior[0]), rel=1e-4)


def test_if_absent_is_the_models_own_absence_path(saved):
    path, _, _, raw = saved
    predictor = Predictor.from_checkpoint(path)
    d = raw.split("test")[0]
    result = predictor.predict(d)
    hidden = Dialogue(
        d.id, d.features, d.speakers, d.labels, presence={"audio": np.zeros(len(d), bool)}
    )
    without_audio = predictor.predict(hidden)
    assert result.if_absent["audio"] == without_audio.labels
    k = result.probabilities.argmax(-1)
    rows = np.arange(len(d))
    drop = result.probabilities[rows, k] - without_audio.probabilities[rows, k]
    np.testing.assert_allclose(result.if_absent_drop["audio"], drop, atol=1e-6)
    # already absent: hiding it again changes nothing
    assert without_audio.if_absent["audio"] == without_audio.labels
    np.testing.assert_allclose(without_audio.if_absent_drop["audio"], 0.0, atol=1e-7)
    assert {"if_absent_audio", "drop_if_absent_text"} <= set(result.rows()[0])


def test_a_fusion_without_precisions_reports_no_reliance(tmp_path):
    config = override(RunConfig(), [*SMALL, "model.fusion='concat'"])
    ds, stats = load_data(config)
    model = CMATH(config.model, DataSpec.of(ds))
    path = tmp_path / "concat.pt"
    checkpoint.save(checkpoint.payload(model, config, stats, ds), path)
    result = Predictor.from_checkpoint(path).predict(config.data.load().split("test")[0])
    assert result.reliance is None and result.modalities == []
    row = result.rows()[0]
    assert row["prior_share"] is None and not any(k.startswith("reliance_") for k in row)
    assert set(result.if_absent) == {"audio", "text"}  # what-if needs no precisions


def test_non_finite_features_are_refused_where_they_come_in(saved):
    path, _, _, raw = saved
    predictor = Predictor.from_checkpoint(path)
    d = raw.split("test")[0]
    text = d.features["text"].copy()
    text[1, 3] = np.nan
    bad = Dialogue(d.id, {**d.features, "text": text}, d.speakers, d.labels)
    with pytest.raises(NonFiniteError, match=rf"dialogue '{d.id}', utterance 1: text features"):
        predictor.predict(bad)
    absent = Dialogue(
        d.id, bad.features, d.speakers, d.labels, presence={"text": np.arange(len(d)) != 1}
    )
    assert np.isfinite(predictor.predict(absent).probabilities).all()  # NaN where absent: ignored
