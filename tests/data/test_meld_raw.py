"""MELD's raw release as a source: the three CSVs beside each split's clip folder, one
``dia{D}_utt{U}.mp4`` per utterance; text, audio from the clips' audio tracks, and visual
features; clips that do not decode are an error naming the row and the file, or absent and
counted."""

import csv

import pytest

pytest.importorskip("av", reason="the 'video' extra is not installed")
pytest.importorskip("cv2", reason="the 'video' extra is not installed")
pytest.importorskip("transformers", reason="the 'video' extra is not installed")
pytest.importorskip("skimage", reason="the test face comes from scikit-image")
pytest.importorskip("opensmile", reason="the 'audio' extra is not installed")
pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")

from fusionkit.data.sources import MELD_CLIPS, MeldRaw, VisualSettings
from fusionkit.data.tables import MELD_FILES
from fusionkit.errors import MediaError, MissingFileError
from tests.data.videos import corrupt, tiny_vit, write_video

HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"]
LINES = {
    "train": [("Hi there.", "joy"), ("Oh no.", "sadness"), ("What?", "surprise")],
    "dev": [("Fine.", "neutral"), ("Stop it!", "anger")],
    "test": [("Hello.", "neutral"), ("Great!", "joy")],
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A MELD.Raw-shaped folder: CSVs in MELD/, clips in each split's folder; the train
    split's second clip is missing and the test split's first one is corrupt."""
    root = tmp_path_factory.mktemp("MELD.Raw")
    (root / "MELD").mkdir()
    for split, lines in LINES.items():
        clips = root / MELD_CLIPS[split]
        clips.mkdir()
        with open(root / "MELD" / MELD_FILES[split], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            for u, (text, emotion) in enumerate(lines):
                writer.writerow([u + 1, text, "AB"[u % 2], emotion, "neutral", 0, u])
                write_video(clips / f"dia0_utt{u}.mp4", seconds=0.6, audio=200.0 + 40 * u)
    (root / MELD_CLIPS["train"] / "dia0_utt1.mp4").unlink()
    corrupt(root / MELD_CLIPS["test"] / "dia0_utt0.mp4")
    return root, tiny_vit(tmp_path_factory.mktemp("vit"))


def _source(release, **changes) -> MeldRaw:
    root, encoder = release
    settings = {"visual": VisualSettings(encoder=encoder, fps=2.0, max_frames=2), **changes}
    return MeldRaw(path=str(root), cache_dir=str(root / "cache"), **settings)


def test_text_audio_and_visual_with_unusable_clips_absent(release):
    ds = _source(release, on_error="absent").load()
    assert ds.modalities == ["audio", "text", "visual"] and ds.name == "meld"
    assert {s: len(ids) for s, ids in ds.splits.items()} == {"train": 1, "dev": 1, "test": 1}
    train, test = ds.dialogues["train/0"], ds.dialogues["test/0"]
    for m in ("audio", "visual"):
        assert train.present(m).tolist() == [True, False, True]
        assert test.present(m).tolist() == [False, True]
        assert ds.info["absent"][m]["unusable data"] == 2
    assert train.present("text").all() and ds.feature_dims["audio"] == 88
    assert any("dia0_utt1.mp4" in e and "file not found" in e for e in ds.info["errors"])
    assert "2 of 7 utterances" in ds.summary()


def test_unusable_clips_are_errors_naming_the_row_and_the_file(release):
    with pytest.raises(MediaError, match=r"train_sent_emo\.csv: row 2: .*dia0_utt1\.mp4"):
        _source(release, visual=VisualSettings(encoder="none")).load()


def test_missing_clip_folder_and_csvs(release, tmp_path):
    with pytest.raises(MissingFileError, match=r"MELD clip folders \{'dev': 'dev_clips'\}"):
        _source(release, clips={**MELD_CLIPS, "dev": "dev_clips"}).load()
    with pytest.raises(MissingFileError, match="MELD's CSVs"):
        MeldRaw(path=str(tmp_path)).load()
