"""The CMATH example model: every ablation and every subset of modalities trains."""

import pytest
import torch

from examples.cmath.model import CMATH, CMATHConfig
from fusionkit.data import SyntheticConversations

DIMS = {"text": 20, "audio": 14, "visual": 10}


@pytest.fixture(scope="module")
def data():
    return SyntheticConversations(
        num_dialogues=12, min_len=3, max_len=10, dims=DIMS, seed=0
    ).build()


def _config(ds, **changes):
    return CMATHConfig(
        input_dims=ds.feature_dims,
        num_classes=6,
        num_speakers=2,
        max_len=16,
        hidden_dim=16,
        heads=2,
        compressed_dim=8,
        dropout=0.0,
        **changes,
    )


ABLATIONS = {
    "full": {},
    "no reconstruction": {"reconstruction": False},
    "mlp reconstruction": {"reconstruction_kind": "mlp"},
    "symmetric": {"symmetric": True},
    "aligned, text central": {"aligned": True, "centrals": ["text"]},
    "central text": {"centrals": ["text"]},
    "central audio": {"centrals": ["audio"]},
    "central visual": {"centrals": ["visual"]},
    "concat fusion": {"fusion": "concat"},
    "gaussian concat": {"fusion": "vconcat"},
    "no distillation": {"distillation": False},
    "single granularity": {"granularity": "single"},
    "feature distillation": {"feature_distillation": 0.5, "feature_distillation_kind": "cosine"},
}


def _train_steps(model, batch, steps=15, weights=None):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        out = model.loss(batch, class_weights=weights)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    return losses, out


@pytest.mark.parametrize("changes", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_each_ablation_builds_and_trains(data, changes):
    torch.manual_seed(0)
    model = CMATH(_config(data, **changes))
    batch = next(data.batches("train", 4))
    losses, out = _train_steps(model, batch, steps=8, weights=data.class_weights())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} is never used"
    expected = {"ce/coarse", "reconstruction", "kl"}
    if changes.get("granularity") != "single":
        expected |= {f"ce/fine/{c}" for c in changes.get("centrals", sorted(DIMS))}
    if changes.get("granularity") != "single" and changes.get("distillation", True):
        expected |= {"kd", "kd/level1/kd", "kd/level2/kd"}
    assert expected <= set(out.terms)


@pytest.mark.parametrize(
    "modalities", [["text"], ["text", "audio"], ["audio", "text", "visual"]], ids=len
)
def test_any_subset_of_modalities(data, modalities):
    ds = data.select_modalities(modalities)
    model = CMATH(_config(ds))
    assert model.modalities == sorted(modalities)
    assert (
        f"modalities: {', '.join(f'{m} ({DIMS[m]})' for m in sorted(modalities))}"
        in model.describe()
    )
    batch = next(ds.batches("train", 4))
    _, out = _train_steps(model, batch, steps=3)
    assert all(torch.isfinite(v) for v in out.terms.values())
    if modalities == ["text"]:  # no auxiliary: the CMA branch is the central stream alone
        assert model.cma["text"].output_names == ["text"]


def test_eval_is_deterministic_and_padding_does_not_matter(data):
    model = CMATH(_config(data)).eval()
    dialogues = data.split("train")[:3]
    from fusionkit import DialogueBatch

    batch = DialogueBatch.collate(dialogues)
    alone = DialogueBatch.collate(dialogues[:1])
    with torch.no_grad():
        a = model(batch.features, batch.mask, batch.speakers).logits
        b = model(batch.features, batch.mask, batch.speakers).logits
        c = model(alone.features, alone.mask, alone.speakers).logits
    assert torch.equal(a, b)
    n = len(dialogues[0])
    torch.testing.assert_close(c[0, :n], a[0, :n], atol=1e-5, rtol=1e-4)


def test_unknown_central_is_an_error(data):
    with pytest.raises(ValueError, match=r"centrals: \['depth'\] not among the modalities"):
        CMATH(_config(data, centrals=["depth"]))


def test_model_checks_its_inputs(data):
    from jaxtyping import TypeCheckError

    model = CMATH(_config(data))
    batch = next(data.batches("train", 2))
    extra = dict(batch.features, depth=batch.features["text"])
    with pytest.raises(
        ValueError, match=r"features: expected modalities .* unexpected \['depth'\]"
    ):
        model(extra, batch.mask, batch.speakers)
    with pytest.raises(TypeCheckError, match="parameter 'speakers'"):
        model(batch.features, batch.mask, batch.speakers.float())
