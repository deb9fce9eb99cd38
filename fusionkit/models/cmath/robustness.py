"""How a trained model holds up when a modality goes missing or gets noisy at test time.

For each modality: the test report with that modality absent at 0, 25, 50, 75 and 100% of
the utterances (drawn per utterance, seeded; marked absent through the presence masks, so
the model knows), and with Gaussian noise added at several signal-to-noise ratios (on the
standardised features, whose power is about 1 per feature). ``fusionkit evaluate
CHECKPOINT --robustness`` writes the table (Markdown) and the plot (PNG).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fusionkit import Dialogue, classification_report
from fusionkit.data import ConversationDataset
from fusionkit.models.cmath.evaluate import predict_logits

ABSENCE = (0.0, 0.25, 0.5, 0.75, 1.0)
SNR_DB = (20.0, 10.0, 5.0, 0.0, -5.0)


def drop(dialogues: list[Dialogue], modality: str, rate: float, seed: int) -> list[Dialogue]:
    """``modality`` marked absent at a seeded ``rate`` of the utterances (on top of any
    absence already there)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in dialogues:
        keep = d.present(modality) & (rng.random(len(d)) >= rate)
        out.append(replace(d, presence={**d.presence, modality: keep}))
    return out


def add_noise(dialogues: list[Dialogue], modality: str, snr_db: float, seed: int) -> list[Dialogue]:
    """Gaussian noise on ``modality`` at ``snr_db`` (signal power: the mean square feature)."""
    rng = np.random.default_rng(seed)
    power = np.mean([np.mean(np.square(d.features[modality])) for d in dialogues])
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    out = []
    for d in dialogues:
        x = d.features[modality]
        noisy = (x + scale * rng.standard_normal(x.shape)).astype(np.float32)
        out.append(replace(d, features={**d.features, modality: noisy}))
    return out


def robustness(
    model, ds: ConversationDataset, *, batch_size: int = 16, seed: int = 0, device: str = "cpu"
) -> list[dict]:
    """One row per (perturbation, modality, level) with test accuracy and weighted F1."""
    test = ds.split("test")
    y = np.concatenate([np.asarray(d.labels) for d in test])

    def score(dialogues) -> dict:
        logits = predict_logits(model, dialogues, batch_size, torch.device(device))
        p = np.concatenate([logits[d.id].argmax(-1) for d in dialogues])
        r = classification_report(p, y, ds.label_names)
        return {"accuracy": r.accuracy, "weighted_f1": r.weighted_f1}

    rows = []
    for m in ds.modalities:
        for rate in ABSENCE:
            rows.append(
                {
                    "perturbation": "absent",
                    "modality": m,
                    "level": rate,
                    **score(drop(test, m, rate, seed)),
                }
            )
        for snr in SNR_DB:
            rows.append(
                {
                    "perturbation": "noise",
                    "modality": m,
                    "level": snr,
                    **score(add_noise(test, m, snr, seed)),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: weighted F1 (accuracy) per modality and level, one table per perturbation."""
    out = []
    for kind, head, fmt in (
        ("absent", "absent utterances", "{:.0%}"),
        ("noise", "SNR (dB)", "{:g}"),
    ):
        part = [r for r in rows if r["perturbation"] == kind]
        levels = sorted({r["level"] for r in part}, reverse=kind == "noise")
        out += [f"| modality \\ {head} | " + " | ".join(fmt.format(v) for v in levels) + " |"]
        out += ["|---" * (len(levels) + 1) + "|"]
        for m in sorted({r["modality"] for r in part}):
            cells = {r["level"]: r for r in part if r["modality"] == m}
            out += [f"| {m} | " + " | ".join(_cell(cells[v]) for v in levels) + " |"]
        out.append("")
    return "Test weighted F1 (accuracy).\n\n" + "\n".join(out)


def _cell(r: dict) -> str:
    if "weighted_f1_std" in r:
        return f"{r['weighted_f1']:.2f} ± {r['weighted_f1_std']:.2f}"
    return f"{r['weighted_f1']:.2f} ({r['accuracy']:.2f})"


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    """Weighted F1 against absence rate and against SNR, one line per (model, modality)."""
    from fusionkit.models.cmath.report import pyplot

    plt = pyplot()
    if plt is None:
        print(f"{path}: not drawn (pip install matplotlib, or the 'plots' extra)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in curves.items():
        for m in sorted({r["modality"] for r in rows}):
            for ax, kind in zip(axes, ("absent", "noise")):
                pts = sorted(
                    (r["level"], r["weighted_f1"])
                    for r in rows
                    if r["modality"] == m and r["perturbation"] == kind
                )
                ax.plot(*zip(*pts), marker="o", label=f"{name}: {m}")
    axes[0].set_xlabel("share of test utterances without the modality")
    axes[1].set_xlabel("signal-to-noise ratio (dB)")
    axes[1].invert_xaxis()
    for ax in axes:
        ax.set_ylabel("test weighted F1")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
