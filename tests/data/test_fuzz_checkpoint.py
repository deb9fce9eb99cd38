"""Checkpoints fuzzed: a file ``load`` accepts restores the very model that was saved (its
weights finite); any other ends as fusionkit's own error of one line naming the file, never
another exception; a foreign pickle inside never runs."""

from __future__ import annotations

import functools
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit.errors import CheckpointError, UserError
from fusionkit.models.cmath import CMATH, DataSpec, RunConfig, override
from fusionkit.models.cmath.checkpoint import load, payload, restore, save
from fusionkit.models.cmath.run import load_data
from tests.data.test_fuzz_readers import EDITS, EXAMPLES, mutate

FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = [
    "data.num_dialogues=6",
    "data.min_len=3",
    "data.max_len=6",
    "data.dims={text = 6, audio = 4}",
    "model.hidden_dim=8",
    "model.heads=2",
    "model.compressed_dim=4",
]


@functools.cache
def saved() -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """A small untrained model's checkpoint as training writes it: its bytes, weights and
    payload."""
    config = override(RunConfig(), SMALL)
    ds, stats = load_data(config)
    torch.manual_seed(0)
    model = CMATH(config.model, DataSpec.of(ds), ds.class_weights())
    content = payload(model, config, stats, ds, epoch=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "best.pt"
        save(content, path)
        return path.read_bytes(), model.state_dict(), content


def ends_well(path: Path) -> None:
    """``load`` and ``restore`` of ``path``: the saved model, or a one-line
    :class:`UserError` naming the file."""
    try:
        load(path)
        model = restore(path).model
    except UserError as e:
        assert "\n" not in str(e) and path.name in str(e), str(e)
        return
    weights = saved()[1]
    for name, x in model.state_dict().items():
        if x.is_floating_point():
            assert torch.isfinite(x).all(), name
        assert torch.equal(x, weights[name]), f"{name} differs from the saved weights"


@FUZZ
@given(edits=EDITS)
def test_mutated_or_cut_checkpoint(edits):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.pt"
        path.write_bytes(mutate(saved()[0], edits))
        ends_well(path)


@pytest.mark.parametrize("data", [b"", b"PK\x05\x06" + bytes(18)], ids=["empty", "empty zip"])
def test_empty_checkpoint(tmp_path, data):
    (tmp_path / "e.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"e\.pt"):
        load(tmp_path / "e.pt")


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _with_pickle(data: bytes, pickled: bytes) -> bytes:
    """The checkpoint ``data`` (a zip) with its ``data.pkl`` replaced by ``pickled``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = pickled if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, body)
    return out.getvalue()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_foreign_pickle_is_refused_unrun(tmp_path, zipped):
    marker = tmp_path / "ran"
    evil = pickle.dumps({"format": "fusionkit-cmath-checkpoint", "x": _Exploit(str(marker))})
    path = tmp_path / "evil.pt"
    path.write_bytes(_with_pickle(saved()[0], evil) if zipped else evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt") as e:
        load(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


TENSORS = st.builds(
    lambda shape, v: torch.full(shape, v),
    st.sampled_from([(), (0,), (3,), (2, 2)]),
    st.floats(width=32),
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4)
    | TENSORS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)  # fmt: skip


@st.composite
def changed_payload(draw) -> dict:
    """The saved payload (built before: :func:`saved` is cached) with one entry, or one
    entry of one of its dicts, left out or replaced by a value of the wrong type, shape or
    size (NaN included)."""
    content = dict(saved()[2])
    key = draw(st.sampled_from(sorted(content)))
    inner = content[key]
    if isinstance(inner, dict) and inner and draw(st.booleans()):
        inner = dict(inner)
        name = draw(st.sampled_from(sorted(inner)))
        if draw(st.booleans()):
            del inner[name]
        elif isinstance(inner[name], torch.Tensor) and inner[name].numel():
            x = inner[name].clone().double() if draw(st.booleans()) else inner[name].clone()
            x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.floats(width=32))
            inner[name] = x
        else:
            inner[name] = draw(VALUES)
        content[key] = inner
    elif key not in ("format", "version") and draw(st.booleans()):
        del content[key]
    else:
        content[key] = draw(VALUES)
    return content


@FUZZ
@given(choice=st.data())
def test_checkpoint_with_wrong_contents(choice):
    saved()  # the model is built here, outside the strategy, once
    content = choice.draw(changed_payload())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.pt"
        torch.save(content, path)
        try:
            restored = restore(path)
        except UserError as e:
            assert "\n" not in str(e) and path.name in str(e), str(e)
            return
        for name, x in restored.model.state_dict().items():
            if x.is_floating_point():
                assert np.isfinite(x.numpy()).all(), name
        for m, (mean, std) in (restored.stats or {}).items():
            assert np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all(), m
