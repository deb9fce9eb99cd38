"""Experiments over :func:`~fusionkit.models.cmath.train.fit`: every seed of a
configuration with the mean and spread of its figures, the ablation table, and a saved
model's test and robustness reports."""

from __future__ import annotations

import json
from pathlib import Path

from fusionkit.data import ConversationDataset
from fusionkit.data.dataset import Stats
from fusionkit.models.cmath import checkpoint, report, robustness
from fusionkit.models.cmath.config import RunConfig, with_model
from fusionkit.models.cmath.evaluate import evaluate, linear_probe
from fusionkit.models.cmath.model import CMATHConfig
from fusionkit.models.cmath.train import ONE_PROCESS, Distributed, device_for, fit


def load_data(config: RunConfig) -> tuple[ConversationDataset, Stats | None]:
    """The configured source's dataset, prepared (split, standardised by train's statistics)."""
    return config.prepare(config.data.load())


def run_seeds(
    config: RunConfig,
    ds: ConversationDataset,
    stats: Stats | None,
    out: Path,
    world: Distributed = ONE_PROCESS,
    *,
    resume: bool = False,
    quiet: bool = False,
) -> dict:
    """Every seed of ``config``; writes and returns the summary over seeds."""
    probe = linear_probe(ds) if config.train.probe else None  # deterministic: fit once
    runs = [
        fit(
            config,
            ds,
            stats,
            s,
            out / f"seed{s}",
            world=world,
            resume=resume,
            quiet=quiet,
            probe=probe,
        ).results
        for s in config.train.seeds
    ]
    summary = {"seeds": config.train.seeds, **report.summarize(runs)}
    if world.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        for key, stat in summary.items():
            if key != "seeds":
                print(f"{key:40s} {report.fmt(stat)}")
    return summary


def ablations(ds: ConversationDataset, model: CMATHConfig) -> list[tuple[str, dict]]:
    """The paper's kind of ablation table for ``model``: (name, model overrides)."""
    rows = [
        ("CMATH (full)", {}),
        *([("w/o input shortcut", {"shortcut": False})] if model.shortcut else []),
        ("w/o modality reconstruction", {"reconstruction": False}),
        ("symmetric fusion (MulT-style)", {"symmetric": True}),
    ]
    rows += [(f"central = {m} only", {"centrals": [m]}) for m in ds.modalities]
    central = "text" if "text" in ds.modalities else ds.modalities[0]
    rows.append((f"central = {central} only, aligned", {"centrals": [central], "aligned": True}))
    rows += [
        ("w/o variational fusion (concat)", {"fusion": "concat"}),
        ("w/o hierarchical distillation", {"distillation": False}),
        ("single granularity (coarse head only)", {"granularity": "single"}),
    ]
    return rows


def run_ablations(
    config: RunConfig,
    ds: ConversationDataset,
    stats: Stats | None,
    out: Path,
    world: Distributed = ONE_PROCESS,
    *,
    resume: bool = False,
) -> None:
    """Every row of :func:`ablations` over the configured seeds; writes ``ablations.md``."""
    rows = []
    for i, (name, changes) in enumerate(ablations(ds, config.model)):
        if world.rank == 0:
            print(f"== ablation {i}: {name} {changes}")
        config_i = with_model(config, **changes)
        summary = run_seeds(
            config_i, ds, stats, out / f"ablation{i}", world, resume=resume, quiet=True
        )
        rows.append((name, summary))
    if world.rank == 0:
        table = report.ablation_table(rows, config.train.seeds)
        (out / "ablations.md").write_text(f"# Ablations on {ds.name}\n\n{table}")
        print(table)


def score_checkpoint(path: str, *, data: str | None = None, split: str = "test") -> dict:
    """The checkpoint's model on ``split`` of its own data (or of ``data``, of its kind)."""
    restored = checkpoint.restore(path)
    ds = restored.reader(data)()
    result = evaluate(
        restored.model, ds, split, restored.config.train.batch_size, device_for("cpu")
    )
    return {"checkpoint": str(path), "split": split, **result.to_dict()}


def robustness_report(path: str, *, data: str | None = None, out: str | None = None) -> Path:
    """The checkpoint's test report under missing and noisy modalities, written to ``out``
    (default: beside the checkpoint) as JSON, Markdown and a plot."""
    restored = checkpoint.restore(path)
    ds = restored.reader(data)()
    rows = robustness.robustness(restored.model, ds, batch_size=restored.config.train.batch_size)
    folder = Path(out or Path(path).parent)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "robustness.json").write_text(json.dumps(rows, indent=2))
    (folder / "robustness.md").write_text(f"# Robustness of {path}\n\n{robustness.table(rows)}")
    robustness.plot({Path(path).parent.name: rows}, folder / "robustness.png")
    print(robustness.table(rows))
    return folder
