"""One epoch of the training loop on the synthetic IEMOCAP-sized data, and where it goes.

    python bench/epoch.py                      # hidden 256, 2 epochs; then the full run
    python bench/epoch.py --hidden 64          # the full run's model
    python bench/epoch.py --no-full-run        # skip the 20-epoch run (about 2 minutes)
    python bench/epoch.py --profile            # also the top ops of the last epoch
    python bench/epoch.py --quick              # a smoke test of seconds

It runs ``fit()`` (``fusionkit.models.cmath``) on the ``synthetic-paper`` configuration
(the synthetic data, the paper's model, 20 epochs at a constant rate: a fixed amount of
work, where the default recipe stops early at a data-dependent epoch) with
``model.hidden_dim`` set, for ``--epochs`` epochs in this process, and reads the parts of
each epoch from ``fit()``'s own record, ``history[i]["seconds"]``: the training pass
(``train``), evaluation of dev and test (``evaluate``) and the checkpoint writes
(``checkpoint``: ``best.pt`` when dev improves, ``state.pt`` every ``train.save_every``
epochs and at the end). An epoch's whole time is the time between two calls of ``fit()``'s
``on_epoch`` hook; what the parts leave of it is the rest of the loop (the batch order,
the progress bar, the record). Reading the data (``load_data``: generating the 151
dialogues and standardising them) is timed around the call, once a run. Collating batches,
which the training pass and evaluation do within them, is timed apart: the same
``fusionkit.batches`` calls over the training split in a random order, and over dev and
test. Epoch 1 pays one-time costs (first calls of every op, allocations); the table
reports the last epoch, and epoch 1 beside it. ``--profile`` runs ``torch.profiler`` from
the ``on_epoch`` call before the last epoch to the one after it.

Then, unless ``--no-full-run``, that configuration's whole run (``python -m fusionkit
train --dataset synthetic-paper``: hidden 64, 20 epochs) in a fresh process: its wall
time, and its own count of the training loop's seconds (``results.json``). Ratios first:
each part's share of the epoch, the epoch against the 5 s target. Times are wall clock
(``fit()``'s).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import torch

from bench import common
from fusionkit import batches
from fusionkit.models.cmath import fit, load_config, override
from fusionkit.models.cmath.run import load_data

TARGET_SECONDS = 5.0
PARTS = {  # fit()'s name of a part -> its row
    "train": "training pass",
    "evaluate": "evaluation (dev + test)",
    "checkpoint": "checkpoint writes (best.pt, state.pt)",
}


def collation_seconds(ds, batch_size: int) -> dict[str, float]:
    """Seconds of collating one epoch's training batches (random order) and dev's and test's."""
    train = ds.split("train")
    order = np.random.default_rng(0).permutation(len(train))
    start = time.perf_counter()
    for _ in batches(train, batch_size, order=order):
        pass
    middle = time.perf_counter()
    for split in ("dev", "test"):
        for _ in batches(ds.split(split), batch_size):
            pass
    return {"train": middle - start, "evaluate": time.perf_counter() - middle}


class EpochClock:
    """``fit()``'s ``on_epoch`` hook: when each epoch ended, and the profiler around the last."""

    def __init__(self, epochs: int, profile: bool):
        self.ends: list[float] = []
        self.epochs = epochs
        cpu = [torch.profiler.ProfilerActivity.CPU]
        self.profiler = torch.profiler.profile(activities=cpu) if profile else None

    def __call__(self, record: dict) -> None:
        self.ends.append(time.perf_counter())
        if self.profiler is not None and record["epoch"] >= self.epochs - 1:
            with common.quiet_stderr():
                if record["epoch"] < self.epochs:
                    self.profiler.start()
                else:
                    self.profiler.stop()


