"""Robustness to missing and noisy modalities: models trained with and without modality
dropout, scored with each modality absent or noisy at test time.

    python bench/robustness.py --out runs/robustness          # 3 seeds, ~20 min on 2 cores
    python bench/robustness.py --quick --out /tmp/robustness  # tiny data, 3 variants, 1 seed

Data: the synthetic conversations with uneven modality quality (each dialogue draws a
noise level per modality, ``noise_spread``), smaller widths than IEMOCAP's so that the
27 trainings (12 epochs each) fit a CPU; the ``synthetic-paper`` configuration otherwise
(the paper's model, a constant rate with Adam: what results.md's tables were measured with).
Variants, each trained with and without
``model.modality_dropout``: CMATH (asymmetric, product of experts), its symmetric variant,
and plain concatenation fusion; and CMATH trained without each modality at all
(``prepare.modalities``: the reference a dropout-trained model should match when that
modality is absent at test). Each seed is trained with ``fit()`` unless its ``best.pt`` is
in ``--out``, then scored from that file (``restore(path).reader()``, and
``fusionkit.models.cmath.robustness``). Prints the headline table (each modality absent at
test); writes ``robustness.md`` (every table, mean ± std over seeds), ``robustness.json``
and ``robustness.png``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from fusionkit.models.cmath import fit, load_config, override, restore
from fusionkit.models.cmath import robustness as report
from fusionkit.models.cmath.run import load_data

DATA = [
    "data.dims={text = 256, audio = 256, visual = 128}",
    "data.noise_spread=3.0",
    "train.epochs=12",
]
VARIANTS = {
    "CMATH": [],
    "CMATH symmetric": ["model.symmetric=true"],
    "concat fusion": ["model.fusion='concat'"],
}
DROPOUT = "model.modality_dropout=0.3"
MODALITIES = ("audio", "text", "visual")
QUICK = ["CMATH", "CMATH + dropout", "CMATH without audio"]


def runs(quick: bool) -> dict[str, list[str]]:
    """Name -> the ``--set`` assignments of each trained variant."""
    out = {}
    for name, sets in VARIANTS.items():
        out[name] = sets
        out[f"{name} + dropout"] = [*sets, DROPOUT]
    for m in MODALITIES:
        kept = ", ".join(f'"{k}"' for k in MODALITIES if k != m)
        out[f"CMATH without {m}"] = [f"prepare.modalities=[{kept}]"]
    return {k: v for k, v in out.items() if k in QUICK} if quick else out


def _folder(out: Path, name: str) -> Path:
    return out / name.replace(" ", "_").replace("+", "plus")


def trained(out: Path, name: str) -> list[int]:
    """The seeds of ``name`` with a best checkpoint in ``out``."""
    return sorted(int(p.parent.name[4:]) for p in _folder(out, name).glob("seed*/best.pt"))


def train_and_score(name: str, settings: list[str], seed: int, out: Path) -> list[dict]:
    """Train ``name`` for ``seed`` unless its ``best.pt`` is there; score it from that file."""
    folder = _folder(out, name) / f"seed{seed}"
    if not (folder / "best.pt").exists():
        config = override(load_config("synthetic-paper"), settings)
        ds, stats = load_data(config)
        fit(config, ds, stats, seed, folder, quiet=True)
    restored = restore(folder / "best.pt")
    ds = restored.reader()()
    return report.robustness(
        restored.model, ds, batch_size=restored.config.train.batch_size, seed=seed
    )


def aggregate(per_seed: list[list[dict]]) -> list[dict]:
    """Mean and std over seeds of each row."""
    rows = []
    for parts in zip(*per_seed, strict=True):
        f1 = [p["weighted_f1"] for p in parts]
        acc = [p["accuracy"] for p in parts]
        rows.append(
            {
                **{k: parts[0][k] for k in ("perturbation", "modality", "level")},
                "weighted_f1": statistics.fmean(f1),
                "weighted_f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
                "accuracy": statistics.fmean(acc),
            }
        )
    return rows


def summary(results: dict[str, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """The headline comparison (headers, rows): each modality entirely absent at test, with
    dropout, against the model trained without it; and every modality present, with and
    without dropout."""

    def at(name, kind, m, level):
        r = next(
            r
            for r in results[name]
            if (r["perturbation"], r["modality"], r["level"]) == (kind, m, level)
        )
        return f"{r['weighted_f1']:.2f} ± {r['weighted_f1_std']:.2f}"

    headers = ["model", "all present", *(f"no {m} at test" for m in MODALITIES)]
    rows = [
        [name, at(name, "absent", MODALITIES[0], 0.0)]
        + [at(name, "absent", m, 1.0) for m in MODALITIES]
        for name in results
        if not name.startswith("CMATH without")
    ]
    refs = [f"CMATH without {m}" for m in MODALITIES]
    if all(r in results for r in refs):
        # its plain test score: any modality it has, at 0% absence
        kept = [next(k for k in MODALITIES if k != m) for m in MODALITIES]
        rows.append(
            ["CMATH trained without that modality", "-"]
            + [at(r, "absent", k, 0.0) for r, k in zip(refs, kept)]
        )
    return headers, rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, clock=False)
    p.add_argument("--out", default="runs/robustness")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", metavar="NAME", help="these variants only")
    p.add_argument(
        "--aggregate",
        action="store_true",
        help="train nothing: score every variant on the seeds already trained in --out",
    )
    args = p.parse_args(argv)
    device = common.torch_device(args.device, args.threads)
    out = Path(args.out)
    seeds = args.seeds[:1] if args.quick else args.seeds
    base = [*DATA, *(common.QUICK_RUN if args.quick else []), f'train.device="{device.type}"']
    chosen = runs(args.quick)
    unknown = sorted(set(args.only or []) - set(chosen))
    if unknown:
        p.error(f"--only: unknown variants {unknown}; known: {sorted(chosen)}")
    results, seeds_of = {}, {}
    for name, sets in chosen.items():
        if args.only and name not in args.only:
            continue
        done = trained(out, name) if args.aggregate else seeds
        if not done:
            continue
        results[name] = aggregate([train_and_score(name, [*base, *sets], s, out) for s in done])
        seeds_of[name] = done
        print(f"{name}: done", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(results, indent=2))
    tables = "\n\n".join(f"### {name}\n\n{report.table(rows)}" for name, rows in results.items())
    headers, rows = summary(results)
    head = common.markdown(headers, rows)
    listed = "; ".join(f"{k}: {v}" for k, v in seeds_of.items())
    (out / "robustness.md").write_text(f"# Robustness\n\nSeeds: {listed}.\n\n{head}\n\n{tables}\n")
    report.plot(
        {k: v for k, v in results.items() if not k.startswith("CMATH without")},
        out / "robustness.png",
    )
    info = common.machine(device)
    title = (
        f"Test weighted F1 with a modality absent (mean ± std over seeds); {common.describe(info)}"
    )
    common.emit("robustness", title, info, headers, rows, json_path=args.json, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
