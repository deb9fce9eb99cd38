"""A CMATH training step on a GPU: fp32 and bf16 autocast, eager and compiled, side by side.

    python bench/gpu_train.py                   # hidden 1024 (the IEMOCAP configuration), CUDA
    python bench/gpu_train.py --hidden 256 1024 --repeats 20
    python bench/gpu_train.py --no-compile
    python bench/gpu_train.py --quick           # a smoke test of seconds (any device)

The step is ``bench/train_step.py``'s (forward, objective, backward, Adam) on its batch: 16
synthetic dialogues of 10 to 110 utterances (1,213 utterances, padded to 110) at IEMOCAP's
widths (text 1024, audio 1582, visual 342), the IEMOCAP configuration
(``fusionkit/models/cmath/configs/iemocap.toml``; its width is hidden 1024, ``--hidden``
changes it). Variants, in one process and timed in alternating rounds: fp32, and bf16
under ``torch.autocast`` (as the training loop runs on a GPU with ``train.amp``), each
eager and compiled (``torch.compile``, inductor; its first step, which compiles, is timed
apart). Each variant has its own copy of the model and optimizer.

Run it with ``FUSIONKIT_TYPECHECK=0`` (``bench/gpu.sh`` does): with checking on, a compiled
model breaks its graph at the speaker-id check. The title says which was used.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import copy
import time

import torch

from bench import common
from bench.train_step import _setup, _trainer
from fusionkit.models.cmath.model import loss_counts, objective

HEADERS = [
    "hidden", "precision", "mode", "x first row", "ms/step", "utt/s", "peak MiB", "compile s",
]  # fmt: skip
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def variant_step(model, batch, precision: str, compiled: bool):
    """A step function of a copy of ``model``: forward under autocast for bf16, backward, Adam."""
    model = copy.deepcopy(model)
    if compiled:
        model.compile()
    normalizer = loss_counts(batch, model.class_weights)
    amp = PRECISIONS[precision]
    device = batch.mask.device.type

    def forward():  # as the training loop: forward and objective under autocast
        with torch.autocast(device, amp or torch.float32, enabled=amp is not None):
            return objective(model, model(batch), batch, normalizer).total

    return _trainer(torch, model, forward)


def measure(hidden: int, args, device: torch.device) -> tuple[list[list], dict]:
    """Every variant at one hidden size: the rows and the figures behind them."""
    _, _, _, _, model, batch = _setup(hidden, args.quick, device)
    steps, compile_s = {}, {}
    for precision in args.precisions:
        for compiled in (False, True) if args.compile else (False,):
            name = f"{precision} {'compiled' if compiled else 'eager'}"
            steps[name] = variant_step(model, batch, precision, compiled)
            start = time.perf_counter()
            steps[name]()  # the first call: compiles, or pays the first-call costs
            common.sync(device)
            compile_s[name] = time.perf_counter() - start if compiled else None
    times = common.time_alternating(
        steps, repeats=args.repeats, device=device, warmup=1, clock=args.clock
    )
    median = {n: common.median(ts) for n, ts in times.items()}
    first = next(iter(median))
    utterances = int(batch.mask.sum())
    rows = []
    for name, fn in steps.items():
        precision, mode = name.split()
        rows.append(
            [
                hidden,
                precision,
                mode,
                f"{median[name] / median[first]:.3f}",
                f"{1e3 * median[name]:.1f}",
                f"{utterances / median[name]:.0f}",
                common.mib(common.peak_bytes(fn, device)),
                "" if compile_s[name] is None else f"{compile_s[name]:.0f}",
            ]
        )
    return rows, {"hidden": hidden, "utterances": utterances, "shape": list(batch.mask.shape)}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default 1024)")
    p.add_argument("--repeats", type=int, help="timed steps a variant (default 10, --quick 2)")
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None)
    p.add_argument("--compile", dest="compile", action="store_true", help="(--quick skips it)")
    args = p.parse_args(argv)
    device = common.torch_device(args.device, args.threads)
    args.hidden = args.hidden or ([16] if args.quick else [1024])
    args.repeats = args.repeats or (2 if args.quick else 10)
    if args.compile is None:
        args.compile = not args.quick
    rows, shapes = [], []
    for hidden in args.hidden:
        r, shape = measure(hidden, args, device)
        rows += r
        shapes.append(shape)
    info = common.machine(device)
    title = (
        f"CMATH training step, batch {'x'.join(map(str, shapes[0]['shape']))} "
        f"({shapes[0]['utterances']} utterances), "
        f"{'quick sizes' if args.quick else 'IEMOCAP configuration and widths'}, "
        f"{args.repeats} timed steps a variant, shape checking "
        f"{'on' if info['typecheck'] != '0' else 'off'}; {common.describe(info, args.clock)}"
    )
    common.emit("gpu_train", title, info, HEADERS, rows, json_path=args.json, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
