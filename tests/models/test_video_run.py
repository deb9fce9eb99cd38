"""Video conversations end to end: a manifest of text and video -> text, audio (from the
videos) and visual features -> a few training steps -> predictions, with the conversation
report, on a new manifest featurised the same way."""

import csv
import json

import pytest

from fusionkit import cli
from tests.data.recordings import write_manifest
from tests.data.videos import tiny_vit, write_video

for module in ("av", "cv2", "transformers", "skimage", "opensmile", "sentence_transformers"):
    pytest.importorskip(module, reason=f"{module} is not installed (video, audio, text extras)")

pytestmark = pytest.mark.slow
SAID = [
    ("c1", "Hello, how are you?", "neutral", "train"),
    ("c1", "I am furious!", "anger", "train"),
    ("c2", "We won!", "joy", "train"),
    ("c2", "That is wonderful.", "joy", "train"),
    ("c3", "Who is it?", "neutral", "dev"),
    ("c3", "Go away!", "anger", "dev"),
    ("c4", "Nice to see you.", "joy", "test"),
    ("c4", "Fine.", "neutral", "test"),
]


def _manifest(folder, labelled=True):
    (folder / "clips").mkdir(exist_ok=True)
    rows = []
    for k, (d, text, label, split) in enumerate(SAID):
        clip = folder / "clips" / f"u{k}.mp4"
        if not clip.exists():
            write_video(clip, seconds=0.6, audio=180.0 + 30 * k)
        row = {"dialogue_id": d, "utterance_id": k % 2, "speaker": "AB"[k % 2], "text": text}
        row["video"] = f"clips/u{k}.mp4"
        if labelled:
            row.update(label=label, split=split)
        rows.append(row)
    return write_manifest(folder / ("talk.csv" if labelled else "new.csv"), rows)


def test_video_manifest_trains_and_predicts(tmp_path):
    encoder = tiny_vit(tmp_path / "vit")
    sets = [f"data.visual.encoder='{encoder}'", "data.visual.max_frames=2", "train.seeds=[0]"]
    sets += ["model.hidden_dim=16", "model.heads=2", "model.compressed_dim=8", "train.probe=false"]
    args = ["--dataset", "table", "--data", str(_manifest(tmp_path)), "--epochs", "2", "--quiet"]
    out = tmp_path / "run"
    assert (
        cli.main(["train", *args, "--out", str(out), *(a for s in sets for a in ("--set", s))]) == 0
    )
    res = json.loads((out / "seed0" / "results.json").read_text())
    assert res["modalities"] == ["audio", "text", "visual"]
    new, pred = _manifest(tmp_path, labelled=False), tmp_path / "pred"
    assert (
        cli.main(
            [
                "predict",
                str(out / "seed0" / "best.pt"),
                "--data",
                str(new),
                "--out",
                str(pred),
                "--html",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((pred / "predictions.csv").read_text().splitlines()))
    assert len(rows) == len(SAID) and {"reliance_visual", "if_absent_audio", "text"} <= set(rows[0])
    assert rows[1]["text"] == "I am furious!" and rows[1]["speaker"] == "B"
    assert abs(sum(float(rows[0][f"reliance_{m}"]) for m in ("audio", "text", "visual")) - 1) < 1e-5
    html = (pred / "report.html").read_text()
    assert "I am furious!" in html and "<script" not in html
