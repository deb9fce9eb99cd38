"""openSMILE audio features of recordings the tests write: widths, mixing, segments, errors,
absence and the cache."""

import os
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("opensmile", reason="the 'audio' extra is not installed")
pytest.importorskip("soundfile", reason="the 'audio' extra is not installed")

from fusionkit.data import (
    FEATURE_SETS,
    AudioFeatures,
    MediaError,
    audio_features,
    read_conversation_table,
)
from fusionkit.data import audio as audio_module
from fusionkit.data.store import read_meta
from tests.data.recordings import noise, tone, utterance, write, write_manifest


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Every recording the tests use, written once."""
    d = tmp_path_factory.mktemp("recordings")
    write(d / "tone.wav", tone())
    write(d / "tone.flac", tone())
    write(d / "noise.wav", noise())
    write(d / "silence.wav", np.zeros(16000, dtype=np.float32))
    left = tone(330, 2.0, rate=44100)
    write(d / "stereo44.wav", np.stack([left, left], axis=1), 44100)
    write(d / "mono44.wav", left, 44100)
    write(d / "clip50.wav", tone(seconds=0.05))
    long = np.concatenate([tone(), noise(seed=1), tone(440)])  # 3 s
    write(d / "long.wav", long)
    write(d / "middle.wav", long[16000:32000])  # what long.wav's segment 1-2 s holds
    (d / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(2000))
    write(d / "empty.wav", np.zeros(0, dtype=np.float32))
    return d


def _features(folder, rows, feature_set="eGeMAPSv02", name="m.csv", **kw):
    """Audio features of a manifest of ``rows`` (file, start, end) written into ``folder``."""
    path = write_manifest(
        folder / name,
        [
            utterance("d", i, file, start=start, end=end)
            for i, (file, start, end) in enumerate(rows)
        ],
    )
    table = read_conversation_table(path)
    assert table.modalities == ("audio",)
    return audio_features(
        table, name="m", features=AudioFeatures(feature_set), progress=False, **kw
    )


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_widths_and_features_that_tell_recordings_apart(folder, feature_set):
    f = _features(
        folder, [(n, "", "") for n in ("tone.wav", "noise.wav", "silence.wav")], feature_set
    )
    assert f.x.shape == (3, FEATURE_SETS[feature_set]) and f.present.all() and not f.errors
    assert np.isfinite(f.x).all()
    tone_x, noise_x, _ = f.x
    assert np.abs(tone_x - noise_x).max() > 0.1 * np.abs(tone_x).max()  # not alike
    assert tone_x.std() > 0 and noise_x.std() > 0  # not constant vectors
    assert f.settings["feature_set"] == feature_set and f.settings["dim"] == f.x.shape[1]


def test_formats_channels_rates_and_segments(folder):
    f = _features(
        folder,
        [
            ("tone.wav", "", ""),
            ("tone.flac", "", ""),  # lossless: the same samples
            ("stereo44.wav", "", ""),  # both channels equal: mixed down, the mono file
            ("mono44.wav", "", ""),
            ("long.wav", "1.0", "2.0"),  # a segment: the file holding just those samples
            ("middle.wav", "", ""),
            ("long.wav", "", "1"),  # start defaults to 0 ...
            ("long.wav", "0", ""),  # ... and end to the end of the file
        ],
    )
    np.testing.assert_array_equal(f.x[0], f.x[1])
    np.testing.assert_array_equal(f.x[2], f.x[3])
    np.testing.assert_allclose(f.x[4], f.x[5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(f.x[6], f.x[7])  # 1 s of tone vs the whole 3 s


PROBLEMS = [  # file, start, end, what the message says
    ("missing.wav", "", "", "file not found"),
    ("corrupt.wav", "", "", r"unreadable as audio \(.+\)"),
    ("empty.wav", "", "", r"empty file \(no samples\)"),
    ("long.wav", "2.5", "3.5", r"segment 2.5-3.5 s lies outside the recording \(3.000 s long\)"),
    ("long.wav", "3.25", "", r"segment 3.25-end s lies outside the recording \(3.000 s long\)"),
    (
        "clip50.wav",
        "",
        "",
        r"a 50 ms clip is too short for eGeMAPSv02 \(openSMILE computed no frame\)",
    ),
]


@pytest.mark.parametrize(("file", "start", "end", "problem"), PROBLEMS)
def test_unusable_audio_names_the_row_and_the_file(folder, file, start, end, problem):
    with pytest.raises(MediaError) as e:
        _features(folder, [("tone.wav", "", ""), (file, start, end)])
    where = re.escape(f"{folder / 'm.csv'}: row 2: audio {folder / file}")
    assert re.fullmatch(f"{where}: {problem}", str(e.value)), str(e.value)


def test_every_problem_is_listed_or_made_absent(folder):
    rows = [("tone.wav", "", "")] + [(f, s, e) for f, s, e, _ in PROBLEMS]
    with pytest.raises(MediaError) as e:  # found before extraction: all at once
        _features(folder, rows)
    assert str(e.value).startswith("5 utterances have unusable data:\n")
    assert [p.split(": row ")[1][:1] for p in e.value.problems] == ["2", "3", "4", "5", "6"]
    f = _features(folder, rows, on_error="absent")
    assert f.present.tolist() == [True] + [False] * len(PROBLEMS)
    assert len(f.errors) == len(PROBLEMS) and "row 7" in f.errors[-1]  # the short clip too
    assert (f.x[1:] == 0).all()  # absent: no value means anything, and none is invented
    assert np.isfinite(f.x[0]).all() and f.x[0].std() > 0


def test_unknown_feature_set():
    with pytest.raises(ValueError, match=r"'IS09' is not one of \['eGeMAPSv02', 'emobase'"):
        AudioFeatures("IS09")


def test_cache_is_reused_and_rebuilt_when_stale(folder, tmp_path, monkeypatch, capsys):
    for name in ("tone.wav", "noise.wav"):
        shutil.copy(folder / name, tmp_path / name)
    calls = []
    extract = audio_module._functionals
    monkeypatch.setattr(
        audio_module, "_functionals", lambda *a: calls.append(a[1].path.name) or extract(*a)
    )
    cache = tmp_path / "cache"
    rows = [("tone.wav", "", ""), ("noise.wav", "", "")]
    first = _features(tmp_path, rows, cache_dir=cache)
    assert calls == ["tone.wav", "noise.wav"]
    (path,) = cache.glob("m-audio-eGeMAPSv02-*.npz")
    assert read_meta(path)["cache"]["feature_set"] == "eGeMAPSv02"
    again = _features(tmp_path, rows, cache_dir=cache)
    assert len(calls) == 2  # read from the cache
    np.testing.assert_array_equal(again.x, first.x)

    stat = (tmp_path / "noise.wav").stat()
    write(tmp_path / "noise.wav", noise(seed=7))  # the same size: only the contents changed
    os.utime(tmp_path / "noise.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = _features(tmp_path, rows, cache_dir=cache)
    out = capsys.readouterr().out
    assert f"is stale (files: 1 changed, e.g. {tmp_path / 'noise.wav'})" in out
    assert calls[2:] == ["tone.wav", "noise.wav"]
    np.testing.assert_array_equal(rebuilt.x[0], first.x[0])
    assert not np.array_equal(rebuilt.x[1], first.x[1])

    other = _features(tmp_path, rows, "emobase", cache_dir=cache)  # other settings
    assert len(calls) == 6 and other.x.shape == (2, 988)
    assert len(list(cache.glob("m-audio-*.npz"))) == 2  # each feature set has its cache

    shorter = _features(tmp_path, [("tone.wav", "0", "0.5"), rows[1]], cache_dir=cache)
    assert len(calls) == 8 and not np.array_equal(shorter.x[0], first.x[0])  # other times


def test_a_cache_with_absent_audio_still_raises_when_asked(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    rows = [("tone.wav", "", ""), ("clip50.wav", "", "")]
    f = _features(folder, rows, name="short.csv", cache_dir=cache, on_error="absent")
    assert f.present.tolist() == [True, False]
    monkeypatch.setattr(audio_module, "_functionals", None)  # nothing may be extracted now
    with pytest.raises(MediaError, match=r"short\.csv: row 2: audio .*clip50\.wav: a 50 ms clip"):
        _features(folder, rows, name="short.csv", cache_dir=cache)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A tone at 16 kHz as WAV, and the same tone in video and audio containers (AAC)."""
    pytest.importorskip("av", reason="the 'video' extra is not installed")
    pytest.importorskip("cv2", reason="the 'video' extra is not installed")
    pytest.importorskip("skimage", reason="the test videos' face comes from scikit-image")
    from tests.data.videos import write_audio, write_video

    d = tmp_path_factory.mktemp("videos")
    write(d / "tone.wav", tone(220, 2.0))
    write(d / "noise.wav", noise(2.0))
    write_video(d / "tone.mp4", 2.0)
    write_video(d / "tone.mkv", 2.0)
    write_audio(d / "tone.m4a", 2.0)
    write_video(d / "long.mp4", 4.0, audio=np.concatenate([tone(220, 2.0, 44100)] * 2))
    write_video(d / "silent.mp4", 1.0, audio=None)
    return d


