"""Train and evaluate CMATH: the README's reproduction command, ``fusionkit train``.

    python examples/cmath/train.py                                   # synthetic conversations
    python examples/cmath/train.py --dataset iemocap --data iemocap_multimodal_features.pkl
    python examples/cmath/train.py --dataset meld --data meld_multimodal_features.pkl
    python examples/cmath/train.py --seeds 0 1 2 3 4 --ablations

Every flag is ``fusionkit train``'s (``fusionkit train --help``).
"""

import sys

from fusionkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
