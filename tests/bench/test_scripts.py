"""Each benchmark script's ``--quick`` mode runs and writes its table (a smoke test: the
figures of a quick run mean nothing)."""

import json

import pytest

from bench import attention, epoch, scaling, train_step

pytestmark = pytest.mark.slow


def _run(main, tmp_path, *extra):
    out = tmp_path / "table.json"
    assert main(["--quick", "--threads", "1", "--json", str(out), *extra]) == 0
    table = json.loads(out.read_text())
    assert table["rows"] and all(len(r) == len(table["headers"]) for r in table["rows"])
    assert table["machine"]["threads"] == 1
    return table


def test_attention(tmp_path, capsys):
    table = _run(attention.main, tmp_path)
    backends = {r[5] for r in table["rows"]}
    assert {"bare sdpa", "fusionkit sdpa", "fusionkit math"} <= backends
    assert capsys.readouterr().out.count("| b | h |") == 1  # one table, nothing else in it


def test_train_step(tmp_path):
    table = _run(train_step.main, tmp_path)
    variants = [r[1] for r in table["rows"]]
    assert any("checking off" in v for v in variants) and any("baseline" in v for v in variants)
    assert table["summary"][0]["checked_calls"] > 0


def test_scaling(tmp_path):
    table = _run(scaling.main, tmp_path)
    sizes = {str(r[2]) for r in table["rows"]}
    assert any(s.startswith("exponent") for s in sizes)


def test_epoch(tmp_path):
    table = _run(epoch.main, tmp_path)
    assert table["default_run"]["epochs"] == 1
    assert any(r[0] == "**epoch**" for r in table["rows"])
