"""Convert a feature pickle (any published layout) to fusionkit's npz format.

    python -m fusionkit.data.convert iemocap_multimodal_features.pkl iemocap.npz [--text mean]

The npz holds every modality the pickle has (text from the chosen RoBERTa layer), the
labels, speakers and splits; ``train.py --dataset npz --data iemocap.npz`` reads it.
"""

from __future__ import annotations

import argparse

from fusionkit.data.pickles import read_feature_pickle
from fusionkit.data.store import save_npz


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="the .pkl feature file")
    parser.add_argument("target", help="the .npz file to write")
    parser.add_argument(
        "--text", default="0", help="RoBERTa layer 0..3 of the 4-layer layouts, or 'mean'"
    )
    parser.add_argument("--labels", default="emotion", choices=["emotion", "sentiment"])
    args = parser.parse_args(argv)
    text = args.text if args.text == "mean" else int(args.text)
    dataset = read_feature_pickle(args.source, text=text, label_set=args.labels)
    save_npz(dataset, args.target)
    print(dataset.summary())
    print(f"wrote {args.target}")


if __name__ == "__main__":
    main()
