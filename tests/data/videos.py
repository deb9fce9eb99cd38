"""Small videos written by the tests with PyAV: a real face photo (scikit-image's astronaut)
moving across the frame, a tone as the audio track."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from tests.data.recordings import tone

FACE = 160
"""Side (pixels) of the astronaut picture (head and shoulders) pasted into each frame; her
face is about a third of it."""


@cache
def _astronaut() -> np.ndarray:
    import cv2
    from skimage import data

    head = data.astronaut()[16:272, 96:352]  # head and shoulders: her face is 95 px of 256
    return cv2.resize(head, (FACE, FACE), interpolation=cv2.INTER_AREA)


def frame(i: int, n: int, size: tuple[int, int] = (320, 240), face: bool = True) -> np.ndarray:
    """Frame ``i`` of ``n``, RGB uint8 (h, w, 3): grey with the astronaut picture moved from
    the left edge to the right one (``face``), else a moving stripe pattern with no face."""
    w, h = size
    if not face:
        x = (np.arange(w)[None, :] + 4 * i + np.arange(h)[:, None]) % 64
        return np.repeat((x * 4).astype(np.uint8)[..., None], 3, axis=2)
    image = np.full((h, w, 3), 96, dtype=np.uint8)
    left = round((w - FACE) * i / max(n - 1, 1))
    top = (h - FACE) // 2
    image[top : top + FACE, left : left + FACE] = _astronaut()
    return image


def write_video(
    path: Path,
    seconds: float = 2.0,
    *,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    face: bool = True,
    audio: float | np.ndarray | None = 220.0,
    rate: int = 44100,
    codec: str = "libx264",
) -> Path:
    """A video of ``seconds`` (the container by the suffix: .mp4, .mkv, .webm, ...) in
    ``codec``, with a mono AAC (Opus for .webm) track: a tone of ``audio`` Hz, or ``audio``'s
    samples at ``rate`` Hz (None: no audio stream)."""
    import av

    n = max(round(seconds * fps), 1)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        sound = None
        if audio is not None:
            webm = path.suffix == ".webm"
            rate = 48000 if webm and np.isscalar(audio) else rate
            sound = out.add_stream("libopus" if webm else "aac", rate=rate)
            sound.layout = "mono"
        for i in range(n):
            picture = av.VideoFrame.from_ndarray(frame(i, n, size, face), format="rgb24")
            picture.pts = i
            out.mux(video.encode(picture))
        out.mux(video.encode())
        if sound is not None:
            samples = tone(audio, seconds, rate) if np.isscalar(audio) else audio
            step = sound.codec_context.frame_size or 1024
            for k in range(0, len(samples), step):
                chunk = av.AudioFrame.from_ndarray(
                    samples[None, k : k + step], format="flt", layout="mono"
                )
                chunk.rate, chunk.pts = rate, k
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return path


def write_audio(path: Path, seconds: float = 1.0, freq: float = 220.0, rate: int = 44100) -> Path:
    """An audio-only file (M4A: AAC; MP3) of a tone, by the suffix."""
    import av

    codec = {".m4a": "aac", ".mp3": "libmp3lame"}[path.suffix]
    with av.open(str(path), "w") as out:
        sound = out.add_stream(codec, rate=rate)
        sound.layout = "mono"
        samples = tone(freq, seconds, rate)
        step = 1152 if codec == "libmp3lame" else 1024
        fmt = "s16p" if codec == "libmp3lame" else "fltp"
        for k in range(0, len(samples), step):
            chunk = samples[None, k : k + step]
            if fmt == "s16p":
                chunk = np.round(chunk * 32767).astype(np.int16)
            frame_ = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            frame_.rate, frame_.pts = rate, k
            out.mux(sound.encode(frame_))
        out.mux(sound.encode())
    return path


def chirp(seconds: float = 2.0, rate: int = 44100) -> np.ndarray:
    """A sweep from 200 Hz to 3 kHz, float32 (n,): each stretch unlike any other, so that
    where a cut begins shows."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * (200 * t + 1400 * t**2 / seconds))).astype(np.float32)


def corrupt(path: Path, size: int = 4000) -> Path:
    """A file that starts like an MP4 (an ``ftyp`` box) and continues with random bytes."""
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    path.write_bytes(head + np.random.default_rng(0).bytes(size))
    return path


def tiny_vit(folder: Path, width: int = 16) -> str:
    """A randomly initialised ViT image classifier (hidden size ``width``) with its image
    processor, saved to ``folder``: an image encoder that loads offline."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=width,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=7,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)