def full_run(args) -> dict:
    """``python -m fusionkit train --dataset synthetic-paper`` in a fresh process: wall
    time and ``fit()``'s seconds."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fusionkit", "train", "--dataset", "synthetic-paper"]
        cmd += ["--out", out, "--quiet"]
        if args.quick:
            cmd += [a for s in common.QUICK_RUN for a in ("--set", s)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=common.ROOT)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        results = json.loads((Path(out) / "seed0" / "results.json").read_text())
    epochs = len(results["history"])
    return {"wall": wall, "fit_seconds": results["seconds"], "epochs": epochs, "command": cmd}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, clock=False)
    p.add_argument("--hidden", type=int, default=256, help="model.hidden_dim (default 256)")
    p.add_argument("--epochs", type=int, default=2, help="epochs to run (the last is reported)")
    p.add_argument("--full-run", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--profile", action="store_true", help="print the top ops of the last epoch")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs: at least 2 (the last epoch's time is measured from the one before)")
    device = common.torch_device(args.device, args.threads)
    settings = [f"model.hidden_dim={args.hidden}"] + (common.QUICK_RUN if args.quick else [])
    settings += [f"train.epochs={args.epochs}", f'train.device="{device.type}"']
    config = override(load_config("synthetic-paper"), settings)

    start = time.perf_counter()
    ds, stats = load_data(config)
    load_seconds = time.perf_counter() - start
    collation = collation_seconds(ds, config.train.batch_size)
    clock = EpochClock(args.epochs, args.profile)
    with tempfile.TemporaryDirectory() as out:
        fitted = fit(config, ds, stats, 0, Path(out), quiet=True, on_epoch=clock)
    history = fitted.results["history"]
    last, first = history[-1]["seconds"], history[0]["seconds"]
    total = clock.ends[-1] - clock.ends[-2]
    rows = []

    def row(name: str, ratio: str, seconds: float, digits: int = 3) -> None:
        rows.append([name, ratio, f"{seconds:.{digits}f}"])

    for key, name in PARTS.items():
        row(name, f"{100 * last[key] / total:.1f}%", last[key])
        if key in collation:
            share = f"{100 * collation[key] / total:.1f}%"
            row("  of which collating batches (timed apart)", share, collation[key])
    rest = total - sum(last[key] for key in PARTS)
    row("rest of the loop", f"{100 * rest / total:.1f}%", rest)
    first_total = sum(first[key] for key in PARTS)
    row("**epoch**", f"{total / TARGET_SECONDS:.2f} x the 5 s target", total)
    row("epoch 1 (first calls)", f"{first_total / total:.2f} x the last epoch", first_total)
    row("reading the data (once a run)", f"{load_seconds / total:.2f} x an epoch", load_seconds)
    both = load_seconds + total
    row("data + one epoch", f"{both / TARGET_SECONDS:.2f} x the target", both)
    train_utts = ds.num_utterances("train")
    row("training utterances per second", "", train_utts / last["train"], 0)
    run = None
    if args.full_run:
        run = full_run(args)
        what = "quick settings" if args.quick else "hidden 64"
        in_loop = f"{run['fit_seconds'] / run['wall']:.2f} of it in the loop"
        row(f"full run: {run['epochs']} epochs, {what}, wall time", in_loop, run["wall"], 1)
        per_epoch = run["fit_seconds"] / run["epochs"]
        row("full run: one epoch (the loop's seconds / epochs)", "", per_epoch)
    info = common.machine(device)
    title = (
        f"One epoch of fit(), synthetic data, hidden {config.model.hidden_dim}, epoch "
        f"{args.epochs} of {args.epochs} ({len(ds.split('train'))} training dialogues, "
        f"{train_utts} utterances); {common.describe(info)}"
    )
    headers = ["part", "share / ratio", "seconds"]
    common.emit(
        "epoch",
        title,
        info,
        headers,
        rows,
        json_path=args.json,
        argv=argv,
        history_seconds=[h["seconds"] for h in history],
        epoch_ends=clock.ends,
        full_run=run,
    )
    if clock.profiler is not None:
        print(f"\nTop ops of epoch {args.epochs} (training, evaluation, checkpoints):")
        print(
            clock.profiler.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
