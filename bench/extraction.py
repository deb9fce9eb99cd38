"""Feature extraction from video files: utterances a second, stage by stage and end to end.

    python bench/extraction.py                 # 24 clips of 3 s, 640x480, a ViT-B/16 encoder
    python bench/extraction.py --quick         # 3 clips of 1 s, 320x240, a tiny encoder

The clips are written first (H.264 at 25 fps with an AAC tone, scikit-image's astronaut
moving across the frame: ``tests/data/videos.py``), one utterance each, MELD's raw layout.
Stages, each over every clip in this process, one after another: ``decode`` (PyAV: the
frames at ``--fps``, at most ``--max-frames``), ``face`` (OpenCV's Haar cascade on those
frames, the crop resized to the encoder's input), ``encoder`` (the image model on the
crops, ``--batch-size`` frames a pass, at 1 and at ``--threads`` torch threads),
``audio decode`` (PyAV, to 16 kHz mono) and ``openSMILE`` (eGeMAPSv02 functionals); then
``visual_features`` and ``audio_features`` end to end with ``--workers`` processes (their
server started before timing: a one-off of seconds a Python process).

The default encoder is a randomly initialised ViT-B/16 at 224 pixels, the architecture of
fusionkit's default (``trpakov/vit-face-expression``): the weights do not change the time,
and nothing is downloaded. ``--encoder`` times another (a folder or a hub id).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import platform

import torch

from fusionkit.data import (
    AudioFeatures,
    VisualFeatures,
    audio_features,
    load_image_encoder,
    media,
    read_conversation_table,
    visual_features,
)
from fusionkit.data import visual as visual_module
from fusionkit.data.tables import Segment


def machine(device: str) -> dict:
    """Where the figures come from: CPU, cores, torch threads, GPU, versions, the load."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    info = {
        "device": device,
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def random_vit(folder: Path, *, quick: bool) -> str:
    """A randomly initialised ViT (B/16 at 224 px, or a tiny one) and its processor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    if quick:
        config = ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64,
        )  # fmt: skip
    else:
        config = ViTConfig()  # ViT-B/16: 224 px, 12 layers, 768 wide
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    side = config.image_size
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    return str(folder)


def clips(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> Path:
    """``count`` clips ``dia0_utt{i}.mp4`` and a manifest naming them."""
    from tests.data.recordings import utterance, write_manifest
    from tests.data.videos import write_video

    rows = []
    for i in range(count):
        write_video(folder / f"dia0_utt{i}.mp4", seconds, size=size, audio=180.0 + 20 * i)
        row = utterance("dia0", i, video=f"dia0_utt{i}.mp4")
        rows.append({k: v for k, v in row.items() if k != "audio"})
    return write_manifest(folder / "clips.csv", rows)


def rate(seconds: float, utterances: int, frames: int | None = None) -> list[str]:
    """Utterances a second, ms an utterance, ms a frame."""
    per_frame = "" if frames is None else f"{seconds / frames * 1000:.1f}"
    return [f"{utterances / seconds:.2f}", f"{seconds / utterances * 1000:.0f}", per_frame]


def stages(
    manifest: Path, how: VisualFeatures, threads: int, device: str
) -> tuple[list[list[str]], dict]:
    """One row a stage: utterances a second, ms an utterance, ms a frame."""
    import opensmile

    table = read_conversation_table(manifest)
    segments = [s for s in table.cells("visual") if s is not None]
    n, rows = len(segments), []
    encoder = load_image_encoder(how.encoder, device)
    detector = visual_module._detector()

    start = time.perf_counter()
    decoded = [media.sample_frames(s, how.fps, how.max_frames) for s in segments]
    frames = sum(len(f) for f in decoded)
    rows.append(["decode (PyAV)", *rate(time.perf_counter() - start, n, frames)])

    start, crops, found = time.perf_counter(), [], 0
    for video in decoded:
        for image in video:
            box = visual_module.face_box(image, detector)
            found += box is not None
            if box is not None:
                image = image[box[1] : box[3], box[0] : box[2]]
            crops.append(visual_module._resize(image, encoder.side))
    rows.append(["face crop (Haar cascade)", *rate(time.perf_counter() - start, n, frames)])

    encoder.embed(crops[: how.batch_size])  # warm-up
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        start = time.perf_counter()
        for i in range(0, len(crops), how.batch_size):
            encoder.embed(crops[i : i + how.batch_size])
        if device == "cuda":
            torch.cuda.synchronize()
        label = f"encoder ({device}, {t} thread{'s' * (t > 1)})"
        rows.append([label, *rate(time.perf_counter() - start, n, frames)])
    torch.set_num_threads(threads)

    start = time.perf_counter()
    sounds = [media.decode_audio(s) for s in table.cells("audio") if s is not None]
    rows.append(["audio decode (PyAV, 16 kHz)", *rate(time.perf_counter() - start, n)])
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    start = time.perf_counter()
    for sound in sounds:
        smile.process_signal(sound, 16000)
    rows.append(["openSMILE eGeMAPSv02", *rate(time.perf_counter() - start, n)])
    return rows, {"frames": frames, "frames_with_a_face": found}


def end_to_end(manifest: Path, how: VisualFeatures, workers: list[int]) -> list[list[str]]:
    """``visual_features`` at each worker count, and ``audio_features``, uncached."""
    table = read_conversation_table(manifest)
    n, rows = len(table.keys()), []
    for w in workers:
        if w > 1:  # the worker server's start (a Python process importing fusionkit): once
            with visual_module._pool(w) as pool:
                list(pool.map(visual_module._check, [(0, Segment(manifest))] * w))
        start = time.perf_counter()
        f = visual_features(
            table, name="bench", features=VisualFeatures(**{**how.__dict__, "workers": w}),
            progress=False,
        )  # fmt: skip
        rows.append(
            [f"visual_features, {w} worker{'s' * (w > 1)}", *rate(time.perf_counter() - start, n, f.settings["frames"])]
        )  # fmt: skip
    start = time.perf_counter()
    audio_features(table, name="bench", features=AudioFeatures(), progress=False)
    rows.append(["audio_features (from the videos)", *rate(time.perf_counter() - start, n)])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of seconds")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    p.add_argument("--size", default="640x480", help="frame size, WxH")
    p.add_argument("--fps", type=float, default=VisualFeatures.fps)
    p.add_argument("--max-frames", type=int, default=VisualFeatures.max_frames)
    p.add_argument("--batch-size", type=int, default=VisualFeatures.batch_size)
    p.add_argument("--encoder", help="a folder or hub id (default: a random ViT-B/16)")
    p.add_argument("--workers", default="1,2", help="worker counts to time, comma-separated")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="also write the table and its settings here")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.seconds, args.size, args.workers = 3, 1.0, "320x240", "1"
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "encoder").mkdir()
        encoder = args.encoder or random_vit(tmp / "encoder", quick=args.quick)
        how = VisualFeatures(
            encoder=encoder, fps=args.fps, max_frames=args.max_frames, batch_size=args.batch_size
        )
        manifest = clips(tmp, args.clips, args.seconds, size)
        rows, counts = stages(manifest, how, args.threads, args.device)
        rows += end_to_end(manifest, how, workers)
    info = {**machine(args.device), **counts, "clips": args.clips, "seconds": args.seconds}
    name = args.encoder or ("a tiny random ViT" if args.quick else "a random ViT-B/16")
    load = f", load average {info['load_average_1min']}" if "load_average_1min" in info else ""
    print(
        f"Extraction from {args.clips} clips of {args.seconds:g} s at {args.size} (H.264 25 fps, "
        f"AAC): {counts['frames']} frames at {args.fps:g} fps, at most {args.max_frames} an "
        f"utterance, a face found in {counts['frames_with_a_face']}; encoder {name}, batches of "
        f"{args.batch_size}.\n{info['device']} ({info['gpu'] or info['cpu']}), {info['cores']} "
        f"cores, torch {info['torch']}{load}; wall time.\n"
    )
    headers = ["stage", "utterances/s", "ms/utterance", "ms/frame"]
    print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    if args.json:
        table = {"script": "extraction", "machine": info, "headers": headers, "rows": rows}
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
