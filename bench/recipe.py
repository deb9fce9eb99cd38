"""What the default training recipe gives and costs against the configurations it replaced,
on several real shapes of data, 3 seeds each, with the per-utterance linear probe beside.

    python bench/recipe.py --meld path/to/MELD/data/MELD            # every shape below
    python bench/recipe.py --meld ... --only meld-100 --seeds 0     # one shape, one seed
    python bench/recipe.py --quick                                   # a smoke test of seconds
    python bench/recipe.py --meld ... --variants recipe --set model.dropout=0.5   # a change
    python bench/recipe.py --meld ... --variants recipe tuned      # tune on top of the recipe


Shapes: ``meld`` (MELD's transcripts, frozen sentence-encoder features, official splits),
``meld-100`` (only the first 100 training dialogues: the few-data regime; dev and test
whole), ``meld-episodes`` (the dialogues of each episode joined in order: 188 training
conversations of 53 utterances on average, with many speakers; dev 82, test 143) and
``synthetic`` (the built-in default). Variants: ``today`` (the settings each kind used
before the recipe: meld-csv's and table's hand-set values and the paper's model, or the
``synthetic-paper`` configuration), ``recipe`` (``TrainConfig``'s and ``CMATHConfig``'s
defaults) and ``tuned`` (the recipe with the best settings of a ``fusionkit tune`` study
on the shape's dev split: ``--tune-trials`` trials, each trained with as many seeds as
the variants are reported over); ``--finetune`` for MELD's fine-tuned text. Reported: test
weighted F1 at the best dev epoch (mean ± std over seeds), the probe's, the epochs run,
the seconds a seed took (wall clock, this machine, whatever else ran on it) and, for
``tuned``, the search's best test figure over its completed trials (the ceiling of picking
among them: where it is the recipe's own, the search found nothing better to pick).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import csv
import json
import statistics
import tempfile
from dataclasses import replace

import numpy as np

from bench import common
from fusionkit import Dialogue
from fusionkit.data import ConversationDataset
from fusionkit.data.sources import MeldCsv, Synthetic, TextSettings
from fusionkit.data.tables import MELD_FILES
from fusionkit.models.cmath import fit, load_config, override
from fusionkit.models.cmath.evaluate import linear_probe
from fusionkit.models.cmath.tune import tune, with_params

TODAY = {
    # meld-csv.toml and table.toml before the recipe: set by hand for MELD
    "meld-csv": [
        "model.dropout=0.5",
        "model.reconstruction_hidden=0",
        "model.shortcut=false",
        "model.input_dropout=0.0",
        "train.batch_size=16",
        "train.lr=2e-4",
        "train.weight_decay=1e-4",
        "train.epochs=20",
        "train.optimizer='adam'",
        "train.schedule='constant'",
        "train.warmup=0.0",
        "train.patience=0",
    ],
    "synthetic-paper": [],  # the synthetic run before the recipe, kept as a configuration
}
QUICK = ["model.hidden_dim=16", "model.heads=2", "model.compressed_dim=8"]


def few(ds: ConversationDataset, n: int) -> ConversationDataset:
    """``ds`` with only its first ``n`` training dialogues (dev and test whole)."""
    splits = {**ds.splits, "train": ds.splits["train"][:n]}
    kept = {i for ids in splits.values() for i in ids}
    return replace(
        ds,
        dialogues={k: d for k, d in ds.dialogues.items() if k in kept},
        splits=splits,
        source=f"{ds.source}; first {n} train dialogues",
    )


def episodes(ds: ConversationDataset, meld: Path) -> ConversationDataset:
    """MELD's dialogues of each (split, season, episode) joined in dialogue order into one
    conversation; speakers renumbered by name over the episode."""
    where = {}
    for split, name in MELD_FILES.items():
        with open(meld / name, encoding="utf-8") as f:
            for row in csv.DictReader(f):
                where[f"{split}/{row['Dialogue_ID']}"] = (row["Season"], row["Episode"])
    groups: dict[tuple, list[str]] = {}
    for split, ids in ds.splits.items():
        for did in sorted(ids, key=lambda i: int(i.split("/")[1])):
            groups.setdefault((split, *where[did]), []).append(did)
    dialogues, splits, speakers = {}, {}, 0
    for (split, season, episode), ids in groups.items():
        names: list[str] = []
        ids_of = []
        for did in ids:
            local = ds.info["speaker_names"][did]
            for s in ds.dialogues[did].speakers:
                if local[s] not in names:
                    names.append(local[s])
                ids_of.append(names.index(local[s]))
        key = f"{split}/s{season}e{episode}"
        parts = [ds.dialogues[i] for i in ids]
        dialogues[key] = Dialogue(
            id=key,
            features={m: np.concatenate([d.features[m] for d in parts]) for m in ds.modalities},
            speakers=np.asarray(ids_of),
            labels=np.concatenate([d.labels for d in parts]),
            presence={
                m: np.concatenate([d.present(m) for d in parts])
                for m in ds.modalities
                if any(m in d.presence for d in parts)
            },
        )
        splits.setdefault(split, []).append(key)
        speakers = max(speakers, len(names))
    return replace(
        ds,
        name="meld-episodes",
        dialogues=dialogues,
        splits=splits,
        num_speakers=speakers,
        source=f"{ds.source}; each episode's dialogues joined in order",
        info={k: v for k, v in ds.info.items() if k not in ("speaker_names", "utterance_ids")},
    )


def shapes(args) -> dict[str, tuple[str, ConversationDataset]]:
    """Shape name -> (the configuration it used before the recipe, the dataset as read)."""
    out = {}
    if args.quick:
        small = Synthetic(num_dialogues=18, min_len=3, max_len=12, dims=common.QUICK_DIMS)
        return {"synthetic": ("synthetic-paper", small.load())}
    if args.meld:
        meld = MeldCsv(
            path=args.meld, cache_dir=args.cache_dir, text=TextSettings(finetune=args.finetune)
        ).load()
        out["meld"] = ("meld-csv", meld)
        out["meld-100"] = ("meld-csv", few(meld, 100))
        out["meld-episodes"] = ("meld-csv", episodes(meld, Path(args.meld)))
    out["synthetic"] = ("synthetic-paper", Synthetic().load())
    return out


def variants(kind: str, quick: bool, changes: list[str]) -> dict[str, object]:
    """Variant name -> run configuration (data are given directly, so only model and train
    matter); ``changes`` (``section.key=value``) apply to both."""
    base = load_config(kind)
    extra = [*QUICK, "train.epochs=2"] if quick else []
    today = override(base, TODAY[kind] + changes + extra)
    recipe = load_config("meld-csv") if kind == "meld-csv" else load_config("table")
    recipe = replace(recipe, data=base.data)
    recipe = override(recipe, changes + extra)
    return {"today": today, "recipe": recipe}


def search_ceiling(study, folder: Path) -> str:
    """The best mean test weighted F1 (test at best dev, over the trial's seeds) of the
    study's completed trials, and which trial: what a search that could see test would
    pick, the most that choosing among these trials could give. Read from the trials'
    ``results.json``; the search itself never reads test."""
    best = max(
        (
            statistics.fmean(
                json.loads(p.read_text())["test_at_best_dev"]["weighted_f1"]
                for p in (folder / f"trial{t.number}").glob("seed*/results.json")
            ),
            t.number,
        )
        for t in study.trials
        if t.state.name == "COMPLETE"
    )
    return f"{best[0]:.2f} (trial {best[1]})"


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--meld", help="MELD's CSV folder (data/MELD of MELD's repository)")
    p.add_argument("--cache-dir", default=".fusionkit-cache", help="text feature cache")
    p.add_argument(
        "--finetune", action="store_true", help="MELD's text encoder fine-tuned on its train split"
    )
    p.add_argument("--only", nargs="+", help="shapes to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="folder for runs (default: a temporary one)")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["today", "recipe", "tuned"],
        default=["today", "recipe"],
        help="which to run",
    )
    p.add_argument("--tune-trials", type=int, default=20, help="the tuned variant's trials")
    p.add_argument(
        "--set", dest="changes", action="append", default=[], help="section.key=value for every run"
    )
    args = p.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows, raw = [], {}
    folder = Path(args.out or tempfile.mkdtemp(prefix="recipe-"))
    for shape, (kind, data) in shapes(args).items():
        if args.only and shape not in args.only:
            continue
        configs = variants(kind, args.quick, args.changes)
        prepared: dict[str, tuple] = {}  # the variants share the data when they prepare alike
        for variant in args.variants:
            config = configs["recipe" if variant == "tuned" else variant]
            config = replace(config, train=replace(config.train, seeds=seeds))
            if repr(config.prepare) not in prepared:
                ds, stats = config.prepare(data)
                prepared[repr(config.prepare)] = ds, stats, linear_probe(ds)
            ds, stats, probe = prepared[repr(config.prepare)]
            ceiling = ""
            if variant == "tuned":  # the recipe with what a search on dev found
                study = folder / shape / "tune"
                found = tune(config, ds, stats, study, trials=args.tune_trials, seeds=len(seeds))
                config = with_params(config, found.best_params)
                ceiling = search_ceiling(found, study)
            runs = [
                fit(config, ds, stats, s, folder / shape / variant / f"seed{s}", quiet=True).results
                for s in seeds
            ]
            f1 = [r["test_at_best_dev"]["weighted_f1"] for r in runs]
            raw[f"{shape}/{variant}"] = runs
            rows.append(
                [
                    shape,
                    variant,
                    f"{statistics.fmean(f1):.2f} ± {statistics.stdev(f1) if len(f1) > 1 else 0:.2f}",
                    f"{probe['weighted_f1']:.2f}",
                    f"{statistics.fmean(r['epochs_run'] for r in runs):.1f}",
                    f"{statistics.fmean(r['seconds'] for r in runs):.0f}",
                    ceiling,
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
            (folder / "recipe.json").write_text(
                json.dumps(
                    {
                        k: [
                            {
                                kk: r[kk]
                                for kk in (
                                    "seed",
                                    "test_at_best_dev",
                                    "dev_at_best_dev",
                                    "epochs_run",
                                    "seconds",
                                    "best_dev_epoch",
                                )
                            }
                            for r in v
                        ]
                        for k, v in raw.items()
                    },
                    indent=1,
                )
            )
    headers = [
        "data",
        "training",
        "test wF1 (best dev)",
        "probe wF1",
        "epochs",
        "s / seed",
        "search's best on test",
    ]
    title = f"Default recipe against today's configurations (seeds {seeds})"
    info = common.machine("cpu")
    common.emit("recipe.py", title, info, headers, rows, json_path=args.json, argv=argv)


if __name__ == "__main__":
    main()
