"""Visual features for conversation tables: frames sampled in each utterance's video segment,
an optional face crop, an image encoder, the frames pooled; cached on disk.

Per utterance: frames at ``fps`` a second inside its segment (at least one, at most
``max_frames``, :func:`~fusionkit.data.media.frame_times`), decoded by PyAV
(:mod:`fusionkit.data.media`); with ``face_crop`` each frame is cut to its largest face
found by OpenCV's Haar cascade (:data:`FACE_DETECTOR`; the whole frame where none is
found, counted in ``settings["frames_without_face"]``); each frame goes through a
``transformers`` image model (:func:`load_image_encoder`: a Hugging Face id, downloaded on
first use into the Hugging Face cache, or a local folder, read offline) to one embedding;
the frames' embeddings are pooled: mean and standard deviation (``mean_std``, 2d) or mean
(``mean``, d). Decoding and face crops run on ``workers`` processes, the encoder in this
one, in batches of ``batch_size`` frames.

Features are cached by :mod:`fusionkit.data.cache`, keyed by the settings, every
utterance's file and times, each file's size and modification time (and, for a folder
encoder, its files'), and the versions of PyAV, OpenCV and transformers. An utterance
whose video cannot be used (missing, unreadable, corrupt or empty file, no video stream, a
segment outside it, no frame in the segment) is a :class:`~fusionkit.errors.MediaError`
naming the table's file and row and the video file; with ``on_error="absent"`` it is
marked absent instead and counted. Needs the ``video`` extra; importing this module does
not import PyAV, OpenCV, transformers or torch's hub code.
"""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from fusionkit.data import media
from fusionkit.data.audio import OnError
from fusionkit.data.cache import cached_features, fingerprint, slug
from fusionkit.data.tables import ConversationTable, Features, Segment
from fusionkit.errors import ConfigError, MediaError, MissingFileError

DEFAULT_VISUAL_ENCODER = "trpakov/vit-face-expression"
"""ViT-B/16 (ImageNet-21k) fine-tuned on FER2013's 7 facial expressions (the labels of
MELD's emotions): 768-d [CLS] embeddings of face crops, about 86M parameters."""

POOLINGS = {"mean_std": 2, "mean": 1}
"""Frame poolings, and the feature width as a multiple of the encoder's."""

CASCADE = "haarcascade_frontalface_default.xml"  # shipped in opencv-python(-headless) < 5
FACE_DETECTOR = f"opencv {CASCADE.removesuffix('.xml')}"
DETECT_SIDE = 360  # faces are searched on a copy whose shorter side is at most this: faces
# from 24 pixels of it (the cascade's window), 1/15 of the frame's height, are found
FACE_MARGIN = 0.2  # the crop: the face's square box grown by this fraction on each side


@dataclass(frozen=True)
class VisualFeatures:
    """How visual features are made: the image ``encoder`` (:func:`load_image_encoder`),
    ``fps`` frames a second of each segment, at most ``max_frames``, cut to the largest face
    (``face_crop``), pooled (a key of :data:`POOLINGS`); ``batch_size`` frames a forward
    pass, decoding on ``workers`` processes (1: in this process)."""

    encoder: str = DEFAULT_VISUAL_ENCODER
    fps: float = 2.0
    max_frames: int = 8
    face_crop: bool = True
    pooling: str = "mean_std"
    batch_size: int = 32
    workers: int = 1

    def __post_init__(self):
        problems = []
        if not (isinstance(self.fps, int | float) and math.isfinite(self.fps) and self.fps > 0):
            problems.append(f"fps {self.fps!r} is not a positive number")
        for name in ("max_frames", "batch_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} {value!r} is not an integer >= 1")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling {self.pooling!r} is not one of {list(POOLINGS)}")
        if problems:
            raise ValueError(f"VisualFeatures: {'; '.join(problems)}")
        object.__setattr__(self, "fps", float(self.fps))  # 2 and 2.0: one cache

    def extract(self, table: ConversationTable, **options) -> Features:
        """:func:`visual_features` of ``table`` with these settings (``options``: its
        ``name``, ``cache_dir``, ``on_error``, ``progress``)."""
        return visual_features(table, features=self, **options)

    @classmethod
    def from_record(cls, record: dict) -> VisualFeatures:
        """The settings a dataset's ``extraction["visual"]`` records."""
        keys = ("encoder", "fps", "max_frames", "face_crop", "pooling")
        return cls(**{k: record[k] for k in keys})


