"""The benchmark harness: peak memory is the measured call's own, padding is counted
exactly, and the scripts stay on public APIs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import bucketing, common
from fusionkit import Dialogue

MIB = 2**20


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="the peak resident set cannot be reset"
)
def test_cpu_peak_is_the_calls_own_after_a_larger_one():
    def holding(mib: int):
        return lambda: torch.ones(mib * MIB // 4).add_(1)  # touched: resident

    assert common.peak_bytes(holding(256), "cpu") > 250 * MIB
    peak = common.peak_bytes(holding(64), "cpu")  # an earlier peak does not hide it
    assert 60 * MIB < peak < 80 * MIB


def _dialogue(i: int, n: int) -> Dialogue:
    zeros = np.zeros(n, dtype=np.int64)
    return Dialogue(f"d{i}", {"text": np.zeros((n, 2), np.float32)}, zeros, zeros)


def test_padding_is_counted_from_the_batches():
    train = [_dialogue(i, n) for i, n in enumerate([1, 4, 1, 4])]
    bucketed = bucketing.padding(train, 2, True, seeds=[0, 1], epochs=3)
    assert bucketed == {"share": 0.0, "positions": 10.0, "utterances": 10.0}
    shuffled = bucketing.padding(train, 2, False, seeds=[0, 1], epochs=3)
    assert shuffled["utterances"] == 10.0 and shuffled["positions"] > 10.0
    assert shuffled["share"] == pytest.approx(1 - 10 / shuffled["positions"])


@pytest.mark.parametrize(
    "script", sorted(Path(common.ROOT, "bench").glob("*.py")), ids=lambda p: p.name
)
def test_no_private_torch_internals_or_bytecode(script):
    text = script.read_text()
    assert "torch._C" not in text and "co_consts" not in text
