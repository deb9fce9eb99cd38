"""Length-bucketed batches (``train.bucket``) against random ones on the synthetic default
run: padding, training time and accuracy side by side.

    python bench/bucketing.py                        # seeds 0 1 2, 20 epochs each way
    python bench/bucketing.py --out runs/bucketing   # keep the runs (a seed found there is read)
    python bench/bucketing.py --quick                # a smoke test of seconds

The configuration is ``load_config("synthetic-paper")`` (151 dialogues of 10 to 110 utterances,
109 of them for training, batches of 8, hidden 64, 20 epochs). Each seed trains twice with
``fit()``: ``train.bucket = false`` (the dialogues in a new random order each epoch) and
``true`` (``fusionkit.length_buckets``: dialogues of similar length share a batch, the
batches shuffled each epoch); the two alternate which goes first, seed by seed.

Columns: the padding share of an epoch, counted exactly from the batches
``fusionkit.batches`` makes for the training split (padded positions over all positions,
over every epoch of every seed, each order drawn as ``fit()`` draws it); the positions an
epoch computes; the training pass's seconds an epoch (``fit()``'s
``history[i]["seconds"]["train"]``, wall clock, mean over epochs and seeds) and its ratio
to random batches; test weighted F1 at the best dev epoch, mean ± std over seeds, and each
seed's.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import statistics
import tempfile

import numpy as np

from bench import common
from fusionkit import batches, length_buckets
from fusionkit.models.cmath import fit, load_config, override
from fusionkit.models.cmath.run import load_data

VARIANTS = {"random": False, "bucketed": True}  # name -> train.bucket
HEADERS = [
    "batches",
    "padding (share of positions)",
    "positions / epoch",
    "train s / epoch",
    "x random",
    "test wF1 at best dev",
    "per seed",
]


def padding(train: list, batch_size: int, bucket: bool, seeds: list[int], epochs: int) -> dict:
    """Padded and real positions of the training batches of every epoch of ``seeds``."""
    lengths = [len(d) for d in train]
    padded = real = 0
    for seed in seeds:
        for epoch in range(1, epochs + 1):
            rng = np.random.default_rng([seed, epoch])
            if bucket:
                order = length_buckets(lengths, batch_size, rng)
            else:
                order = rng.permutation(len(train))
            for batch in batches(train, batch_size, order=order):
                padded += batch.mask.numel()
                real += int(batch.mask.sum())
    runs = len(seeds) * epochs
    return {"share": 1.0 - real / padded, "positions": padded / runs, "utterances": real / runs}


def trained(config, ds, stats, seed: int, folder: Path) -> dict:
    """One seed's results: read from ``folder/results.json`` if there, else trained."""
    found = folder / "results.json"
    if found.exists():
        return json.loads(found.read_text())
    return fit(config, ds, stats, seed, folder, quiet=True).results


def mean_std(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, clock=False)
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; --quick 0 1)")
    p.add_argument("--out", help="folder of the runs (default: a temporary one)")
    args = p.parse_args(argv)
    device = common.torch_device(args.device, args.threads)
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    config = override(load_config("synthetic-paper"), [f'train.device="{device.type}"'])
    if args.quick:
        config = override(config, common.QUICK_RUN)
    ds, stats = load_data(config)
    train, tc = ds.split("train"), config.train
    epochs = tc.epochs  # synthetic-paper sets it
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for i, seed in enumerate(seeds):
            names = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                run = override(config, [f"train.bucket={str(VARIANTS[name]).lower()}"])
                results = trained(run, ds, stats, seed, out / name / f"seed{seed}")
                runs[name].append(results)
                f1 = results["test_at_best_dev"]["weighted_f1"]
                print(f"seed {seed}, {name}: test wF1 {f1:.2f}", file=sys.stderr, flush=True)
    figures = {}
    for name, bucket in VARIANTS.items():
        per_epoch = [h["seconds"]["train"] for r in runs[name] for h in r["history"]]
        figures[name] = {
            **padding(train, tc.batch_size, bucket, seeds, epochs),
            "train_seconds": statistics.fmean(per_epoch),
            "test_wf1": [r["test_at_best_dev"]["weighted_f1"] for r in runs[name]],
            "test_accuracy": [r["test_at_best_dev"]["accuracy"] for r in runs[name]],
            "best_dev_epoch": [r["best_dev_epoch"] for r in runs[name]],
        }
    base = figures["random"]["train_seconds"]
    rows = [
        [
            name,
            f"{100 * f['share']:.1f}%",
            f"{f['positions']:,.0f} for {f['utterances']:,.0f} utterances",
            f"{f['train_seconds']:.2f}",
            f"{f['train_seconds'] / base:.3f}",
            mean_std(f["test_wf1"]),
            ", ".join(f"{x:.2f}" for x in f["test_wf1"]),
        ]
        for name, f in figures.items()
    ]
    gain = [b - r for b, r in zip(figures["bucketed"]["test_wf1"], figures["random"]["test_wf1"])]
    info = common.machine(device)
    title = (
        f"Length-bucketed against random batches, synthetic-paper configuration "
        f"({'quick settings' if args.quick else 'defaults'}; {len(train)} training dialogues, "
        f"batches of {tc.batch_size}, {epochs} epochs, seeds {seeds}); {common.describe(info)}"
    )
    common.emit(
        "bucketing", title, info, HEADERS, rows, json_path=args.json, argv=argv, figures=figures
    )
    print(f"\nbucketed - random, test wF1 paired by seed: {mean_std(gain)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
