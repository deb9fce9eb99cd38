"""Decoding media files through PyAV (FFmpeg): an utterance's audio samples and video frames.

Any container FFmpeg reads works (MP4, MKV, WebM, MOV, AVI; M4A, MP3, OGG audio). Times
are seconds from the file's start (the container's first timestamp), so that a file's
audio and video stay in step. A segment may end up to :data:`SLACK` seconds after a
stream's last sample or frame (a file's streams differ by about that much: AAC frames,
the last video frame's duration); a segment further out is unusable.

Every problem with a file is an :class:`Unusable`, whose message says what (the caller
adds the table row and the file, :class:`~fusionkit.errors.MediaError`). Needs the
``video`` extra (``av``, whose wheels bundle FFmpeg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from fusionkit.data.tables import Segment

SLACK = 0.05
"""Seconds a segment may end after a stream's last sample or frame."""

PREROLL = 0.25
"""Seconds before a segment's start from which its audio is decoded (Opus, AAC: the first
samples after a seek are incomplete)."""

Kind = Literal["audio", "video"]


class Unusable(Exception):
    """One file's problem, without the table row and the file (the caller adds them)."""


def require_av():
    """The ``av`` module, or an ImportError naming the extra."""
    try:
        import av
    except ImportError as e:
        raise ImportError(
            "video files need the 'video' extra: pip install 'fusionkit-mer[video]'"
        ) from e
    return av


def _reason(error: Exception) -> str:
    """FFmpeg's message without the file name (the caller names the file)."""
    return getattr(error, "strerror", None) or str(error)


def _open(path: Path):
    """The opened container, or :class:`Unusable`."""
    av = require_av()
    if not path.is_file():
        raise Unusable("file not found")
    if path.stat().st_size == 0:
        raise Unusable("empty file (0 bytes)")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise Unusable(f"unreadable by FFmpeg ({_reason(e)})") from None


def _stream(container, kind: Kind):
    """The file's first ``kind`` stream, or :class:`Unusable`."""
    streams = container.streams.audio if kind == "audio" else container.streams.video
    if not streams:
        found = ", ".join(s.type for s in container.streams) or "none"
        raise Unusable(f"no {kind} stream (streams: {found})")
    return streams[0]


def _timing(container, stream) -> tuple[float, float | None]:
    """The file's first timestamp (s) and where ``stream`` ends, seconds after it (None:
    the file does not say)."""
    origin = 0.0 if container.start_time is None else container.start_time / 1e6
    if stream.duration is not None and stream.duration > 0:
        begin = 0 if stream.start_time is None else stream.start_time
        return origin, float((begin + stream.duration) * stream.time_base) - origin
    if container.duration is not None and container.duration > 0:
        return origin, container.duration / 1e6
    return origin, None


def _span(segment: Segment, length: float | None) -> tuple[float, float]:
    """The segment's start and end (s): its end defaults to ``length``; outside the stream:
    :class:`Unusable`."""
    start = segment.start or 0.0
    if length is not None and (start >= length or (segment.end or 0.0) > length + SLACK):
        end = "end" if segment.end is None else f"{segment.end:g}"
        raise Unusable(
            f"segment {start:g}-{end} s lies outside the recording ({length:.3f} s long)"
        )
    end = segment.end if segment.end is not None else length
    return start, (np.inf if end is None else end)


def check(segment: Segment, kind: Kind) -> float | None:
    """Check, without decoding, that ``segment`` has a ``kind`` stream and lies inside it:
    the stream's length in seconds (None: the file does not say), or :class:`Unusable`."""
    with _open(segment.path) as container:
        stream = _stream(container, kind)
        _, length = _timing(container, stream)
        _span(segment, length)
        return length


def _decoded(container, stream, what: str):
    """The stream's frames; a decoding failure is :class:`Unusable`."""
    av = require_av()
    try:
        yield from container.decode(stream)
    except av.FFmpegError as e:
        raise Unusable(f"{what} stream unreadable by FFmpeg ({_reason(e)})") from None


def _seek(container, stream, origin: float, start: float) -> None:
    """Move to the last key frame at or before ``start`` (no move for a start at 0)."""
    if start > 0:
        container.seek(round((origin + start) / stream.time_base), stream=stream, backward=True)


