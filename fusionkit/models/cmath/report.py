"""Figures and tables of a run: confusion matrix, training curves, seed summaries, ablations."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

HEADLINE = ("test_at_best_dev", "best_test_over_epochs")


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None where the ``plots`` extra is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_results(results: dict, label_names: list[str], out: Path) -> None:
    """``results.json``, and the confusion matrix at the best dev epoch and the curves as
    PNG files (with the ``plots`` extra; without it, a line says they were not drawn)."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if pyplot() is None:
        print(f"{out}: no figures (pip install matplotlib, or the 'plots' extra, to draw them)")
        return
    best, epoch = results["test_at_best_dev"], results["best_dev_epoch"]
    title = (
        f"test at best dev epoch {epoch}: acc {best['accuracy']:.2f}, wF1 {best['weighted_f1']:.2f}"
    )
    plot_confusion(best["confusion"], label_names, out / "confusion.png", title)
    plot_curves(results["history"], out / "curves.png", epoch)


def plot_confusion(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> None:
    """Row-normalised confusion matrix with counts, as a PNG."""
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.8 * n))
    totals = [max(sum(row), 1) for row in confusion]
    norm = [[v / t for v in row] for row, t in zip(confusion, totals, strict=True)]
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(confusion[i][j]),
                ha="center",
                va="center",
                color="white" if norm[i][j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(history: Sequence[dict], path: Path, best_epoch: int) -> None:
    """Training loss, and dev/test weighted F1 per epoch, as a PNG."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    left.set_xlabel("epoch")
    left.set_yscale("log")
    left.legend()
    for split in ("dev", "test"):
        right.plot(
            epochs, [h[f"{split}_weighted_f1"] for h in history], label=f"{split} weighted F1"
        )
    right.axvline(best_epoch, color="grey", linestyle=":", label="best dev epoch")
    right.set_xlabel("epoch")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_std(values: Sequence[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": list(values),
    }


def summarize(runs: Sequence[dict]) -> dict:
    """Mean and standard deviation over seeds of each headline figure."""
    out = {}
    for key in HEADLINE:
        for metric in ("accuracy", "weighted_f1"):
            out[f"{key}/{metric}"] = mean_std([r[key][metric] for r in runs])
    if all("linear_probe" in r for r in runs):
        for metric in ("accuracy", "weighted_f1"):
            out[f"linear_probe/{metric}"] = mean_std([r["linear_probe"][metric] for r in runs])
    return out


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def ablation_table(rows: Sequence[tuple[str, dict]], seeds: Sequence[int]) -> str:
    """Markdown table: one row per variant, mean ± std over ``seeds``."""
    lines = [
        f"Mean ± std over seeds {list(seeds)}. `test_at_best_dev`: test score at the epoch of best dev weighted F1; "
        "`best_test_over_epochs`: the field's (optimistic) convention.",
        "",
        "| variant | test_at_best_dev acc | test_at_best_dev wF1 | best_test_over_epochs acc | best_test_over_epochs wF1 |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows:
        cells = [fmt(s[f"{k}/{m}"]) for k in HEADLINE for m in ("accuracy", "weighted_f1")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
