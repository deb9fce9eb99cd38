import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fusionkit import IGNORE_INDEX, Dialogue, DialogueBatch, classification_report, length_buckets


def _dialogue(i, n, dims=(("text", 3), ("audio", 2))):
    return Dialogue(
        id=f"d{i}",
        features={m: np.full((n, d), float(i + 1), dtype=np.float32) for m, d in dims},
        speakers=np.arange(n) % 2,
        labels=np.arange(n) % 3,
    )


def test_collate_pads_with_zero_features_and_ignored_labels():
    batch = DialogueBatch.collate([_dialogue(0, 2), _dialogue(1, 4)])
    assert batch.mask.tolist() == [[True, True, False, False], [True] * 4]
    assert batch.labels[0].tolist() == [0, 1, IGNORE_INDEX, IGNORE_INDEX]
    assert batch.features["text"].shape == (2, 4, 3)
    assert torch.all(batch.features["audio"][0, 2:] == 0) and torch.all(
        batch.features["audio"][1] == 2
    )
    assert batch.ids == ("d0", "d1") and batch.modalities == ["audio", "text"]
    moved = batch.to("cpu")
    assert torch.equal(moved.labels, batch.labels)


def test_collate_and_dialogue_errors():
    with pytest.raises(ValueError, match="differ from"):
        DialogueBatch.collate([_dialogue(0, 2), _dialogue(1, 2, dims=(("text", 3),))])
    with pytest.raises(ValueError, match="has shape"):
        Dialogue("x", {"text": np.zeros((3, 2))}, np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="mask: expected a bool tensor"):
        DialogueBatch(
            {},
            torch.ones(1, 2),
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
        )


def test_classification_report_matches_sklearn_and_drops_ignored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    y_pad, p_pad = np.concatenate([y, [IGNORE_INDEX] * 5]), np.concatenate([p, [0] * 5])
    report = classification_report(p_pad, y_pad, ["a", "b", "c", "d"])
    assert report.support == 200
    assert report.weighted_f1 == pytest.approx(100 * f1_score(y, p, average="weighted"))
    assert report.accuracy == pytest.approx(100 * (y == p).mean())
    assert sum(map(sum, report.confusion)) == 200
    assert report.per_class_f1["b"] == pytest.approx(100 * f1_score(y, p, average=None)[1])


@pytest.mark.slow
def test_typecheck_switch_turns_checking_off():
    code = (
        "import torch, fusionkit as fk\n"
        "assert not fk.typing.CHECKING\n"
        "f = lambda x: x\n"
        "assert fk.typing.typechecked(f) is f\n"
        "m = fk.MultiHeadAttention(8, heads=2)\n"
        "mask = torch.ones(1, 3, dtype=torch.bool)  # batch 1 for 2: checked, this would fail\n"
        "m(torch.randn(2, 3, 8), torch.randn(2, 3, 8), mask=mask)\n"
    )
    env = dict(os.environ, FUSIONKIT_TYPECHECK="0")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("n", [16, 109, 3])
def test_length_buckets_batches_hold_neighbours_in_length(n):
    """Every batch that ``batches`` cuts from the order holds dialogues adjacent in length
    (a short batch included, wherever the order puts it); a new generator, a new order."""
    lengths = np.random.default_rng(1).integers(1, 120, n).tolist()
    order = length_buckets(lengths, 8, np.random.default_rng(0))
    assert sorted(order) == list(range(n))
    ranked = sorted(lengths)
    for start in range(0, n, 8):
        got = sorted(lengths[i] for i in order[start : start + 8])
        assert any(got == ranked[k : k + len(got)] for k in range(0, n, 8)), got
    if n > 16:
        assert order != length_buckets(lengths, 8, np.random.default_rng(1))
