"""Emotions of conversations from a trained checkpoint: ``fusionkit predict``.

    python examples/cmath/predict.py runs/synthetic/seed0/best.pt --out predictions

Every flag is ``fusionkit predict``'s (``fusionkit predict --help``).
"""

import sys

from fusionkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
