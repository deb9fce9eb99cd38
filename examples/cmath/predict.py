"""Predict the emotions of conversations with a trained CMATH checkpoint.

    python examples/cmath/predict.py --checkpoint runs/synthetic/seed0/best.pt --out predictions
    python examples/cmath/predict.py --checkpoint best.pt --data new.npz --out predictions
    python examples/cmath/predict.py --checkpoint best.pt --data features.pkl --split test

``--data`` is anything train.py reads, of the kind the checkpoint was trained on (or
``--dataset``); without it, the checkpoint's own data. Writes ``predictions.csv`` and
``predictions.json`` to ``--out`` (per utterance: ids, the predicted label and every
class probability); where the data have labels, the report is printed and written to
``report.json``. A user error prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from examples.cmath.config import DATASETS
from examples.cmath.predictor import DialoguePrediction, Predictor
from examples.cmath.train import USER_ERRORS, cli_parser, report_error
from fusionkit import IGNORE_INDEX, classification_report


def write(results: list[DialoguePrediction], out: Path) -> None:
    """``predictions.csv`` (one row per utterance) and ``predictions.json`` (per dialogue)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for r in results for row in r.rows()]
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dialogues = [
        {
            "dialogue": r.dialogue,
            "utterances": [{k: v for k, v in row.items() if k != "dialogue"} for row in r.rows()],
        }
        for r in results
    ]
    (out / "predictions.json").write_text(
        json.dumps({"label_names": results[0].label_names, "dialogues": dialogues}, indent=2)
    )


def score(results: list[DialoguePrediction]):
    """The classification report over the labelled utterances, or None if there are none."""
    names = results[0].label_names
    y = np.array(
        [IGNORE_INDEX if t is None else names.index(t) for r in results for t in r.true_labels]
    )
    if (y == IGNORE_INDEX).all():
        return None
    p = np.concatenate([r.probabilities.argmax(-1) for r in results])
    return classification_report(p, y, names)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli_parser(__doc__)
    parser.add_argument(
        "--checkpoint", required=True, help="a best.pt or last.pt written by train.py"
    )
    parser.add_argument(
        "--data", help="the data file or folder (default: the checkpoint's own data)"
    )
    parser.add_argument(
        "--dataset", choices=DATASETS, help="the kind of --data (default: the checkpoint's)"
    )
    parser.add_argument("--split", help="predict this split only (default: every dialogue)")
    parser.add_argument("--out", default="predictions", help="folder for predictions.csv/json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint)
        cfg = predictor.config.data
        cfg = replace(
            cfg, **{k: v for k, v in (("dataset", args.dataset), ("path", args.data)) if v}
        )
        ds = predictor.read(cfg)
        dialogues = ds.split(args.split) if args.split else list(ds.dialogues.values())
        chosen = replace(
            ds, dialogues={d.id: d for d in dialogues}, splits={"chosen": [d.id for d in dialogues]}
        )
        results = predictor.predict(chosen, batch_size=predictor.config.train.batch_size)
        out = Path(args.out)
        write(results, out)
        print(
            f"{sum(len(r.labels) for r in results)} utterances of {len(results)} dialogues -> {out}/predictions.csv, .json"
        )
        report = score(results)
        if report is not None:
            (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
            print(
                f"accuracy {report.accuracy:.2f}  weighted F1 {report.weighted_f1:.2f}  ({report.support} labelled utterances)"
            )
        return 0
    except USER_ERRORS as e:
        return report_error(e, args.debug)


if __name__ == "__main__":
    sys.exit(main())