def decode_audio(segment: Segment, rate: int = 16000) -> np.ndarray:
    """The segment's audio, float32 mono (n,) at ``rate`` Hz: resampled, channels averaged,
    cut to exactly the segment's start and end (its end defaults to the end of the audio
    stream, not of the last decoded frame: AAC pads a few samples there). Where a cut falls
    is as precise as the file's timestamps: to the sample in MP4 and MOV, within a
    millisecond in Matroska and WebM."""
    av = require_av()
    with _open(segment.path) as container:
        stream = _stream(container, "audio")
        origin, length = _timing(container, stream)
        start, end = _span(segment, length)
        _seek(container, stream, origin, start - PREROLL)  # before it: codecs' pre-roll
        as_float = av.AudioResampler(format="fltp")  # the file's rate and channels
        chunks, starts, fed, clock, native = [], [], 0, None, None
        for frame in _decoded(container, stream, "audio"):
            t = clock if frame.pts is None else float(frame.time) - origin
            t = t if t is not None else 0.0
            clock = t + frame.samples / frame.sample_rate
            if clock <= start - PREROLL:  # wholly before the pre-roll
                continue
            if t >= end:
                break
            if native not in (None, frame.sample_rate):
                raise Unusable(
                    f"sample rate changes in the stream ({native}, {frame.sample_rate} Hz)"
                )
            native = frame.sample_rate
            starts.append(t - fed / native)  # when the first sample was, by this frame's time
            fed += frame.samples
            chunks += [f.to_ndarray().mean(axis=0) for f in as_float.resample(frame)]
        if not starts:
            raise Unusable(f"no audio samples in segment {start:g}-{end:g} s")
    # the median over frames: Matroska's times are rounded to the millisecond
    first_time = float(np.median(starts))
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    begin = max(round((start - first_time) * native), 0)
    stop = len(samples) if not np.isfinite(end) else round((end - first_time) * native)
    cut = samples[begin:stop]
    if cut.size == 0:
        raise Unusable(f"no audio samples in segment {start:g}-{end:g} s")
    if native == rate:
        return np.ascontiguousarray(cut)
    # resampled in one piece from time 0: FFmpeg's resampler then keeps it in step
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    piece = av.AudioFrame.from_ndarray(cut[None, :], format="flt", layout="mono")
    piece.rate, piece.pts = native, 0
    out = [f.to_ndarray()[0] for f in [*resampler.resample(piece), *resampler.resample(None)]]
    return np.concatenate(out)[: round(len(cut) * rate / native)]


def frame_times(start: float, end: float, fps: float, max_frames: int) -> np.ndarray:
    """Times (s) at which to sample a segment: ``fps`` a second, at least one and at most
    ``max_frames``, evenly spread, each at the middle of its share of the segment (k,)."""
    count = int(np.clip(round((end - start) * fps), 1, max_frames))
    return start + (np.arange(count) + 0.5) * (end - start) / count


def sample_frames(segment: Segment, fps: float, max_frames: int, *, threads: int = 0) -> np.ndarray:
    """The frames shown at :func:`frame_times` of the segment, RGB uint8 (k, h, w, 3).

    ``threads``: the decoder's threads (0: FFmpeg's choice; 1 in worker processes)."""
    with _open(segment.path) as container:
        stream = _stream(container, "video")
        origin, length = _timing(container, stream)
        start, end = _span(segment, length)
        if not np.isfinite(end):
            length = _scan_length(segment.path)
            start, end = _span(segment, length)
        times = frame_times(start, end, fps, max_frames)
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        stream.thread_count = threads
        _seek(container, stream, origin, start)
        step = 1 / float(stream.average_rate) if stream.average_rate else 0.0
        shown: list = [None] * len(times)
        i, previous, t = 0, None, None
        for frame in _decoded(container, stream, "video"):
            t = float(frame.time) - origin if frame.pts is not None else (t or 0.0) + step
            while i < len(times) and times[i] < t:
                shown[i] = frame if previous is None else previous  # the frame on screen then
                i += 1
            previous = frame
            if i == len(times):
                break
        if previous is None or (i < len(times) and t + step + SLACK < times[i]):
            ends = "" if previous is None else f" (the video ends at {t + step:.3f} s)"
            raise Unusable(f"no video frame in segment {start:g}-{end:g} s{ends}")
        shown[i:] = [previous] * (len(times) - i)  # after the last frame: it stays on screen
        images = {}
        for frame in shown:
            if id(frame) not in images:
                images[id(frame)] = frame.to_ndarray(format="rgb24")
        return np.stack([images[id(f)] for f in shown])


def _scan_length(path: Path) -> float:
    """A video stream's length (s) found by reading its packets, for files that do not say."""
    with _open(path) as container:
        stream = _stream(container, "video")
        origin, _ = _timing(container, stream)
        last = None
        for packet in container.demux(stream):
            if packet.pts is not None:
                step = packet.duration or 0
                t = float((packet.pts + step) * stream.time_base) - origin
                last = t if last is None else max(last, t)
        if last is None:
            raise Unusable("no video frame in the file")
        return last
