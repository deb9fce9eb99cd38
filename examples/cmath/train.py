"""Train and evaluate CMATH.

    python examples/cmath/train.py                                   # synthetic data, ~75 s on 2 CPU cores
    python examples/cmath/train.py --dataset iemocap --data IEMOCAP_features.pkl
    python examples/cmath/train.py --dataset meld --data meld_multimodal_features.pkl
    python examples/cmath/train.py --dataset meld-csv --data path/to/MELD/data/MELD
    python examples/cmath/train.py --seeds 0 1 2 3 4                 # mean and std over seeds
    python examples/cmath/train.py --ablations                       # the ablation table
    python examples/cmath/train.py --resume --out runs/x             # continue an interrupted run
    python examples/cmath/train.py --eval runs/x/seed0/best.pt       # score a saved model
    torchrun --nproc_per_node 2 examples/cmath/train.py              # DistributedDataParallel

Each dataset kind has its configuration in ``configs/<dataset>.toml`` (``--config`` names
another). Each run writes to ``--out`` (default ``runs/<dataset>``): per seed
``results.json``, ``confusion.png``, ``curves.png``, ``last.pt`` (every epoch, atomically)
and ``best.pt`` (best dev epoch); ``summary.json`` with mean and std over seeds; with
``--ablations``, ``ablations.md``. Reported: ``test_at_best_dev`` (the honest figure) and
``best_test_over_epochs`` (the field's convention), both named as such. A user error
prints one line and exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.distributed as dist

from examples.cmath import checkpoint, report, robustness
from examples.cmath.config import DATASETS, RunConfig, load_config, override, with_model
from examples.cmath.data import Stats, load_data, prepare, read_dataset
from examples.cmath.evaluate import evaluate, linear_probe
from examples.cmath.fit import Distributed, device_for, fit
from fusionkit.data import ConversationDataset

USER_ERRORS = (OSError, ValueError, KeyError, pickle.UnpicklingError)
"""What bad input raises (every message names the argument or file): one line, status 2."""


def report_error(e: Exception, debug: bool) -> int:
    """Print a user error as one line and return status 2 (re-raise it with ``debug``)."""
    if debug:
        raise e
    message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def run_seeds(
    config: RunConfig,
    ds: ConversationDataset,
    stats: Stats | None,
    out: Path,
    world: Distributed,
    *,
    resume: bool,
    quiet: bool,
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
        )
        for s in config.train.seeds
    ]
    summary = {"seeds": config.train.seeds, **report.summarize(runs)}
    if world.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        for key, stat in summary.items():
            if key != "seeds":
                print(f"{key:40s} {report.fmt(stat)}")
    return summary


def ablations(ds: ConversationDataset) -> list[tuple[str, dict]]:
    """The paper's kind of ablation table: (name, model overrides)."""
    rows = [
        ("CMATH (full)", {}),
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


def run_ablations(config, ds, stats, out, world, *, resume: bool) -> None:
    rows = []
    for i, (name, changes) in enumerate(ablations(ds)):
        if world.rank == 0:
            print(f"== ablation {i}: {name} {changes}")
        summary = run_seeds(
            with_model(config, **changes),
            ds,
            stats,
            out / f"ablation{i}",
            world,
            resume=resume,
            quiet=True,
        )
        rows.append((name, summary))
    if world.rank == 0:
        table = report.ablation_table(rows, config.train.seeds)
        (out / "ablations.md").write_text(f"# Ablations on {ds.name}\n\n{table}")
        print(table)


def score_checkpoint(path: str, args) -> dict:
    """``--eval``: the checkpoint's model on ``--split`` of its own data (or ``--data``)."""
    ckpt = checkpoint.load(path)
    model, config, stats = checkpoint.restore(ckpt)
    if args.data is not None:
        config = replace(config, data=replace(config.data, path=args.data))
    ds, _ = prepare(read_dataset(config.data), config.data, stats)
    result = evaluate(model, ds, args.split, config.train.batch_size, device_for("cpu"))
    return {"checkpoint": path, "split": args.split, **result.to_dict()}


def robustness_report(path: str, args) -> Path:
    """``--robustness``: the checkpoint's test report under missing and noisy modalities."""
    model, config, stats = checkpoint.restore(checkpoint.load(path))
    if args.data is not None:
        config = replace(config, data=replace(config.data, path=args.data))
    ds, _ = prepare(read_dataset(config.data), config.data, stats)
    rows = robustness.robustness(model, ds, batch_size=config.train.batch_size)
    out = Path(args.out or Path(path).parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(rows, indent=2))
    (out / "robustness.md").write_text(f"# Robustness of {path}\n\n{robustness.table(rows)}")
    robustness.plot({Path(path).parent.name: rows}, out / "robustness.png")
    print(robustness.table(rows))
    return out


def cli_parser(description: str) -> argparse.ArgumentParser:
    """The parser every command of the example starts from: its docstring as help, no
    abbreviated flags, and ``--debug``."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli_parser(__doc__)
    parser.add_argument(
        "--config", help="TOML file, or a name in examples/cmath/configs (default: the dataset's)"
    )
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--data", help="the data file or folder")
    parser.add_argument("--out", help="run folder (default runs/<dataset>)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value",
    )
    parser.add_argument("--ablations", action="store_true", help="run the ablation table")
    parser.add_argument("--resume", action="store_true", help="continue from each seed's last.pt")
    parser.add_argument("--eval", metavar="CHECKPOINT", help="score a saved model and exit")
    parser.add_argument("--split", default="test", help="split scored by --eval")
    parser.add_argument(
        "--robustness",
        metavar="CHECKPOINT",
        help="test report under missing and noisy modalities, written to --out (default: beside it)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--probe", action="store_true", help="also report a per-utterance linear probe"
    )
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> RunConfig:
    """The dataset's own config (or ``--config``), then ``--set``, then the direct flags."""
    config = load_config(args.config or args.dataset or "synthetic")
    config = override(config, args.set)
    data = {k: v for k, v in (("dataset", args.dataset), ("path", args.data)) if v is not None}
    train = {k: v for k, v in (("epochs", args.epochs), ("seeds", args.seeds)) if v is not None}
    train.update({k: True for k in ("compile", "probe") if getattr(args, k)})
    return replace(config, data=replace(config.data, **data), train=replace(config.train, **train))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.eval:
            print(json.dumps(score_checkpoint(args.eval, args), indent=2))
            return 0
        if args.robustness:
            robustness_report(args.robustness, args)
            return 0
        config = configure(args)
        world = Distributed.start()
        ds, stats = load_data(config.data)
        if world.rank == 0 and not args.quiet:
            print(ds.summary())
        out = Path(args.out or f"runs/{config.data.dataset}")
        if args.ablations:
            run_ablations(config, ds, stats, out, world, resume=args.resume)
        else:
            run_seeds(config, ds, stats, out, world, resume=args.resume, quiet=args.quiet)
        return 0
    except USER_ERRORS as e:
        return report_error(e, args.debug)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
