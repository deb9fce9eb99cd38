"""Latency of one streaming push: the cached session against recomputing the whole prefix.

    python bench/streaming.py                 # positions 10, 100, 1000 at the default model size
    python bench/streaming.py --quick         # a smoke run

A causal CMATH (``model.causal = true``, IEMOCAP widths 1024/1582/342, the default
synthetic run's hidden size) predicts utterance n+1 of a dialogue either by
``StreamSession.push`` (keys and values of earlier utterances cached: cost linear in n) or
by running the model on all n+1 utterances and keeping the last (quadratic attention,
and every layer redone). Median of ``--repeats`` pushes at each position, one table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from examples.cmath.config import RunConfig
from examples.cmath.model import CMATH, DataSpec
from examples.cmath.predictor import Predictor
from fusionkit import Dialogue, DialogueBatch

WIDTHS = {"text": 1024, "audio": 1582, "visual": 342}


def utterance(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {m: rng.standard_normal(w).astype(np.float32) for m, w in WIDTHS.items()}


def measure(
    position: int, repeats: int, predictor: Predictor, rng: np.random.Generator
) -> tuple[float, float]:
    """Median seconds of one cached push and of one full-prefix forward at ``position``."""
    session = predictor.stream()
    history = [utterance(rng) for _ in range(position + repeats)]
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
            {m: np.stack([u[m] for u in history[:n]]) for m in WIDTHS},
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )
        batch = DialogueBatch.collate([d])
        start = time.perf_counter()
        with torch.no_grad():
            predictor.model(batch).logits[0, -1]
        full.append(time.perf_counter() - start)
    return statistics.median(cached), statistics.median(full)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="positions 4 and 16, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.positions, args.repeats = [4, 16], 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = RunConfig()
    config = replace(
        config,
        model=replace(
            config.model, causal=True, max_positions=max(args.positions) + args.repeats + 1
        ),
    )
    spec = DataSpec(input_dims=WIDTHS, label_names=[str(i) for i in range(6)], num_speakers=2)
    predictor = Predictor(CMATH(config.model, spec), config, None, {})
    rng = np.random.default_rng(0)
    print(
        f"threads {torch.get_num_threads()}, hidden {config.model.hidden_dim}, median of {args.repeats} pushes"
    )
    print("| position | full prefix / cached | cached push (ms) | full prefix (ms) |")
    print("|---|---|---|---|")
    for p in args.positions:
        cached, full = measure(p, args.repeats, predictor, rng)
        print(f"| {p} | {full / cached:.1f}x | {1e3 * cached:.2f} | {1e3 * full:.2f} |")


if __name__ == "__main__":
    main()
