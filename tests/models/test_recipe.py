"""The default training recipe: the learning-rate schedule's shape, the budget rule, early
stopping on dev weighted F1 with the best epoch's weights kept, and the configurations that
use it."""

import itertools
import math

import pytest
import torch

from fusionkit.models.cmath import TrainConfig, fit, load_config, override
from fusionkit.models.cmath.run import load_data
from fusionkit.models.cmath.train import budget, epochs_for, lr_factor
from tests.helpers import TINY


def test_warmup_is_linear_then_cosine_reaches_zero_at_the_end():
    tc = TrainConfig(schedule="cosine", warmup=0.1)
    f = lr_factor(tc, 200)
    assert [f(i) for i in range(3)] == pytest.approx([1 / 20, 2 / 20, 3 / 20])
    assert f(19) == pytest.approx(1.0) and f(20) == pytest.approx(1.0)
    assert f(20 + 90) == pytest.approx(0.5)  # half-way through the cosine
    assert f(199) == pytest.approx(0.5 * (1 + math.cos(math.pi * 179 / 180)))
    assert f(200) == pytest.approx(0.0)
    after = [f(i) for i in range(20, 201)]
    assert all(a >= b for a, b in itertools.pairwise(after))  # never rises after the warmup


def test_constant_schedule_and_no_warmup():
    f = lr_factor(TrainConfig(schedule="constant", warmup=0.0), 50)
    assert {f(i) for i in range(60)} == {1.0}


def test_budget_rule():
    assert budget(130) == 2600  # MELD at 8 dialogues a step: 20 epochs
    assert budget(14) == 500  # the synthetic data: at least 500 steps
    assert budget(400) == 3000  # at most 3,000
    tc = TrainConfig()
    assert epochs_for(tc, 1038) == math.ceil(2600 / 130)
    assert epochs_for(tc, 151) == math.ceil(500 / 19)  # 151 long dialogues: 27 epochs
    assert epochs_for(TrainConfig(steps=100, batch_size=10), 95) == 10
    assert epochs_for(TrainConfig(epochs=7), 10_000) == 7  # the field's configs count epochs


def test_the_field_configs_keep_their_epochs_and_the_others_use_the_recipe():
    for name in ("iemocap", "meld"):
        tc = load_config(name).train
        assert tc.epochs in (150, 50) and tc.schedule == "constant" and tc.patience == 0
    for name in ("table", "meld-csv", "npz"):
        tc = load_config(name).train
        assert tc.epochs is None and tc.steps is None and tc.schedule == "cosine"
        assert tc.optimizer == "adamw" and tc.patience > 0


def test_bad_train_values_are_config_errors():
    from fusionkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train: expected > 0, got \{'batch_size': 0\}"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="warmup in"):
        TrainConfig(warmup=1.0)


@pytest.mark.slow
def test_early_stopping_stops_on_patience_and_keeps_the_best_weights(tmp_path):
    """A learning rate too small to move dev: the best epoch is the first, and training
    stops ``patience`` epochs later, with the first epoch's weights."""
    config = override(load_config("synthetic"), [s for s in TINY if "=" in s])
    config = override(config, ["train.epochs=12", "train.patience=2", "train.lr=1e-9"])
    ds, stats = load_data(config)
    fitted = fit(config, ds, stats, 0, tmp_path, quiet=True)
    res = fitted.results
    assert res["best_dev_epoch"] == 1 and res["epochs_run"] == 3 == len(res["history"])
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "state.pt", weights_only=True)["model"]
    kept = fitted.model.state_dict()
    assert all(torch.equal(kept[k].cpu(), best[k]) for k in best)
    assert any(not torch.equal(best[k], last[k]) for k in best)  # epochs 2-3 did move it


def test_a_non_finite_loss_stops_training_naming_seed_epoch_and_step(tmp_path, monkeypatch):
    """The loss turns NaN at the 3rd step of epoch 2: the run stops there with an error,
    best.pt and state.pt keep epoch 1, and no weight was updated with the NaN."""
    from fusionkit.errors import DivergenceError
    from fusionkit.models.cmath import train as train_module

    config = override(load_config("synthetic"), [s for s in TINY if "=" in s])
    config = override(config, ["train.epochs=3", "train.save_every=1"])
    ds, stats = load_data(config)
    steps_per_epoch = math.ceil(len(ds.split("train")) / config.train.batch_size)
    calls = {"n": 0}
    real = train_module.objective

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        if calls["n"] == steps_per_epoch + 3:
            return type(loss)(total=loss.total * float("nan"), terms=loss.terms)
        return loss

    monkeypatch.setattr(train_module, "objective", poisoned)
    with pytest.raises(DivergenceError, match=r"seed 0, epoch 2, step 3: the loss is not finite"):
        fit(config, ds, stats, 0, tmp_path, quiet=True)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["state"]["epoch"] == 1
    assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 1
