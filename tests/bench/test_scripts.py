"""Each benchmark script's ``--quick`` mode runs and writes its table (a smoke test: the
figures of a quick run mean nothing)."""

import json

import pytest

from bench import (
    attention,
    bucketing,
    epoch,
    extraction,
    recipe,
    reliance,
    robustness,
    scaling,
    streaming,
    train_step,
)

pytestmark = pytest.mark.slow


def _run(main, tmp_path, *extra):
    out = tmp_path / "table.json"
    assert not main(["--quick", "--threads", "1", "--json", str(out), *extra])
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
    assert "checking_ms" in table["summary"][0]


def test_scaling(tmp_path):
    table = _run(scaling.main, tmp_path)
    sizes = {str(r[2]) for r in table["rows"]}
    assert any(s.startswith("exponent") for s in sizes)


def test_epoch(tmp_path):
    table = _run(epoch.main, tmp_path)
    assert table["full_run"]["epochs"] == 2
    assert any(r[0] == "**epoch**" for r in table["rows"])
    assert set(table["history_seconds"][-1]) == {"train", "evaluate", "checkpoint"}


def test_bucketing(tmp_path):
    table = _run(bucketing.main, tmp_path)
    figures = table["figures"]
    assert [r[0] for r in table["rows"]] == ["random", "bucketed"]
    assert figures["bucketed"]["share"] < figures["random"]["share"]
    assert len(figures["bucketed"]["test_wf1"]) == 2  # seeds 0 and 1


def test_streaming(tmp_path):
    table = _run(streaming.main, tmp_path)
    assert [r[0] for r in table["rows"]] == [4, 16]


def test_robustness(tmp_path):
    table = _run(robustness.main, tmp_path, "--out", str(tmp_path / "runs"))
    assert [r[0] for r in table["rows"]] == ["CMATH", "CMATH + dropout"]
    assert (tmp_path / "runs" / "robustness.md").exists()


def test_recipe(tmp_path):
    variants = ["--variants", "today", "recipe", "tuned", "--tune-trials", "2"]
    table = _run(recipe.main, tmp_path, "--out", str(tmp_path / "runs"), *variants)
    assert [r[1] for r in table["rows"]] == ["today", "recipe", "tuned"]
    assert (tmp_path / "runs" / "synthetic" / "tune" / "best.toml").exists()
    today, _, tuned = table["rows"]
    assert today[6] == "" and tuned[6].endswith(")")  # the search's best on test, tuned only
    # one seed: the tuned run is the best trial's, which the ceiling cannot fall below
    assert float(tuned[6].split()[0]) >= float(tuned[2].split()[0])


def test_reliance(tmp_path):
    table = _run(reliance.main, tmp_path, "--out", str(tmp_path / "runs"))
    assert {r[0] for r in table["rows"]} == {"audio", "text", "visual"}


def test_extraction(tmp_path):
    table = _run(extraction.main, tmp_path)
    assert any(r[0].startswith("decode") for r in table["rows"])
