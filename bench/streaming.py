"""Latency of one streaming push: the cached session against recomputing the whole prefix.

    python bench/streaming.py                 # positions 10, 100, 1000 at the default model size
    python bench/streaming.py --quick         # a smoke run

A causal CMATH (``model.causal = true``, IEMOCAP widths 1024/1582/342, the default
configuration's hidden size, random weights) predicts utterance n+1 of a dialogue either by
``StreamSession.push`` (keys and values of earlier utterances cached: cost linear in n;
a push also gives the predictions without each modality) or by running the model on all
n+1 utterances and keeping the last (quadratic attention, and every layer redone). Median
of ``--repeats`` pushes at each position, one table.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench import common
from fusionkit import Dialogue, DialogueBatch
from fusionkit.models.cmath import CMATH, DataSpec, Predictor, RunConfig, override

HEADERS = ["position", "full prefix / cached", "cached push (ms)", "full prefix (ms)"]


def utterance(rng: np.random.Generator, dims: dict[str, int]) -> dict[str, np.ndarray]:
    return {m: rng.standard_normal(w).astype(np.float32) for m, w in dims.items()}


def measure(
    position: int, repeats: int, predictor: Predictor, rng: np.random.Generator
) -> tuple[float, float]:
    """Median seconds of one cached push and of one full-prefix forward at ``position``."""
    dims = predictor.model.spec.input_dims
    session = predictor.stream()
    history = [utterance(rng, dims) for _ in range(position + repeats)]
    for u in history[:position]:
        session.push(u, speaker=0)
    cached, full = [], []
    for i in range(position, position + repeats):
        start = time.perf_counter()
        session.push(history[i], speaker=0)
        cached.append(time.perf_counter() - start)
        n = i + 1
        d = Dialogue(
            "prefix",
            {m: np.stack([u[m] for u in history[:n]]) for m in dims},
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )
        batch = DialogueBatch.collate([d])
        start = time.perf_counter()
        with torch.no_grad():
            predictor.model(batch).logits[0, -1]
        full.append(time.perf_counter() - start)
    return statistics.median(cached), statistics.median(full)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, clock=False)
    p.add_argument("--positions", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(device="cpu")
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device: a stream session runs on the CPU")
    if args.quick:
        args.positions, args.repeats = [4, 16], 2
    device = common.torch_device(args.device, args.threads)
    torch.manual_seed(0)
    longest = max(args.positions) + args.repeats + 1
    config = override(RunConfig(), ["model.causal=true", f"model.max_positions={longest}"])
    dims = common.QUICK_DIMS if args.quick else common.IEMOCAP_DIMS
    spec = DataSpec(input_dims=dict(dims), label_names=[str(i) for i in range(6)], num_speakers=2)
    predictor = Predictor(CMATH(config.model, spec), config, None, {})
    rng = np.random.default_rng(0)
    rows = []
    for position in args.positions:
        cached, full = measure(position, args.repeats, predictor, rng)
        rows.append([position, f"{full / cached:.1f}x", f"{1e3 * cached:.2f}", f"{1e3 * full:.2f}"])
    info = common.machine(device)
    title = (
        f"Streaming push, hidden {config.model.hidden_dim}, median of {args.repeats} pushes; "
        f"{common.describe(info)}"
    )
    common.emit("streaming", title, info, HEADERS, rows, json_path=args.json, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
