"""Small recordings and manifests written by the tests (tones, noise, silence, stereo, ...)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

RATE = 16000


def tone(freq: float = 220.0, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """A sine with a slow tremolo (so that its frames differ), float32 in [-0.5, 0.5]."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t) * (1 + 0.25 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def noise(seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(
        np.float32
    )


def write(path: Path, signal: np.ndarray, rate: int = RATE) -> Path:
    """Write ``signal`` (samples,) or (samples, channels) in [-1, 1] as 16-bit PCM (WAV or
    FLAC by suffix), rounded here: libsndfile's own rounding differs between the two."""
    import soundfile as sf

    sf.write(str(path), np.round(signal * 32767).astype(np.int16), rate, subtype="PCM_16")
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """A CSV manifest with the union of the rows' keys as columns (missing cells empty)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def utterance(dialogue: str, index: int, audio: str = "", **cells) -> dict:
    """A manifest row: speaker alternating A/B, split train unless given."""
    return {
        "dialogue_id": dialogue,
        "utterance_id": index,
        "speaker": "AB"[index % 2],
        "audio": audio,
        "split": "train",
        **cells,
    }


def conversations(folder: Path, *, labelled: bool = True) -> Path:
    """Three dialogues (train, dev, test) with text and audio, two utterances without audio."""
    (folder / "audio").mkdir(exist_ok=True)
    write(folder / "audio" / "call1.wav", np.concatenate([tone(), noise(), tone(330)]))
    write(folder / "audio" / "hello.flac", tone(180))
    write(folder / "audio" / "noise.wav", noise(seed=3))
    said = [
        (
            "call1",
            0,
            "Ann",
            "Hello, how was your day?",
            "audio/call1.wav",
            0,
            1,
            "neutral",
            "train",
        ),
        ("call1", 1, "Bob", "Terrible, I am so angry.", "audio/call1.wav", 1, 2, "anger", "train"),
        ("call1", 2, "Ann", "Oh no, what happened?", "", "", "", "surprise", "train"),
        ("call1", 3, "Bob", "They cancelled my trip!", "audio/call1.wav", 2, 3, "anger", "train"),
        ("call2", 0, "Cy", "We won the match!", "audio/hello.flac", "", "", "joy", "dev"),
        ("call2", 1, "Di", "Great news, well done.", "audio/noise.wav", "", "", "joy", "dev"),
        ("call3", 0, "Eve", "Is anyone there?", "audio/noise.wav", "", "", "neutral", "test"),
        (
            "call3",
            1,
            "Fay",
            "Yes, sorry, I was away.",
            "audio/hello.flac",
            "",
            "",
            "neutral",
            "test",
        ),
    ]
    keys = [
        "dialogue_id",
        "utterance_id",
        "speaker",
        "text",
        "audio",
        "start",
        "end",
        "label",
        "split",
    ]
    rows = [dict(zip(keys, r)) for r in said]
    rows[6]["has_audio"] = "0"  # recorded, but known to be unusable
    if not labelled:
        rows = [{k: v for k, v in r.items() if k not in ("label", "split")} for r in rows]
    return write_manifest(folder / ("manifest.csv" if labelled else "new.csv"), rows)
