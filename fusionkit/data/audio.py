"""Audio features for conversation tables: openSMILE functionals per utterance, cached on disk.

openSMILE runs through its PyPI package ``opensmile`` (which ships the binary). Files whose
suffix names a format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...) are read with
``soundfile`` at their own sample rate; any other (video files: MP4, MKV, WebM, MOV, AVI;
M4A, ...) is decoded by PyAV (:func:`fusionkit.data.media.decode_audio`: its audio track,
resampled to :data:`DECODED_RATE`). Several channels are mixed down to one, a segment cut
where the table gives start/end seconds. One vector of utterance-level functionals an
utterance, of the chosen feature set (:data:`FEATURE_SETS`). Features are cached by
:mod:`fusionkit.data.cache`, keyed by the feature set, the opensmile version, every
utterance's file and times, and each file's size and modification time.

An utterance whose audio cannot be used (missing, unreadable or empty file, no audio stream,
a segment outside the recording, a clip too short for the feature set) is an
:class:`MediaError` naming the table's file and row and the audio file; with
``on_error="absent"`` it is marked absent instead (presence False) and counted. Nothing is
zero-filled as if it were audio. Needs the ``audio`` extra (and ``video`` for files PyAV
decodes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from fusionkit.data import media
from fusionkit.data.cache import cached_features, fingerprint
from fusionkit.data.media import Unusable as _Unusable
from fusionkit.data.tables import ConversationTable, Features, Segment
from fusionkit.errors import ConfigError, MediaError

FEATURE_SETS = {"eGeMAPSv02": 88, "emobase": 988, "ComParE_2016": 6373, "IS10": 1582}
"""openSMILE feature sets offered, and their widths (utterance-level functionals)."""

OnError = Literal["raise", "absent"]

DECODED_RATE = 16000
"""Sample rate (Hz) of the audio PyAV decodes (video files, M4A, ...)."""

_SUFFIXES = {"AIF": "AIFF", "AIFC": "AIFF", "OGA": "OGG", "OPUS": "OGG"}


@dataclass(frozen=True)
class AudioFeatures:
    """How audio features are made: the openSMILE ``feature_set`` (a key of
    :data:`FEATURE_SETS`), functionals over each utterance."""

    feature_set: str = "eGeMAPSv02"

    def __post_init__(self):
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(
                f"AudioFeatures.feature_set: {self.feature_set!r} is not one of {list(FEATURE_SETS)}"
            )

    def extract(self, table: ConversationTable, **options) -> Features:
        """:func:`audio_features` of ``table`` with these settings (``options``: its
        ``name``, ``cache_dir``, ``on_error``, ``progress``)."""
        return audio_features(table, features=self, **options)

    @classmethod
    def from_record(cls, record: dict) -> AudioFeatures:
        """The settings a dataset's ``extraction["audio"]`` records."""
        return cls(feature_set=record["feature_set"])


def _require():
    try:
        import opensmile
        import soundfile
    except ImportError as e:
        raise ImportError(
            "audio features need the 'audio' extra: pip install 'fusionkit[audio]'"
        ) from e
    return opensmile, soundfile


class _Clip(NamedTuple):
    """Where an utterance's samples are: read by ``soundfile`` (``first`` to ``end`` of its
    frames at ``rate``) or decoded by PyAV (``first``, ``end`` None: the segment's times)."""

    reader: Literal["soundfile", "pyav"]
    rate: int
    first: int | None = None
    end: int | None = None


def _reader(path: Path) -> Literal["soundfile", "pyav"]:
    """``soundfile`` for a suffix naming a format libsndfile reads, else ``pyav``."""
    _, sf = _require()
    suffix = path.suffix[1:].upper()
    return "soundfile" if _SUFFIXES.get(suffix, suffix) in sf.available_formats() else "pyav"


def _frames(segment: Segment) -> _Clip:
    """Where the segment's samples are, checked without reading them, or :class:`_Unusable`."""
    _, sf = _require()
    if not segment.path.is_file():
        raise _Unusable("file not found")
    if _reader(segment.path) == "pyav":
        media.check(segment, "audio")
        return _Clip("pyav", DECODED_RATE)
    try:
        info = sf.info(str(segment.path))
    except Exception as e:  # soundfile raises several kinds for a file it cannot parse
        raise _Unusable(f"unreadable as audio ({e})") from None
    if info.frames == 0:
        raise _Unusable("empty file (no samples)")
    rate, n = info.samplerate, info.frames
    first = round((segment.start or 0.0) * rate)
    end = n if segment.end is None else round(segment.end * rate)
    if first >= n or end > n:
        raise _Unusable(
            f"segment {segment.start or 0.0:g}-{'end' if segment.end is None else f'{segment.end:g}'} s "
            f"lies outside the recording ({n / rate:.3f} s long)"
        )
    return _Clip("soundfile", rate, first, end)


