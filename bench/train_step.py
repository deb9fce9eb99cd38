"""One CMATH training step (forward, objective, backward, Adam) at the field's IEMOCAP shapes.

    python bench/train_step.py                      # hidden 256 and 1024, every comparison
    python bench/train_step.py --hidden 256 --no-compile
    python bench/train_step.py --checking-only      # shape checking on against off
    python bench/train_step.py --profile            # also the top ops of one step, eager and compiled
    python bench/train_step.py --quick              # a smoke test of seconds

Shapes: 16 synthetic dialogues of 10 to 110 utterances (1,213 utterances, padded to 110),
widths text 1024 / audio 1582 / visual 342, the IEMOCAP configuration
(``configs/iemocap.toml``: 8 heads, feed-forward x1, dropout 0.5, one CMA layer a stream)
at hidden 256 and 1024.

Rows, each a ratio measured side by side (absolute times are context only):
- shape checking off against on, through its documented switch: ``FUSIONKIT_TYPECHECK=0``
  or ``1`` in the environment of a fresh process, before fusionkit is imported; the two
  kinds of process alternate, ``--rounds`` pairs, each reporting
  ``fusionkit.typing.CHECKING`` as it found it. The ratio is the median of the pairs'
  ratios; the table also gives the extra milliseconds a step.
- the baseline (``bench/baseline_cmath.py``: the same function written with
  ``nn.MultiheadAttention``, loops and multiplied masks, fusionkit's weights copied in)
  against fusionkit, alternated inside each of those processes (both checking settings).
- ``torch.compile`` (inductor) against eager, alternated in one process with checking off:
  with checking on the speaker-id check reads data and breaks the graph. The compile time
  of the first step is reported apart.

Peak memory is that of one step above what was held before it (weights, optimizer state,
batch), measured in the process that timed the variant after its timed steps: the
process's resident set on the CPU, the allocator's tensor memory on CUDA
(``bench/common.py`` says how).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import statistics
import time

from bench import common

TOP_OPS = 15


# -- the worker: one process, one checking setting -------------------------------------------


def _setup(hidden: int, quick: bool, device):
    import torch

    from fusionkit import DialogueBatch

    dialogues = common.iemocap_dialogues(4, 12, quick=True) if quick else common.iemocap_dialogues()
    dims = common.QUICK_DIMS if quick else common.IEMOCAP_DIMS
    spec = common.spec_for(dims, max(len(d) for d in dialogues))
    weights = common.class_weights_of(dialogues)
    config = common.cmath_config(hidden, quick=quick)
    model = common.build_cmath(config, spec, weights).to(device).train()
    batch = DialogueBatch.collate(dialogues).to(device)
    return torch, config, spec, weights, model, batch


def _trainer(torch, model, forward):
    """A step function: forward (returns the objective), backward, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _top_ops(torch, fn, device) -> str:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with common.quiet_stderr(), torch.profiler.profile(activities=activities) as prof:
        fn()
        common.sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=TOP_OPS, max_name_column_width=50)