# -- frames: decoding and face crops (in worker processes) ----------------------------


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "face crops need the 'video' extra: pip install 'fusionkit-mer[video]'"
        ) from e
    return cv2


def face_box(image: np.ndarray, detector) -> tuple[int, int, int, int] | None:
    """The largest face of an RGB uint8 image (h, w, 3) as (left, top, right, bottom)
    pixels: the detected box made square and grown by :data:`FACE_MARGIN` on each side, cut
    to the image; None where no face is found."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_SIDE / min(h, w))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    boxes = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(boxes) == 0:
        return None
    x, y, bw, bh = (v / scale for v in max(boxes, key=lambda b: b[2] * b[3]))
    half = max(bw, bh) * (0.5 + FACE_MARGIN)
    cx, cy = x + bw / 2, y + bh / 2
    left, top = max(round(cx - half), 0), max(round(cy - half), 0)
    return left, top, min(round(cx + half), w), min(round(cy + half), h)


def _detector():
    """OpenCV's frontal-face Haar cascade, from the files its wheel ships."""
    cv2 = _cv2()
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), CASCADE)
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise ImportError(
            f"face crops need OpenCV's {CASCADE}, shipped by opencv-python-headless < 5 "
            f"(not found at {path!r}): pip install 'fusionkit-mer[video]'"
        )
    return detector


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` scaled so that its shorter side is ``side`` pixels."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    scale = side / min(h, w)
    size = (max(round(w * scale), 1), max(round(h * scale), 1))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


_WORKER: dict = {}  # per process: the face detector, made once


def frames_of(
    segment: Segment, features: VisualFeatures, side: int, *, threads: int = 0
) -> tuple[list[np.ndarray], int]:
    """The segment's sampled frames as the encoder gets them (each RGB uint8, its shorter
    side ``side``: the face crop, or the whole frame), and how many had no face found.
    A problem with the file is :class:`~fusionkit.data.media.Unusable`."""
    frames = media.sample_frames(segment, features.fps, features.max_frames, threads=threads)
    images, without_face = [], 0
    for image in frames:
        if features.face_crop:
            if "detector" not in _WORKER:
                _WORKER["detector"] = _detector()
            box = face_box(image, _WORKER["detector"])
            if box is None:
                without_face += 1
            else:
                left, top, right, bottom = box
                image = image[top:bottom, left:right]
        images.append(_resize(image, side))
    return images, without_face


def _check(job: tuple[int, Segment]) -> tuple[int, str | None]:
    k, segment = job
    try:
        media.check(segment, "video")
    except media.Unusable as e:
        return k, str(e)
    return k, None


def _prepare(job: tuple[int, Segment, VisualFeatures, int, int]):
    """(k, frames, frames without a face) or (k, the problem, None)."""
    k, segment, features, side, threads = job
    if threads == 1 and features.face_crop and "detector" not in _WORKER:
        _cv2().setNumThreads(1)  # a worker process: one thread each
    try:
        images, without_face = frames_of(segment, features, side, threads=threads)
    except media.Unusable as e:
        return k, str(e), None
    return k, images, without_face


class _Inline(Executor):
    """Runs in this process (``workers=1``): map as the built-in does."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        return map(fn, *iterables)


def _pool(workers: int) -> Executor:
    """``workers`` processes (forked from a server that has imported this module, where
    the platform has one; else started afresh), or this process for 1."""
    if workers == 1:
        return _Inline()
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context)


def _in_order(pool: Executor, fn, jobs: list, ahead: int):
    """``fn(job)`` of each job, in order, at most ``ahead`` jobs running or done ahead of
    the one the caller takes: decoded frames never pile up while the encoder is slower."""
    if isinstance(pool, _Inline):
        yield from map(fn, jobs)
        return
    running = collections.deque(pool.submit(fn, job) for job in jobs[:ahead])
    for job in jobs[ahead:]:
        yield running.popleft().result()
        running.append(pool.submit(fn, job))
    while running:
        yield running.popleft().result()


# -- the encoder (in this process) ----------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' loading reports and bars off (missing pooler weights are handled)."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


class ImageEncoder:
    """A ``transformers`` image model and its image processor: :meth:`embed` turns frames
    into one embedding each (``embedding`` says which output: ``pooler_output``; the
    ``first_token`` where the checkpoint lacks the pooler's weights, as a ViT classifier's
    does, whose head reads that [CLS] token; else ``mean_tokens``, the mean of
    ``last_hidden_state`` over tokens or positions)."""

    def __init__(self, model, processor, device: str, pooler_missing: bool):
        self.model, self.processor, self.device = model, processor, device
        self.pooler_missing = pooler_missing
        self.embedding: str | None = None  # known after the first batch

    @property
    def side(self) -> int:
        """The shorter side (pixels) of the processor's input: frames are resized to it."""
        size = dict(getattr(self.processor, "crop_size", None) or {})
        size = size or dict(getattr(self.processor, "size", None) or {})
        sides = [v for k, v in size.items() if k in ("height", "width", "shortest_edge") and v]
        return int(max(sides)) if sides else 224

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """One embedding per image (RGB uint8 (h, w, 3) each): float32 (n, d)."""
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**inputs)
        pooled = getattr(out, "pooler_output", None)
        if self.embedding is None:
            if pooled is not None and not self.pooler_missing:
                self.embedding = "pooler_output"
            elif self.pooler_missing and out.last_hidden_state.ndim == 3:
                self.embedding = "first_token"
            else:
                self.embedding = "mean_tokens"
        if self.embedding == "pooler_output":
            e = pooled.flatten(1)
        elif self.embedding == "first_token":
            e = out.last_hidden_state[:, 0]
        else:
            h = out.last_hidden_state
            e = h.mean(1) if h.ndim == 3 else h.flatten(2).mean(-1)  # (b, c, h, w): positions
        return e.float().cpu().numpy()


def load_image_encoder(name: str = DEFAULT_VISUAL_ENCODER, device: str | None = None):
    """An :class:`ImageEncoder` from a Hugging Face model id (downloaded on first use into
    the Hugging Face cache) or a local folder (read offline) holding a ``transformers``
    image model and its image processor; on ``device`` (None: CUDA where there is one)."""
    try:
        import torch
        from transformers import AutoImageProcessor, AutoModel
    except ImportError as e:
        raise ImportError(
            "visual features need the 'video' extra: pip install 'fusionkit-mer[video]'"
        ) from e
    local = Path(name).expanduser().is_dir()
    kwargs = {"local_files_only": True} if local else {}
    source = str(Path(name).expanduser()) if local else name
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with _quiet_transformers():
            processor = AutoImageProcessor.from_pretrained(source, **kwargs)
            model, info = AutoModel.from_pretrained(source, output_loading_info=True, **kwargs)
    except OSError as e:
        where = "the folder" if local else "a local folder nor a Hugging Face model id"
        raise MissingFileError(
            f"visual encoder {name!r}: not {where} with an image model and processor ({e})"
        ) from None
    pooler_missing = any("pooler" in k for k in info.get("missing_keys", ()))
    return ImageEncoder(model.eval().to(device), processor, device, pooler_missing)


# -- features ------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _pooled(embeddings: np.ndarray, pooling: str) -> np.ndarray:
    """(k, d) frame embeddings -> (d,) mean, or (2d,) mean then standard deviation."""
    mean = embeddings.mean(axis=0)
    return mean if pooling == "mean" else np.concatenate([mean, embeddings.std(axis=0)])


def visual_features(
    table: ConversationTable,
    *,
    name: str,
    features: VisualFeatures = VisualFeatures(),
    cache_dir: str | Path | None = None,
    on_error: OnError = "raise",
    progress: bool = True,
    device: str | None = None,
) -> Features:
    """Visual :class:`Features` of every utterance of ``table``: pooled frame embeddings
    (N, d x ``POOLINGS[pooling]``); utterances without video are absent (features 0). Read
    from the cache (``{name}-visual-...`` files in ``cache_dir``) when it matches, else
    extracted (with a progress bar) and cached.

    Problems found before decoding (missing, unreadable or empty files, no video stream,
    segments outside the video) raise at once, all listed; those found while decoding (a
    corrupt stream, no frame in the segment) are raised, all listed, at its end. With
    ``on_error="absent"`` those utterances are absent instead and ``errors`` holds the
    messages. ``settings`` records how: the settings, ``frame_embedding`` (which output of
    the encoder), ``face_detector``, ``frames`` and ``frames_without_face`` (counts over the
    table), ``dim``, ``description``.
    """
    if on_error not in ("raise", "absent"):
        raise ConfigError(f"on_error: expected 'raise' or 'absent', got {on_error!r}")
    if "visual" not in table.modalities:
        raise ValueError(f"{table.source}: no video column to extract visual features from")
    media.require_av()
    segments = table.cells("visual")
    where = [f"{w}: video {s.path}" if s else w for w, s in zip(table.where(), segments)]
    paths = sorted({str(s.path) for s in segments if s is not None})
    how = {
        "encoder": features.encoder,
        "fps": features.fps,
        "max_frames": features.max_frames,
        "face_crop": features.face_crop,
        "pooling": features.pooling,
    }
    identity = {
        "extractor": "transformers",
        **how,
        "keys": table.keys(),
        "segments": [None if s is None else [str(s.path), s.start, s.end] for s in segments],
    }
    folder = Path(features.encoder).expanduser()
    content = {
        "versions": {p: _version(p) for p in ("av", "opencv-python-headless", "transformers")},
        "files": {p: fingerprint(Path(p)) for p in paths},
        "encoder_files": {
            str(f.relative_to(folder)): fingerprint(f)
            for f in sorted(folder.rglob("*"))
            if f.is_file()
        }
        if folder.is_dir()
        else None,
    }
    stem = f"{name}-visual-{slug(features.encoder)}"

    def build() -> Features:
        from tqdm.auto import tqdm

        present = table.presence("visual")
        jobs = [(k, s) for k, s in enumerate(segments) if s is not None]
        errors: dict[int, str] = {}
        with _pool(min(features.workers, max(len(jobs), 1))) as pool:
            for k, problem in pool.map(_check, jobs, chunksize=16):
                if problem is not None:
                    errors[k] = f"{where[k]}: {problem}"
            if errors and on_error == "raise":
                raise MediaError([errors[k] for k in sorted(errors)])
            encoder = load_image_encoder(features.encoder, device)
            threads = 1 if features.workers > 1 else 0
            work = [(k, s, features, encoder.side, threads) for k, s in jobs if k not in errors]
            pooled: dict[int, np.ndarray] = {}
            pending: list[tuple[int, list[np.ndarray]]] = []
            counts = {"frames": 0, "frames_without_face": 0}

            def flush():
                images = [image for _, frames in pending for image in frames]
                out = np.concatenate(
                    [
                        encoder.embed(images[i : i + features.batch_size])
                        for i in range(0, len(images), features.batch_size)
                    ]
                )
                start = 0
                for k, frames in pending:
                    pooled[k] = _pooled(out[start : start + len(frames)], features.pooling)
                    start += len(frames)
                pending.clear()

            bar = tqdm(
                total=len(work), desc=f"video frames, {features.encoder}", disable=not progress
            )
            with bar:
                ahead = 4 * features.workers
                for k, frames, without_face in _in_order(pool, _prepare, work, ahead):
                    bar.update()
                    if without_face is None:
                        errors[k] = f"{where[k]}: {frames}"
                        continue
                    counts["frames"] += len(frames)
                    counts["frames_without_face"] += without_face
                    pending.append((k, frames))
                    if sum(len(f) for _, f in pending) >= features.batch_size:
                        flush()
                if pending:
                    flush()
        if pooled:
            dim = len(next(iter(pooled.values())))
        else:  # nothing usable: the width from one blank image
            blank = np.zeros((encoder.side, encoder.side, 3), dtype=np.uint8)
            dim = encoder.embed([blank]).shape[1] * POOLINGS[features.pooling]
        x = np.zeros((len(segments), dim), dtype=np.float32)
        for k, v in pooled.items():
            x[k] = v
        present[list(errors)] = False
        if not np.isfinite(x).all():
            bad = [where[k] for k in pooled if not np.isfinite(x[k]).all()]
            raise MediaError([f"{w}: the encoder gave non-finite values" for w in bad])
        pooling = "mean and standard deviation" if features.pooling == "mean_std" else "mean"
        face = ", face crops" if features.face_crop else ""
        settings = {
            "extractor": "transformers",
            "transformers_version": _version("transformers"),
            **how,
            "frame_embedding": encoder.embedding,
            "face_detector": FACE_DETECTOR if features.face_crop else None,
            **counts,
            "dim": int(dim),
            "description": (
                f"visual = {features.encoder} frame embeddings ({encoder.embedding}{face}, "
                f"{features.fps:g} fps, at most {features.max_frames}), {pooling} ({dim})"
            ),
        }
        return Features(x, present, settings, tuple(errors[k] for k in sorted(errors)))

    result = cached_features(
        table, "visual", cache_dir, stem, identity, content, build, what="visual feature"
    )
    if result.errors and on_error == "raise":  # found now, or by a run with on_error="absent"
        raise MediaError(list(result.errors))
    return result