def _samples(segment: Segment, clip: _Clip) -> np.ndarray:
    """The segment's samples, float32 mono (n,), or :class:`_Unusable`."""
    if clip.reader == "pyav":
        return media.decode_audio(segment, clip.rate)
    _, sf = _require()
    try:
        audio, _ = sf.read(
            str(segment.path), start=clip.first, stop=clip.end, dtype="float32", always_2d=True
        )
    except Exception as e:
        raise _Unusable(f"unreadable as audio ({e})") from None
    return audio.mean(axis=1)


def _functionals(smile, segment: Segment, clip: _Clip) -> np.ndarray:
    """The segment's features (d,), or :class:`_Unusable`."""
    mono = _samples(segment, clip)
    # opensmile converts to 16-bit integers: clip float files' samples beyond +-1 (else they wrap)
    mono = np.clip(mono, -1.0, 32767 / 32768)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Segment too short": checked below
        x = smile.process_signal(mono, clip.rate).to_numpy()[0].astype(np.float32)
    if np.isnan(x).all():
        raise _Unusable(
            f"a {len(mono) / clip.rate * 1000:.0f} ms clip is too short for "
            f"{smile.feature_set.name} (openSMILE computed no frame)"
        )
    if not np.isfinite(x).all():
        raise _Unusable("openSMILE returned non-finite values")
    return x


def audio_features(
    table: ConversationTable,
    *,
    name: str,
    features: AudioFeatures = AudioFeatures(),
    cache_dir: str | Path | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
) -> Features:
    """Audio :class:`Features` of every utterance of ``table``: openSMILE functionals
    (N, ``FEATURE_SETS[feature_set]``); utterances without audio are absent (features 0).
    Read from the cache (``{name}-audio-...`` files in ``cache_dir``) when it matches, else
    extracted (with a progress bar) and cached.

    Problems found before extraction (missing, unreadable or empty files, no audio stream,
    segments outside the recording) raise at once, all listed; clips too short for the
    feature set, and audio streams that fail to decode, are found while extracting and
    raised, all listed, at its end. With ``on_error="absent"`` those
    utterances are absent instead and ``errors`` holds the messages. ``settings`` records
    how: extractor, its version, feature set and level, ``dim``, ``description``.
    """
    if on_error not in ("raise", "absent"):
        raise ConfigError(f"on_error: expected 'raise' or 'absent', got {on_error!r}")
    if "audio" not in table.modalities:
        raise ValueError(f"{table.source}: no audio column to extract features from")
    opensmile, _ = _require()
    segments = table.cells("audio")
    where = [f"{w}: audio {s.path}" if s else w for w, s in zip(table.where(), segments)]
    paths = sorted({str(s.path) for s in segments if s is not None})
    identity = {
        "extractor": "opensmile",
        "feature_set": features.feature_set,
        "keys": table.keys(),
        "segments": [None if s is None else [str(s.path), s.start, s.end] for s in segments],
    }
    content = {
        "opensmile": opensmile.__version__,
        "files": {p: fingerprint(Path(p)) for p in paths},
    }

    def build() -> Features:
        from tqdm.auto import tqdm

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[features.feature_set],
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        present = table.presence("audio")
        x = np.zeros((len(segments), len(smile.feature_names)), dtype=np.float32)
        errors, located = {}, {}
        for k, s in enumerate(segments):
            if s is not None:
                try:
                    located[k] = _frames(s)
                except _Unusable as e:
                    errors[k] = f"{where[k]}: {e}"
        if errors and on_error == "raise":
            raise MediaError(list(errors.values()))
        for k, clip in tqdm(
            located.items(), desc=f"openSMILE {features.feature_set}", disable=not progress
        ):
            try:
                x[k] = _functionals(smile, segments[k], clip)
            except _Unusable as e:
                errors[k] = f"{where[k]}: {e}"
        present[list(errors)] = False
        settings = {
            "extractor": "opensmile",
            "opensmile_version": opensmile.__version__,
            "feature_set": features.feature_set,
            "feature_level": "functionals",
            "dim": int(x.shape[1]),
            "description": f"audio = openSMILE {features.feature_set} functionals ({x.shape[1]})",
        }
        return Features(x, present, settings, tuple(errors[k] for k in sorted(errors)))

    result = cached_features(
        table,
        "audio",
        cache_dir,
        f"{name}-audio-{features.feature_set}",
        identity,
        content,
        build,
        what="audio feature",
    )
    if result.errors and on_error == "raise":  # found now, or by a run with on_error="absent"
        raise MediaError(list(result.errors))
    return result