def worker(opts: dict) -> dict:
    """Time the variants ``opts["variants"]`` side by side in this process."""
    import copy

    from bench.baseline_cmath import BaselineCMATH
    from fusionkit.models.cmath import loss_counts
    from fusionkit.typing import CHECKING

    device = common.torch_device(opts["device"], opts["threads"])
    torch, config, spec, weights, model, batch = _setup(opts["hidden"], opts["quick"], device)
    normalizer = loss_counts(batch, model.class_weights)
    steps, compile_seconds = {}, None
    for name in opts["variants"]:
        if name == "fusionkit":
            steps[name] = _trainer(torch, model, lambda: common.loss(model, batch, normalizer))
        elif name == "baseline":
            base = BaselineCMATH(config, spec, weights).to(device).train().load_fusionkit(model)
            steps[name] = _trainer(
                torch,
                base,
                lambda base=base: base.loss(
                    base(batch.features, batch.mask, batch.speakers),
                    batch.mask,
                    batch.labels,
                    normalizer,
                ),
            )
        elif name == "compiled":
            compiled = copy.deepcopy(model)
            compiled.compile()
            steps[name] = _trainer(
                torch, compiled, lambda c=compiled: common.loss(c, batch, normalizer)
            )
            start = time.perf_counter()
            steps[name]()  # the first call compiles
            common.sync(device)
            compile_seconds = time.perf_counter() - start
    times = common.time_alternating(
        steps, repeats=opts["repeats"], device=device, warmup=opts["warmup"], clock=opts["clock"]
    )
    result = {
        "checking": CHECKING,
        "times": times,
        "peak": {n: common.peak_bytes(fn, device) for n, fn in steps.items()},
        "utterances": int(batch.mask.sum()),
        "shape": list(batch.mask.shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "machine": common.machine(device),
        "compile_seconds": compile_seconds,
    }
    if opts.get("profile"):
        result["profile"] = {n: _top_ops(torch, fn, device) for n, fn in steps.items()}
    return result


def _spawn(opts: dict, checking: bool) -> dict:
    """``worker(opts)`` in a fresh process with shape checking switched on or off."""
    run = common.spawn_worker(__file__, opts, FUSIONKIT_TYPECHECK="1" if checking else "0")
    if run["checking"] != checking:
        raise RuntimeError(
            f"FUSIONKIT_TYPECHECK={int(checking)}: the worker found {run['checking']}"
        )
    return run


# -- the parent: processes, rounds, the table -------------------------------------------------


def _rounds(args, hidden: int) -> int:
    return args.rounds or (1 if args.quick else 4 if hidden <= 256 else 2)


def _repeats(args, hidden: int) -> int:
    return args.repeats or (2 if args.quick else 5 if hidden <= 256 else 3)


def _ratio_of_medians(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def measure(args, hidden: int) -> dict:
    """Every process of one hidden size; returns the rows' figures."""
    base = dict(
        hidden=hidden,
        quick=args.quick,
        device=args.device,
        threads=args.threads,
        clock=args.clock,
        repeats=_repeats(args, hidden),
        warmup=1,
    )
    variants = ["fusionkit"] if args.checking_only else ["fusionkit", "baseline"]
    runs = {True: [], False: []}
    for r in range(_rounds(args, hidden)):
        for checking in (True, False) if r % 2 == 0 else (False, True):
            runs[checking].append(_spawn(dict(base, variants=variants), checking))
    out = {"on": runs[True], "off": runs[False], "compiled": None}
    if args.compile and not args.checking_only:
        opts = dict(base, variants=["fusionkit", "compiled"], profile=args.profile)
        out["compiled"] = _spawn(opts, checking=False)
    if args.profile:
        eager = out["compiled"] or _spawn(
            dict(base, variants=["fusionkit"], repeats=1, profile=True), checking=False
        )
        out["profile_eager"] = eager["profile"]["fusionkit"]
    return out


def rows_for(hidden: int, m: dict) -> tuple[list[list], dict]:
    on, off = m["on"], m["off"]
    first = on[0]
    utts = first["utterances"]

    def pooled(runs: list[dict], variant: str) -> list[float]:
        return [t for run in runs for t in run["times"][variant]]

    t_on, t_off = (
        statistics.median(pooled(on, "fusionkit")),
        statistics.median(pooled(off, "fusionkit")),
    )
    pairs = [
        _ratio_of_medians(a["times"]["fusionkit"], b["times"]["fusionkit"]) for a, b in zip(on, off)
    ]
    check_ratio = statistics.median(pairs)
    shape = "x".join(map(str, first["shape"]))
    rows = []

    def row(variant, ratio, against, seconds, peak):
        rows.append(
            [
                hidden,
                variant,
                f"{ratio:.3f}",
                against,
                f"{1e3 * seconds:.1f}",
                f"{utts / seconds:.0f}",
                common.mib(peak),
            ]
        )

    n = len(on)
    row("fusionkit eager, checking on", 1.0, "itself", t_on, first["peak"]["fusionkit"])
    row(
        "fusionkit eager, checking off",
        1.0 / check_ratio,
        f"checking on, {n} alternating process pairs",
        t_off,
        off[0]["peak"]["fusionkit"],
    )
    summary = {
        "hidden": hidden,
        "batch_shape": shape,
        "utterances": utts,
        "parameters": first["parameters"],
        "checking_cost": check_ratio - 1.0,
        "checking_cost_range": [min(pairs) - 1.0, max(pairs) - 1.0],
        "checking_ms": 1e3 * (t_on - t_off),
    }
    if "baseline" in first["times"]:
        for label, runs in (("on", on), ("off", off)):
            ratios = [
                _ratio_of_medians(r["times"]["baseline"], r["times"]["fusionkit"]) for r in runs
            ]
            summary[f"baseline_over_fusionkit_checking_{label}"] = statistics.median(ratios)
        row(
            "baseline (nn.MultiheadAttention, loops)",
            summary["baseline_over_fusionkit_checking_on"],
            "fusionkit eager, same processes (checking on)",
            statistics.median(pooled(on, "baseline")),
            first["peak"]["baseline"],
        )
    comp = m.get("compiled")
    if comp:
        ratio = _ratio_of_medians(comp["times"]["compiled"], comp["times"]["fusionkit"])
        summary["compiled_over_eager"] = ratio
        summary["compile_seconds"] = comp["compile_seconds"]
        row(
            "fusionkit torch.compile, checking off",
            ratio,
            "fusionkit eager, same process (checking off)",
            statistics.median(comp["times"]["compiled"]),
            comp["peak"]["compiled"],
        )
    return rows, summary


HEADERS = ["hidden", "variant", "ratio", "compared with", "ms/step", "utt/s", "peak MiB"]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default 256 1024)")
    p.add_argument(
        "--rounds",
        type=int,
        help="process pairs per side (default 4, 2 above hidden 256; --quick 1)",
    )
    p.add_argument(
        "--repeats", type=int, help="timed steps a variant and process (default 5, 3 above 256)"
    )
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None)
    p.add_argument("--compile", dest="compile", action="store_true", help="(--quick skips it)")
    p.add_argument("--checking-only", action="store_true", help="shape checking on/off only")
    p.add_argument("--profile", action="store_true", help="print the top ops of one step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    args.hidden = args.hidden or ([16] if args.quick else [256, 1024])
    if args.compile is None:
        args.compile = not args.quick
    results, all_rows, summaries = {}, [], []
    for hidden in args.hidden:
        results[hidden] = measure(args, hidden)
        rows, summary = rows_for(hidden, results[hidden])
        all_rows += rows
        summaries.append(summary)
    first = results[args.hidden[0]]["on"][0]
    print(f"CMATH training step; {common.describe(first['machine'], args.clock)}")
    print(
        f"batch {summaries[0]['batch_shape']} ({summaries[0]['utterances']} utterances), "
        f"{'quick sizes' if args.quick else 'IEMOCAP widths 1024/1582/342'}; "
        + "; ".join(
            f"hidden {h}: {_repeats(args, h)} timed steps a variant and process, "
            f"{_rounds(args, h)} process pair(s)"
            for h in args.hidden
        )
    )
    print()
    print(common.markdown(HEADERS, all_rows))
    print()
    for s in summaries:
        low, high = s["checking_cost_range"]
        line = (
            f"hidden {s['hidden']} ({s['parameters'] / 1e6:.1f} M parameters): checking costs "
            f"{100 * s['checking_cost']:+.1f}% of a step (median of the process pairs, which "
            f"ranged {100 * low:+.1f}% to {100 * high:+.1f}%; {s['checking_ms']:+.1f} ms a step)"
        )
        if "baseline_over_fusionkit_checking_off" in s:
            line += f"; baseline / fusionkit with checking off: {s['baseline_over_fusionkit_checking_off']:.3f}"
        if "compile_seconds" in s:
            line += f"; first compiled step (compiling) {s['compile_seconds']:.0f} s"
        print(line)
    for hidden, m in results.items():
        if args.profile:
            print(f"\nTop ops of one fusionkit eager step, hidden {hidden}, checking off:")
            print(m["profile_eager"])
            if m.get("compiled"):
                print(f"\nTop ops of one compiled step, hidden {hidden}:")
                print(m["compiled"]["profile"]["compiled"])
    common.write_json(
        args.json,
        {
            "script": "train_step",
            "argv": sys.argv[1:] if argv is None else argv,
            "machine": first["machine"],
            "headers": HEADERS,
            "rows": all_rows,
            "summary": summaries,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
