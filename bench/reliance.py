"""Does reliance follow modality quality? CMATH trained on conversations whose modalities'
noise varies from dialogue to dialogue (the robustness benchmark's data), then, on the test
dialogues, each modality's mean reliance per dialogue against that dialogue's noise level.
The configuration is ``synthetic-paper`` (the paper's model), as results.md measured it.

    python bench/reliance.py --out runs/reliance      # 3 seeds, a few minutes on 2 cores
    python bench/reliance.py --quick --out /tmp/rel   # a smoke run

Reported per modality: Spearman's correlation, over test dialogues, between the dialogue's
mean reliance on the modality and its noise multiplier (negative: noisier, less relied on),
mean ± std over seeds; and the same for the share of utterances whose label changes when
the modality is marked absent. Writes ``reliance.json`` and ``reliance.png`` (seed 0's
dialogues, one panel per modality).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import statistics

import numpy as np
from scipy.stats import spearmanr

from bench import common
from bench.robustness import DATA  # the robustness benchmark's conversations and training
from fusionkit.models.cmath import Predictor, fit, load_config, override

QUICK = [
    "data.num_dialogues=30",
    "data.max_len=20",
    "train.epochs=2",
    "model.hidden_dim=16",
    "model.heads=2",
]


def per_dialogue(config, seed: int, out: Path) -> list[dict]:
    """Train one seed; per test dialogue its noise levels, mean reliance and how often
    hiding each modality changes the label."""
    ds, stats = config.prepare(config.data.load())
    model = fit(config, ds, stats, seed, out / f"seed{seed}", quiet=True).model
    raw = config.data.load()  # the noise levels are in the raw dialogues' extras
    predictor = Predictor(model, config, stats, {})
    rows = []
    for result in predictor.predict(raw.split("test")):
        noise = raw.dialogues[result.dialogue].extras["noise"]
        rows.append(
            {
                "dialogue": result.dialogue,
                "noise": noise,
                "reliance": dict(zip(result.modalities, result.reliance.mean(0).tolist())),
                "flips": {
                    m: float(np.mean(np.array(v) != np.array(result.labels)))
                    for m, v in result.if_absent.items()
                },
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--out", default="runs/reliance")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = override(load_config("synthetic-paper"), DATA + (QUICK if args.quick else []))
    seeds = args.seeds[:1] if args.quick else args.seeds
    runs = {s: per_dialogue(config, s, out) for s in seeds}
    modalities = sorted(runs[seeds[0]][0]["reliance"])
    rows, summary = [], {}
    for m in modalities:
        stats = {}
        for what in ("reliance", "flips"):
            rho = [
                spearmanr([r["noise"][m] for r in rs], [r[what][m] for r in rs]).statistic
                for rs in runs.values()
            ]
            stats[what] = rho
        summary[m] = stats
        rows.append(
            [m]
            + [
                f"{statistics.fmean(v):+.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
                for v in stats.values()
            ]
            + [f"{statistics.fmean(r['reliance'][m] for rs in runs.values() for r in rs):.2f}"]
        )
    (out / "reliance.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    headers = [
        "modality",
        "Spearman(noise, reliance)",
        "Spearman(noise, label flips without it)",
        "mean reliance",
    ]
    title = f"Reliance against each test dialogue's noise level (seeds {seeds})"
    common.emit(
        "reliance.py", title, common.machine("cpu"), headers, rows, json_path=args.json, argv=argv
    )
    plot(runs[seeds[0]], modalities, out / "reliance.png")


def plot(rows: list[dict], modalities: list[str], path: Path) -> None:
    """One panel per modality: the dialogue's noise multiplier against its mean reliance."""
    import matplotlib.ticker

    from fusionkit.models.cmath.report import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(modalities), figsize=(3.6 * len(modalities), 3.2), sharey=True)
    for ax, m in zip(np.atleast_1d(axes), modalities):
        ax.scatter([r["noise"][m] for r in rows], [r["reliance"][m] for r in rows], s=12)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks([1 / 3, 0.5, 1, 2, 3], ["1/3", "0.5", "1", "2", "3"])
        ax.set_xlabel(f"{m}: the dialogue's noise multiplier")
        ax.set_title(m, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("mean reliance over the dialogue")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