def test_audio_tracks_of_video_files_and_other_containers(videos):
    f = _features(
        videos,
        [
            ("tone.wav", "", ""),
            ("tone.mp4", "", ""),  # AAC at 44.1 kHz, decoded to 16 kHz: the tone, lossily
            ("tone.mkv", "", ""),
            ("tone.m4a", "", ""),
            ("long.mp4", "2", "4"),  # a cut of a longer recording: its second copy of the tone
            ("noise.wav", "", ""),
        ],
    )
    assert f.present.all() and not f.errors
    wav, *coded, noisy = f.x
    scale = np.abs(wav).max()
    for x in coded:
        assert np.abs(x - wav).max() < 0.05 * scale  # the same sound ...
    assert np.abs(noisy - wav).max() > 0.5 * scale  # ... where another sound is far


def test_a_video_without_an_audio_stream(videos):
    with pytest.raises(MediaError) as e:
        _features(videos, [("tone.mp4", "", ""), ("silent.mp4", "", "")])
    where = f"{videos / 'm.csv'}: row 2: audio {videos / 'silent.mp4'}"
    assert str(e.value) == f"{where}: no audio stream (streams: video)"
    f = _features(videos, [("tone.mp4", "1.5", "2.5"), ("silent.mp4", "", "")], on_error="absent")
    assert f.present.tolist() == [False, False] and len(f.errors) == 2
    assert (
        "row 1: audio" in f.errors[0] and "lies outside the recording (2.000 s long)" in f.errors[0]
    )
