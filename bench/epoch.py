"""One epoch of the training script on the synthetic IEMOCAP-sized data, and where it goes.

    python bench/epoch.py                      # hidden 256, 2 epochs; then the default run
    python bench/epoch.py --hidden 64          # the default run's model
    python bench/epoch.py --no-default-run     # skip the 20-epoch run (about 75 s)
    python bench/epoch.py --profile            # also the top ops of the last epoch
    python bench/epoch.py --quick              # a smoke test of seconds

It runs the training script's own loop (``examples/cmath/fit.py``: ``fit`` with the
synthetic configuration, ``model.hidden_dim`` set) for ``--epochs`` epochs in this process,
and times its parts by wrapping the functions the loop calls: reading the data
(``load_data``: generating the 151 dialogues and standardising them, once per run), the
training pass (``Trainer.train_epoch``; within it, collating batches), evaluation of dev
and test (within it, collating and the metrics), and the checkpoint writes (``best.pt``
when dev improves, ``last.pt`` every epoch). Epoch 1 pays one-time costs (first calls of
every op, allocations); the table reports the last epoch, and epoch 1 beside it.

Then, unless ``--no-default-run``, the default run itself (``python examples/cmath/train.py``:
hidden 64, 20 epochs) in a fresh process: its wall time, and its own count of the
training loop's seconds. Ratios first: each part's share of the epoch, the epoch against
the 5 s target.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import tempfile
import time
from collections import defaultdict

from bench import common
from examples.cmath import checkpoint as checkpoint_module
from examples.cmath import evaluate as evaluate_module
from examples.cmath import fit as fit_module
from examples.cmath.config import load_config, override, with_model
from examples.cmath.data import load_data

TARGET_SECONDS = 5.0
# The quick run's data and model: tiny, as tests/helpers.py's TINY.
QUICK_SETTINGS = [
    "data.synthetic.num_dialogues=18",
    "data.synthetic.min_len=3",
    "data.synthetic.max_len=12",
    "data.synthetic.dims={text = 16, audio = 12, visual = 8}",
    "model.heads=2",
    "model.compressed_dim=8",
    "model.reconstruction_hidden=0",
    "train.batch_size=4",
]


class Clock:
    """Seconds spent in wrapped functions, per label and epoch."""

    def __init__(self, clock: str = "wall"):
        self.now = common.CLOCKS[clock]
        self.seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.epoch = 0
        self.epoch_starts: list[float] = []
        self.end = None

    def timed(self, label: str, fn):
        def wrapper(*args, **kwargs):
            start = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[self.epoch][label] += self.now() - start

        return wrapper

    def timed_iter(self, label: str, fn):
        """Wrap a generator function: time spent producing each item."""

        def wrapper(*args, **kwargs):
            it = iter(fn(*args, **kwargs))
            while True:
                start = self.now()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self.seconds[self.epoch][label] += self.now() - start
                yield item

        return wrapper


@contextlib.contextmanager
def instrumented(clock: Clock):
    """Wrap what the training loop calls, for the duration of the block."""
    patches = [
        (fit_module, "batches", clock.timed_iter("train: collating batches", fit_module.batches)),
        (evaluate_module, "batches", clock.timed_iter("eval: collating batches", evaluate_module.batches)),
        (evaluate_module, "classification_report", clock.timed("eval: metrics", evaluate_module.classification_report)),
        (fit_module, "evaluate", clock.timed("evaluation (dev + test)", fit_module.evaluate)),
        (checkpoint_module, "save", clock.timed("checkpoint writes", checkpoint_module.save)),
        (checkpoint_module, "payload", clock.timed("checkpoint writes", checkpoint_module.payload)),
    ]  # fmt: skip
    train_epoch = fit_module.Trainer.train_epoch

    def train_epoch_timed(self, *args, **kwargs):
        clock.epoch += 1
        clock.epoch_starts.append(clock.now())
        return clock.timed("training pass", train_epoch)(self, *args, **kwargs)

    results = fit_module._results

    def results_timed(*args, **kwargs):
        clock.end = clock.now()
        return results(*args, **kwargs)

    patches += [
        (fit_module.Trainer, "train_epoch", train_epoch_timed),
        (fit_module, "_results", results_timed),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def default_run(args) -> dict:
    """``python examples/cmath/train.py`` in a fresh process: wall time (or, with ``--clock
    cpu``, the process's CPU time) and its own count of the training loop's seconds."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            str(common.ROOT / "examples" / "cmath" / "train.py"),
            "--out",
            out,
            "--quiet",
        ]
        if args.quick:
            cmd += [a for s in QUICK_SETTINGS for a in ("--set", s)] + ["--epochs", "1"]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        start, cpu = time.perf_counter(), _children_cpu()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start if args.clock == "wall" else _children_cpu() - cpu
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        results = json.loads((Path(out) / "seed0" / "results.json").read_text())
    epochs = len(results["history"])
    return {"wall": wall, "fit_seconds": results["seconds"], "epochs": epochs, "command": cmd}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--hidden", type=int, default=256, help="model.hidden_dim (default 256)")
    p.add_argument("--epochs", type=int, help="epochs to run (default 2; the last is reported)")
    p.add_argument("--default-run", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--profile", action="store_true", help="print the top ops of the last epoch")
    args = p.parse_args(argv)
    device = common.torch_device(args.device, args.threads)
    config = with_model(load_config("synthetic"), hidden_dim=16 if args.quick else args.hidden)
    if args.quick:
        config = override(config, QUICK_SETTINGS)
    epochs = args.epochs or 2
    config = override(config, [f"train.epochs={epochs}", f'train.device="{device.type}"'])

    clock = Clock(args.clock)
    start = clock.now()
    ds, stats = load_data(config.data)
    load_seconds = clock.now() - start
    profiler = None
    with tempfile.TemporaryDirectory() as out, instrumented(clock):
        if args.profile:
            import torch

            # Profile the last epoch only: start the profiler when it begins.
            inner = fit_module.Trainer.train_epoch

            def train_epoch_profiled(self, *a, **kw):
                nonlocal profiler
                if clock.epoch == epochs - 1 and profiler is None:
                    profiler = torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU]
                    )
                    with common.quiet_stderr():
                        profiler.__enter__()
                return inner(self, *a, **kw)

            fit_module.Trainer.train_epoch = train_epoch_profiled
        try:
            fit_module.fit(config, ds, stats, 0, Path(out), quiet=True)
        finally:
            if profiler is not None:
                with common.quiet_stderr():
                    profiler.__exit__(None, None, None)
    bounds = [*clock.epoch_starts, clock.end]
    epoch_seconds = [b - a for a, b in itertools.pairwise(bounds)]
    last = clock.seconds[epochs]
    total = epoch_seconds[-1]
    parts = [
        ("training pass", last["training pass"]),
        ("  of which collating batches", last["train: collating batches"]),
        ("evaluation (dev + test)", last["evaluation (dev + test)"]),
        ("  of which collating batches", last["eval: collating batches"]),
        ("  of which metrics", last["eval: metrics"]),
        ("checkpoint writes (best.pt, last.pt)", last["checkpoint writes"]),
    ]
    accounted = last["training pass"] + last["evaluation (dev + test)"] + last["checkpoint writes"]
    parts.append(("rest of the loop", total - accounted))
    train_utts = ds.num_utterances("train")
    rows = [[name, f"{100 * s / total:.1f}%", f"{s:.3f}"] for name, s in parts]
    rows.append(
        [
            "**epoch**",
            f"{total / TARGET_SECONDS:.2f} x the {TARGET_SECONDS:.0f} s target",
            f"{total:.3f}",
        ]
    )
    rows.append(
        [
            "epoch 1 (first calls)",
            f"{epoch_seconds[0] / total:.2f} x the last epoch",
            f"{epoch_seconds[0]:.3f}",
        ]
    )
    rows.append(
        [
            "reading the data (once a run)",
            f"{load_seconds / total:.2f} x an epoch",
            f"{load_seconds:.3f}",
        ]
    )
    rows.append(
        [
            "data + one epoch",
            f"{(load_seconds + total) / TARGET_SECONDS:.2f} x the target",
            f"{load_seconds + total:.3f}",
        ]
    )
    rows.append(["training utterances per second", "", f"{train_utts / last['training pass']:.0f}"])
    run = None
    if args.default_run:
        run = default_run(args)
        rows.append(
            [
                f"default run: {run['epochs']} epoch(s), {'quick settings' if args.quick else 'hidden 64'}, "
                + ("wall time" if args.clock == "wall" else "CPU time"),
                f"{run['fit_seconds'] / run['wall']:.2f} of it in the loop",
                f"{run['wall']:.1f}",
            ]
        )
        rows.append(
            [
                "default run: one epoch (the loop's seconds / epochs)",
                "",
                f"{run['fit_seconds'] / run['epochs']:.3f}",
            ]
        )
    info = common.machine(device)
    hidden = 16 if args.quick else args.hidden
    print(
        f"One epoch of examples/cmath/train.py, synthetic data, hidden {hidden}, epoch {epochs} of {epochs} "
        f"({len(ds.split('train'))} training dialogues, {train_utts} utterances); {common.describe(info, args.clock)}"
    )
    print()
    headers = ["part", "share / ratio", "seconds"]
    print(common.markdown(headers, rows))
    if profiler is not None:
        print(f"\nTop ops of epoch {epochs} (training, evaluation, checkpoints):")
        print(
            profiler.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50
            )
        )
    common.write_json(
        args.json,
        {"script": "epoch", "argv": sys.argv[1:] if argv is None else argv, "machine": info,
         "headers": headers, "rows": rows, "epoch_seconds": epoch_seconds, "default_run": run},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
