"""Robustness to missing and noisy modalities: models trained with and without modality
dropout, scored with each modality absent or noisy at test time.

    python bench/robustness.py --out runs/robustness          # 3 seeds, ~20 min on 2 cores
    python bench/robustness.py --quick --out /tmp/robustness  # a smoke run

Data: the synthetic conversations with uneven modality quality (each dialogue draws a
noise level per modality, ``noise_spread``), smaller widths than IEMOCAP's so that the
27 trainings (12 epochs each) fit a CPU. Variants, each trained with and without ``model.modality_dropout``:
CMATH (asymmetric, product of experts), its symmetric variant, and plain concatenation
fusion; and CMATH trained without each modality at all (the reference a dropout-trained
model should match when that modality is absent at test). Writes ``robustness.md``
(tables, mean ± std over seeds), ``robustness.json`` and ``robustness.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.cmath import checkpoint, robustness, train
from examples.cmath.data import prepare, read_dataset

DATA = [
    "data.synthetic.dims={text = 256, audio = 256, visual = 128}",
    "data.synthetic.noise_spread=3.0",
    "train.epochs=12",
]
VARIANTS = {
    "CMATH": [],
    "CMATH symmetric": ["model.symmetric=true"],
    "concat fusion": ["model.fusion='concat'"],
}
DROPOUT = "model.modality_dropout=0.3"
MODALITIES = ("audio", "text", "visual")


def runs(quick: bool) -> dict[str, list[str]]:
    """Name -> the ``--set`` assignments of each trained variant."""
    out = {}
    for name, sets in VARIANTS.items():
        out[name] = sets
        out[f"{name} + dropout"] = [*sets, DROPOUT]
    for m in MODALITIES:
        kept = ", ".join(f'"{k}"' for k in MODALITIES if k != m)
        out[f"CMATH without {m}"] = [f"data.modalities=[{kept}]"]
    if quick:
        out = {
            k: v for k, v in out.items() if k in ("CMATH", "CMATH + dropout", "CMATH without audio")
        }
    return out


def _folder(out: Path, name: str) -> Path:
    return out / name.replace(" ", "_").replace("+", "plus")


def trained(out: Path, name: str) -> list[int]:
    """The seeds of ``name`` with a best checkpoint in ``out``."""
    return sorted(int(p.parent.name[4:]) for p in _folder(out, name).glob("seed*/best.pt"))


def train_and_score(
    name: str, sets: list[str], seed: int, out: Path, extra: list[str]
) -> list[dict]:
    folder = _folder(out, name) / f"seed{seed}"
    args = [a for s in [*DATA, *sets] for a in ("--set", s)]
    if not (folder / "best.pt").exists():
        assert (
            train.main(
                [*args, *extra, "--seeds", str(seed), "--out", str(folder.parent), "--quiet"]
            )
            == 0
        )
    model, config, stats = checkpoint.restore(checkpoint.load(folder / "best.pt"))
    ds, _ = prepare(read_dataset(config.data), config.data, stats)
    return robustness.robustness(model, ds, batch_size=config.train.batch_size, seed=seed)


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


def summary(results: dict[str, list[dict]]) -> str:
    """The headline comparison: each modality entirely absent at test, with dropout, against
    the model trained without it; and every modality present, with and without dropout."""

    def at(name, kind, m, level):
        r = next(
            r
            for r in results[name]
            if (r["perturbation"], r["modality"], r["level"]) == (kind, m, level)
        )
        return f"{r['weighted_f1']:.2f} ± {r['weighted_f1_std']:.2f}"

    lines = ["| model | all present | " + " | ".join(f"no {m} at test" for m in MODALITIES) + " |"]
    lines.append("|---" * (len(MODALITIES) + 2) + "|")
    for name in results:
        if name.startswith("CMATH without"):
            continue
        lines.append(
            f"| {name} | {at(name, 'absent', MODALITIES[0], 0.0)} | "
            + " | ".join(at(name, "absent", m, 1.0) for m in MODALITIES)
            + " |"
        )
    refs = [f"CMATH without {m}" for m in MODALITIES]
    if all(r in results for r in refs):
        # its plain test score: any modality it has, at 0% absence
        kept = [next(k for k in MODALITIES if k != m) for m in MODALITIES]
        cells = " | ".join(at(r, "absent", k, 0.0) for r, k in zip(refs, kept))
        lines.append(f"| CMATH trained without that modality | - | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/robustness")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--quick", action="store_true", help="tiny data, 2 epochs, 3 variants, 1 seed"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these variants only")
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="train nothing: score every variant on the seeds already trained in --out",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    extra = []
    if args.quick:
        args.seeds = [0]
        extra = [
            "--epochs",
            "2",
            "--set",
            "data.synthetic.num_dialogues=16",
            "--set",
            "data.synthetic.max_len=16",
        ]
    chosen = runs(args.quick)
    unknown = sorted(set(args.only or []) - set(chosen))
    if unknown:
        parser.error(f"--only: unknown variants {unknown}; known: {sorted(chosen)}")
    results, seeds_of = {}, {}
    for name, sets in chosen.items():
        if args.only and name not in args.only:
            continue
        seeds = trained(out, name) if args.aggregate else args.seeds
        if not seeds:
            continue
        results[name] = aggregate([train_and_score(name, sets, s, out, extra) for s in seeds])
        seeds_of[name] = seeds
        print(f"{name}: done")
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(results, indent=2))
    tables = "\n\n".join(
        f"### {name}\n\n{robustness.table(rows)}" for name, rows in results.items()
    )
    head = summary(results)
    seeds = "; ".join(f"{k}: {v}" for k, v in seeds_of.items())
    (out / "robustness.md").write_text(f"# Robustness\n\nSeeds: {seeds}.\n\n{head}\n\n{tables}\n")
    robustness.plot(
        {k: v for k, v in results.items() if not k.startswith("CMATH without")},
        out / "robustness.png",
    )
    print(head)


if __name__ == "__main__":
    main()
