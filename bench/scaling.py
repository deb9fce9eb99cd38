"""How a CMATH forward + backward grows with dialogue length and with batch size, per backend.

    python bench/scaling.py                       # t = 32..4096 (b = 1), b = 1..64 (t = 110)
    python bench/scaling.py --max-quadratic 2048  # let the (t, t) paths go further (memory!)
    python bench/scaling.py --quick               # a smoke test of seconds

The model is the IEMOCAP configuration at hidden 256 (``--hidden``) in training mode; the
step is forward, objective and backward. Variants ("backend"):
- ``sdpa``: every dropout off, so that SDPA runs its fused kernel on every device;
- ``sdpa, dropout 0.5``: the configuration's dropout. On the CPU, attention dropout runs
  fusionkit's math path with its cheap mask (SDPA would leave its fused kernel for its
  math one anyway), which keeps the (t, t) probabilities for backward;
- ``sdpa, dropout 0.5 but 0 on attention``: the same with ``model.attention_dropout = 0``:
  SDPA's fused kernel again, and memory linear in t, with every other dropout on;
- ``math``: fusionkit's plain backend (fp32 scores and softmax, kept for backward);
- ``triton``: fusionkit's fused kernel (CUDA only).
Paths that keep (t, t) matrices stop at ``--max-quadratic`` utterances (at 4,096 they would
need tens of GiB); they are listed as skipped.

Memory: the parameters' gradients are allocated before the step (as after any first step),
and the step has run before it is measured, so the peak counts what the step itself holds:
activations kept for backward and temporaries. "peak MiB" is ``bench/common.py``'s
``peak_bytes``: on the CPU the process's peak resident set over the step above its
resident set before it (memory outside PyTorch's allocator included), on CUDA the
allocator's peak of tensor memory. The variants of a point alternate in one process.

Ratios first: each point's time and peak against the smallest point of its sweep, then the
growth exponent: the least-squares slope of log(value) against log(size) over the upper
half of the sizes (where the fixed costs no longer dominate). Linear growth is 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import time

import torch

from bench import common
from fusionkit.attention import triton_available
from fusionkit.models.cmath import loss_counts

QUADRATIC = {"sdpa, dropout 0.5", "math"}  # on the CPU; on CUDA dropout stays fused
HEADERS = ["sweep", "backend", "size", "time x first", "peak x first", "ms", "peak MiB"]


VARIANTS = {  # the name in the table -> the model's settings
    "sdpa": dict(backend="sdpa", dropout=0.0),
    "sdpa, dropout 0.5": dict(backend="sdpa", dropout=0.5),
    "sdpa, dropout 0.5 but 0 on attention": dict(
        backend="sdpa", dropout=0.5, attention_dropout=0.0
    ),
    "math": dict(backend="math", dropout=0.0),
    "triton": dict(backend="triton", dropout=0.0),
}


def variants(device: torch.device) -> list[str]:
    with_triton = device.type == "cuda" and triton_available()
    return [n for n in VARIANTS if n != "triton" or with_triton]


def _model(name: str, hidden: int, longest: int, quick: bool, device):
    dims = common.QUICK_DIMS if quick else common.IEMOCAP_DIMS
    config = common.cmath_config(hidden, quick=quick, **VARIANTS[name])
    model = common.build_cmath(config, common.spec_for(dims, longest)).to(device).train()
    for p in model.parameters():  # as after a first step: the peak is the step's own
        p.grad = torch.zeros_like(p)
    return model, dims


def measure_point(args, device: torch.device, b: int, t: int, names: list[str]) -> dict:
    """Time and peak memory of each variant at one (b, t), alternated in this process."""
    steps = {}
    for name in names:
        model, dims = _model(name, args.hidden, max(t, 512), args.quick, device)
        batch = common.random_batch(b, t, dims).to(device)
        normalizer = loss_counts(batch, model.class_weights)

        def step(model=model, batch=batch, normalizer=normalizer):
            common.loss(model, batch, normalizer).backward()

        steps[name] = step
    first = next(iter(steps.values()))
    first()
    common.sync(device)
    start = time.perf_counter()
    first()
    common.sync(device)
    single = time.perf_counter() - start
    min_repeats = 1 if args.quick else 2
    repeats = max(min_repeats, min(10, int(args.budget / max(single, 1e-6))))
    times = common.time_alternating(
        steps, repeats=repeats, device=device, warmup=1, clock=args.clock
    )
    return {
        name: {"seconds": common.median(times[name]), "peak": common.peak_bytes(fn, device)}
        for name, fn in steps.items()
    }


def sweep(args, device, name: str, points: list[tuple[int, int]]) -> dict:
    """{variant: {(b, t): figures}} over ``points``."""
    names = [n for n in variants(device) if not args.only or n in args.only]
    results: dict = {n: {} for n in names}
    for b, t in points:
        todo = [
            n
            for n in names
            if not (device.type == "cpu" and n in QUADRATIC and t > args.max_quadratic)
        ]
        for n, figures in measure_point(args, device, b, t, todo).items():
            results[n][(b, t)] = figures
        print(f"  {name} b={b} t={t}: done", file=sys.stderr, flush=True)
    return results


def table_rows(sweep_name: str, key: int, results: dict, points, skipped_note: str) -> list:
    rows = []
    for n, figures in results.items():
        done = [p for p in points if p in figures]
        if not done:
            continue
        t0, m0 = figures[done[0]]["seconds"], max(figures[done[0]]["peak"], 1)
        for p in points:
            size = p[key]
            if p not in figures:
                rows.append([sweep_name, n, size, "skipped", skipped_note, "", ""])
                continue
            f = figures[p]
            rows.append(
                [
                    sweep_name, n, size, f"{f['seconds'] / t0:.2f}", f"{f['peak'] / m0:.2f}",
                    f"{1e3 * f['seconds']:.1f}", common.mib(f["peak"]),
                ]
            )  # fmt: skip
        upper = done[len(done) // 2 :] if len(done) > 2 else done
        if len(upper) >= 2:
            sizes = [p[key] for p in upper]
            time_exp = common.loglog_slope(sizes, [figures[p]["seconds"] for p in upper])
            mem_exp = common.loglog_slope(sizes, [max(figures[p]["peak"], 1) for p in upper])
            label = f"exponent, {sizes[0]}..{sizes[-1]}"
            rows.append([sweep_name, n, label, f"{time_exp:.2f}", f"{mem_exp:.2f}", "", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--hidden", type=int, help="model width (default 256; --quick 16)")
    p.add_argument(
        "--max-quadratic", type=int, default=1024, help="longest t for (t, t) paths on the CPU"
    )
    p.add_argument("--budget", type=float, default=5.0, help="seconds of timing per point")
    p.add_argument("--lengths", type=int, nargs="*", help="dialogue lengths (default 32..4096)")
    p.add_argument("--batch-sizes", type=int, nargs="*", help="batch sizes (default 1..64)")
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="these variants only")
    args = p.parse_args(argv)
    device = common.torch_device(args.device, args.threads)
    unknown = set(args.only or []) - set(variants(device))
    if unknown:
        p.error(f"--only: unknown variant(s) {sorted(unknown)}; known: {variants(device)}")
    args.hidden = args.hidden or (16 if args.quick else 256)
    if args.quick:
        args.budget = min(args.budget, 0.2)
        lengths, sizes, fixed_t = [8, 16], [1, 2], 12
    else:
        lengths, sizes, fixed_t = [32 * 2**i for i in range(8)], [1, 2, 4, 8, 16, 32, 64], 110
    lengths = lengths if args.lengths is None else args.lengths
    sizes = sizes if args.batch_sizes is None else args.batch_sizes
    length_points = [(1, t) for t in lengths]
    batch_points = [(b, fixed_t) for b in sizes]
    by_length = sweep(args, device, "length", length_points)
    by_batch = sweep(args, device, "batch", batch_points)
    note = f"(t, t) path above {args.max_quadratic}"
    rows = table_rows("dialogue length t (b=1)", 1, by_length, length_points, note)
    rows += table_rows(f"batch b (t={fixed_t})", 0, by_batch, batch_points, note)
    info = common.machine(device)
    title = (
        f"CMATH forward + backward, hidden {args.hidden}, "
        f"{'quick widths' if args.quick else 'IEMOCAP widths 1024/1582/342'}; {common.describe(info, args.clock)}"
    )
    common.emit("scaling", title, info, HEADERS, rows, json_path=args.json, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
