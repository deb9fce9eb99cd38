"""Decoding through PyAV, on videos the tests write: audio cut and resampled exactly, frames
sampled at the right times, every kind of unusable file named."""

import re

import numpy as np
import pytest

pytest.importorskip("av", reason="the 'video' extra is not installed")
pytest.importorskip("cv2", reason="the 'video' extra is not installed")
pytest.importorskip("skimage", reason="the test face comes from scikit-image")

from fusionkit.data.media import Unusable, check, decode_audio, frame_times, sample_frames
from fusionkit.data.tables import Segment
from tests.data.videos import chirp, corrupt, frame, write_audio, write_video

RATE = 16000


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Every file the tests decode, written once."""
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "face.mp4", 2.0, audio=chirp(2.0))
    write_video(d / "face.mov", 2.0, audio=chirp(2.0, 48000), rate=48000)
    write_video(d / "face.mkv", 2.0, audio=chirp(2.0))
    write_video(d / "face.webm", 2.0, audio=chirp(2.0, 48000), rate=48000, codec="libvpx-vp9")
    write_video(d / "long.mp4", 4.0, audio=chirp(4.0))
    write_video(d / "silent.mp4", 1.0, audio=None)
    write_video(d / "short.mp4", 0.1)
    write_audio(d / "tone.m4a")
    corrupt(d / "corrupt.mp4")
    (d / "empty.mp4").write_bytes(b"")
    return d


def _lag(x: np.ndarray, reference: np.ndarray, at: int) -> int:
    """The shift (samples) at which ``x`` best matches ``reference`` from ``at``."""
    lags = np.arange(-40, 41)
    scores = [np.dot(x[:4000], reference[at + lag : at + lag + 4000]) for lag in lags]
    return int(lags[np.argmax(scores)])


@pytest.mark.parametrize(
    ("name", "precision"), [("face.mp4", 0), ("face.mov", 0), ("face.mkv", 1), ("face.webm", 16)]
)
def test_audio_is_cut_exactly_and_in_step(folder, name, precision):
    reference = chirp(2.0, RATE)  # the sweep each file holds, at the decoded rate
    whole = decode_audio(Segment(folder / name))
    part = decode_audio(Segment(folder / name, 0.5, 1.5))
    assert whole.dtype == part.dtype == np.float32 and whole.ndim == part.ndim == 1
    assert len(part) == RATE  # exactly 1 s: AAC's padding and priming cut away
    assert abs(len(whole) - 2 * RATE) <= (0 if name.endswith(("mp4", "mov")) else 0.025 * RATE)
    assert abs(_lag(whole[4000:], reference, 4000)) <= precision  # where the sweep is
    assert abs(_lag(part, reference, RATE // 2)) <= precision  # a cut in the middle too
    assert np.abs(whole).max() > 0.3  # the 0.4 amplitude sweep, not silence


def test_audio_rate_and_a_long_recording_cut_by_start_and_end(folder):
    part = decode_audio(Segment(folder / "long.mp4", 2.25, 3.5), rate=8000)
    assert len(part) == 10000  # 1.25 s at 8 kHz
    assert _lag(part, chirp(4.0, 8000), 18000) == 0
    assert len(decode_audio(Segment(folder / "long.mp4", 3.0))) == RATE  # to the end: 1 s


def test_a_clip_of_a_tenth_of_a_second(folder):
    assert len(decode_audio(Segment(folder / "short.mp4"))) == RATE // 10
    frames = sample_frames(Segment(folder / "short.mp4"), fps=2, max_frames=8)
    assert frames.shape == (1, 240, 320, 3)  # at least one frame, whatever the rate


def test_frame_times_spread_over_the_segment():
    np.testing.assert_allclose(frame_times(0.5, 1.5, 4, 8), [0.625, 0.875, 1.125, 1.375])
    np.testing.assert_allclose(frame_times(0, 10, 2, 4), [1.25, 3.75, 6.25, 8.75])  # capped
    np.testing.assert_allclose(frame_times(1, 1.1, 2, 8), [1.05])  # one, in the middle


def _shown(frames: np.ndarray, n: int) -> list[int]:
    """For each decoded frame, the index of the written frame it is closest to."""
    written = np.stack([frame(i, n) for i in range(n)]).astype(np.float32)
    return [
        int(np.abs(written - f.astype(np.float32)).mean(axis=(1, 2, 3)).argmin()) for f in frames
    ]


@pytest.mark.parametrize("name", ["face.mp4", "face.mkv", "face.webm"])
def test_frames_are_those_shown_at_the_sampled_times(folder, name):
    frames = sample_frames(Segment(folder / name, 0.5, 1.5), fps=4, max_frames=8)
    assert frames.dtype == np.uint8 and frames.shape == (4, 240, 320, 3)
    assert _shown(frames, 50) == [15, 21, 28, 34]  # 25 fps: the frame on screen at each time


def test_frames_of_a_long_recording_cut_and_capped(folder):
    frames = sample_frames(Segment(folder / "long.mp4", 3.0, 4.0), fps=25, max_frames=5)
    assert frames.shape[0] == 5  # 25 asked, 5 allowed: spread over the second
    assert _shown(frames, 100) == [77, 82, 87, 92, 97]
    whole = sample_frames(Segment(folder / "silent.mp4"), fps=3, max_frames=8)
    assert _shown(whole, 25) == [4, 12, 20]  # no audio stream: video still reads


OUTSIDE = r"lies outside the recording \(2.000 s long\)"
PROBLEMS = [  # file, start, end, kind, what the message says
    ("missing.mp4", None, None, "video", "file not found"),
    ("empty.mp4", None, None, "audio", r"empty file \(0 bytes\)"),
    ("corrupt.mp4", None, None, "video", r"unreadable by FFmpeg \(Invalid data found .*\)"),
    ("silent.mp4", None, None, "audio", r"no audio stream \(streams: video\)"),
    ("tone.m4a", None, None, "video", r"no video stream \(streams: audio\)"),
    ("face.mp4", 1.5, 3.0, "video", rf"segment 1.5-3 s {OUTSIDE}"),
    ("face.mp4", 2.5, None, "audio", rf"segment 2.5-end s {OUTSIDE}"),
]


@pytest.mark.parametrize(("file", "start", "end", "kind", "problem"), PROBLEMS)
def test_unusable_files_say_why(folder, file, start, end, kind, problem):
    segment = Segment(folder / file, start, end)
    for read in (
        lambda: check(segment, kind),
        lambda: decode_audio(segment) if kind == "audio" else sample_frames(segment, 2, 8),
    ):
        with pytest.raises(Unusable) as e:
            read()
        assert re.fullmatch(problem, str(e.value)), str(e.value)
        assert str(folder) not in str(e.value)  # the caller names the file


def test_no_frame_where_the_video_ends_before_the_audio(tmp_path):
    # Matroska gives no stream's length, only the file's: the audio's 2 s
    path = write_video(tmp_path / "ends.mkv", 1.0, audio=chirp(2.0), fps=10)
    segment = Segment(path, 1.5, 2.0)
    assert check(segment, "video") == pytest.approx(2.0, abs=0.05)  # the file's length
    assert len(decode_audio(segment)) == RATE // 2
    ends = r"^no video frame in segment 1.5-2 s \(the video ends at 1.000 s\)$"
    with pytest.raises(Unusable, match=ends):
        sample_frames(segment, 2, 8)
