"""The ``fusionkit`` command (also ``python -m fusionkit``).

    fusionkit train                                          # CMATH on synthetic conversations
    fusionkit train --dataset iemocap --data iemocap_multimodal_features.pkl
    fusionkit train --dataset meld-csv --data MELD/data/MELD --seeds 0 1 2
    fusionkit train --config my.toml --set model.hidden_dim=128 --epochs 5
    fusionkit train --ablations                              # the ablation table
    fusionkit features --dataset table --data manifest.csv   # extract and cache features only
    fusionkit tune --dataset table --data manifest.csv --trials 30   # search on dev
    fusionkit predict runs/synthetic/seed0/best.pt --out predictions
    fusionkit evaluate runs/synthetic/seed0/best.pt --robustness
    torchrun --nproc_per_node 2 -m fusionkit train           # DistributedDataParallel

``--dataset`` names one of the configurations shipped with the package (``fusionkit train
--help`` lists them); ``--config`` a TOML file of your own. A mistake in the input (a
file, a row, a config key, a checkpoint) prints one line and exits with status 2
(``--debug`` shows the traceback); anything else is a bug in fusionkit and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from fusionkit.errors import ConfigError, UserError

TRAIN_FLAGS = ("epochs", "seeds")


def _config(args: argparse.Namespace):
    """The run configuration: ``--config`` (or the ``--dataset``'s), ``--set``, then flags."""
    from fusionkit.models.cmath.config import load_config, override

    config = override(load_config(args.config or args.dataset or "synthetic"), args.set)
    if args.data is not None:
        if not hasattr(config.data, "path"):
            raise ConfigError(f"--data: the {config.data.name!r} source reads no file")
        config = replace(config, data=replace(config.data, path=args.data))
    train = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    train.update({k: True for k in ("compile", "probe") if getattr(args, k, False)})
    return replace(config, train=replace(config.train, **train))


def train(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from fusionkit.models.cmath.run import load_data, run_ablations, run_seeds
    from fusionkit.models.cmath.train import Distributed

    config = _config(args)
    world = Distributed.start()
    try:
        ds, stats = load_data(config)
        if world.rank == 0 and not args.quiet:
            print(ds.summary())
        out = Path(args.out or f"runs/{args.dataset or Path(args.config or 'synthetic').stem}")
        if args.ablations:
            run_ablations(config, ds, stats, out, world, resume=args.resume)
        else:
            run_seeds(config, ds, stats, out, world, resume=args.resume, quiet=args.quiet)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def features(args: argparse.Namespace) -> None:
    """Read the configured source once: features are made and cached, the summary printed."""
    from fusionkit.models.cmath.run import load_data

    ds, _ = load_data(_config(args))
    print(ds.summary())


def predict(args: argparse.Namespace) -> None:
    from fusionkit.models.cmath.predictor import Predictor, score_predictions, write_predictions

    predictor = Predictor.from_checkpoint(args.checkpoint)
    ds = predictor.read(args.data)
    dialogues = ds.split(args.split) if args.split else list(ds.dialogues.values())
    chosen = replace(
        ds, dialogues={d.id: d for d in dialogues}, splits={"chosen": [d.id for d in dialogues]}
    )
    results = predictor.predict(chosen, batch_size=predictor.config.train.batch_size)
    out = Path(args.out)
    write_predictions(results, out)
    n = sum(len(r.labels) for r in results)
    print(f"{n} utterances of {len(results)} dialogues -> {out}/predictions.csv, .json")
    if not results[0].modalities:
        print(f"reliance: not defined for fusion {predictor.model.config.fusion!r} (no precisions)")
    if args.html:
        from fusionkit.conversation_report import conversation_report

        title = f"{Path(args.checkpoint).name} on {ds.name}"
        (out / "report.html").write_text(conversation_report(results, title=title))
        print(f"conversation report -> {out / 'report.html'}")
    scored = score_predictions(results)
    if scored is not None:
        (out / "report.json").write_text(json.dumps(scored.to_dict(), indent=2))
        print(
            f"accuracy {scored.accuracy:.2f}  weighted F1 {scored.weighted_f1:.2f}  "
            f"({scored.support} labelled utterances)"
        )


def evaluate(args: argparse.Namespace) -> None:
    from fusionkit.models.cmath.run import robustness_report, score_checkpoint

    if args.robustness:
        robustness_report(args.checkpoint, data=args.data, out=args.out)
    else:
        print(
            json.dumps(
                score_checkpoint(args.checkpoint, data=args.data, split=args.split), indent=2
            )
        )


def tune(args: argparse.Namespace) -> None:
    from fusionkit.models.cmath.run import load_data
    from fusionkit.models.cmath.tune import tune as search

    config = _config(args)
    ds, stats = load_data(config)
    out = Path(args.out or f"runs/tune-{args.dataset or Path(args.config or 'synthetic').stem}")
    search(
        config,
        ds,
        stats,
        out,
        trials=args.trials if args.trials or args.minutes else 20,
        minutes=args.minutes,
        storage=args.storage,
        study=args.study,
        seeds=args.seeds_per_trial,
        quiet=args.quiet,
    )


def _data_flags(p: argparse.ArgumentParser) -> None:
    from fusionkit.models.cmath.config import config_names

    p.add_argument("--config", help="a TOML file (default: the --dataset's configuration)")
    p.add_argument(
        "--dataset", choices=config_names(), help="a configuration shipped with fusionkit"
    )
    p.add_argument("--data", help="the data file or folder (the source's path)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (parsed as TOML)",
    )


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    top = argparse.ArgumentParser(
        prog="fusionkit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train", parents=[common], help="train and evaluate CMATH", allow_abbrev=False
    )
    _data_flags(p)
    p.add_argument("--out", help="run folder (default runs/<dataset or config>)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--ablations", action="store_true", help="run the ablation table")
    p.add_argument("--resume", action="store_true", help="continue from each seed's state.pt")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--probe", action="store_true", help="also report a per-utterance linear probe")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=train)

    p = sub.add_parser(
        "tune", parents=[common], help="search settings on dev (Optuna)", allow_abbrev=False
    )
    _data_flags(p)
    p.add_argument("--trials", type=int, help="trials this process runs (default 20)")
    p.add_argument("--minutes", type=float, help="stop starting trials after this long")
    p.add_argument("--storage", help="Optuna database URL (default: sqlite study.db in --out)")
    p.add_argument("--study", default="fusionkit", help="study name (shared by processes)")
    p.add_argument(
        "--seeds-per-trial",
        type=int,
        default=3,
        help="seeds a trial trains; it scores their mean dev weighted F1 (default 3)",
    )
    p.add_argument("--out", help="folder for best.toml, trials.csv, importance.png")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=tune)

    p = sub.add_parser(
        "features", parents=[common], help="make and cache a source's features", allow_abbrev=False
    )
    _data_flags(p)
    p.set_defaults(run=features)

    p = sub.add_parser(
        "predict", parents=[common], help="emotions of conversations", allow_abbrev=False
    )
    p.add_argument("checkpoint", help="a best.pt written by fusionkit train")
    p.add_argument("--data", help="data of the checkpoint's kind (default: its own data)")
    p.add_argument("--split", help="predict this split only (default: every dialogue)")
    p.add_argument("--out", default="predictions", help="folder for predictions.csv/json")
    p.add_argument("--html", action="store_true", help="also write report.html (self-contained)")
    p.set_defaults(run=predict)

    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="a saved model's test or robustness report",
        allow_abbrev=False,
    )
    p.add_argument("checkpoint", help="a best.pt written by fusionkit train")
    p.add_argument("--data", help="data of the checkpoint's kind (default: its own data)")
    p.add_argument("--split", default="test", help="the split scored (default test)")
    p.add_argument(
        "--robustness", action="store_true", help="test report under missing and noisy modalities"
    )
    p.add_argument("--out", help="folder of the robustness report (default: beside the checkpoint)")
    p.set_defaults(run=evaluate)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 when done, 2 for a user error (one line, ``--debug`` for the
    traceback). Any other exception propagates with its traceback (status 1)."""
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
