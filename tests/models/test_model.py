"""The CMATH model: every ablation and every subset of modalities trains."""

import pytest
import torch

from fusionkit import DialogueBatch
from fusionkit.augment import modality_dropout
from fusionkit.data import SyntheticConversations
from fusionkit.models.cmath import CMATH, CMATHConfig, DataSpec, loss_counts, objective
from tests.helpers import streamed_logits

DIMS = {"text": 20, "audio": 14, "visual": 10}


@pytest.fixture(scope="module")
def data():
    return SyntheticConversations(num_dialogues=12, min_len=3, max_len=10, dims=DIMS, seed=0).load()


def _model(ds, weights=None, **changes):
    config = CMATHConfig(
        **{
            "hidden_dim": 16,
            "heads": 2,
            "compressed_dim": 8,
            "dropout": 0.0,
            "input_dropout": 0.0,
            **changes,
        }
    )
    return CMATH(config, DataSpec.of(ds), weights)


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
    "shortcut, input dropout": {"shortcut": True, "input_dropout": 0.3},
}


def _loss(model, batch, normalizer=None):
    """The objective of ``batch`` (its own normaliser unless given), modalities hidden as
    the training loop hides them when the model trains with modality dropout."""
    p = model.config.modality_dropout
    presence = modality_dropout(batch, p) if model.training and p > 0 else None
    if normalizer is None:
        normalizer = loss_counts(batch, model.class_weights)
    return objective(model, model(batch, presence=presence), batch, normalizer)


def _train_steps(model, batch, steps=15):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        out = _loss(model, batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    return losses, out


@pytest.mark.parametrize("changes", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_each_ablation_builds_and_trains(data, changes):
    torch.manual_seed(0)
    model = _model(data, data.class_weights(), **changes)
    batch = next(data.batches("train", 4))
    losses, out = _train_steps(model, batch, steps=8)
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
    model = _model(ds)
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
    model = _model(data).eval()
    dialogues = data.split("train")[:3]
    batch = DialogueBatch.collate(dialogues)
    alone = DialogueBatch.collate(dialogues[:1])
    with torch.no_grad():
        a, b, c = (model(x).logits for x in (batch, batch, alone))
    assert torch.equal(a, b)
    n = len(dialogues[0])
    torch.testing.assert_close(c[0, :n], a[0, :n], atol=1e-5, rtol=1e-4)


def test_unknown_central_is_an_error(data):
    with pytest.raises(ValueError, match=r"centrals: \['depth'\] not among the modalities"):
        _model(data, centrals=["depth"])


def test_model_checks_its_inputs(data):
    from jaxtyping import TypeCheckError

    model = _model(data)
    batch = next(data.batches("train", 2))
    extra = dict(batch.features, depth=batch.features["text"])
    with pytest.raises(
        ValueError, match=r"features: expected modalities .* unexpected \['depth'\]"
    ):
        model.encode(extra, mask=batch.mask, speakers=batch.speakers)
    with pytest.raises(TypeCheckError, match="parameter 'speakers'"):
        model.encode(batch.features, mask=batch.mask, speakers=batch.speakers.float())
    with pytest.raises(ValueError, match=r"class_weights: expected shape \(6,\)"):
        _model(data, torch.ones(3))


def test_loss_is_the_step_mean_whatever_the_split_of_the_step(data):
    """Two halves of a step, each given the whole step's normaliser, sum to the loss of the
    whole step: what lets DDP processes each take a share (and an emptied batch weigh 0)."""
    model = _model(data, data.class_weights(), fusion="concat").eval()
    dialogues = data.split("train")[:4]
    whole = DialogueBatch.collate(dialogues)
    halves = [DialogueBatch.collate(dialogues[:2]), DialogueBatch.collate(dialogues[2:])]
    norm = loss_counts(whole, model.class_weights)
    torch.testing.assert_close(norm, sum(loss_counts(h, model.class_weights) for h in halves))
    with torch.no_grad():
        total = _loss(model, whole, norm)
        parts = [_loss(model, h, norm) for h in halves]
        empty = _loss(model, halves[0].emptied(), norm)
    for key, value in total.terms.items():
        torch.testing.assert_close(sum(p.terms[key] for p in parts), value, rtol=1e-4, atol=1e-6)
    assert empty.total.item() == 0.0


def test_modality_dropout_hides_modalities_and_trains(data):
    torch.manual_seed(0)
    model = _model(data, modality_dropout=0.2).train()
    b, t = 400, 10
    big = DialogueBatch(
        features={m: torch.zeros(b, t, w) for m, w in DIMS.items()},
        mask=torch.ones(b, t, dtype=torch.bool),
        speakers=torch.zeros(b, t, dtype=torch.long),
        labels=torch.zeros(b, t, dtype=torch.long),
    )
    hidden = {m: ~h for m, h in modality_dropout(big, model.config.modality_dropout).items()}
    # kept with probability 0.8 * 0.8, less the few utterances that would lose everything
    rate = torch.stack(list(hidden.values())).float().mean()
    assert 0.28 < rate < 0.4, rate
    whole = torch.stack([h.all(1) for h in hidden.values()])  # a modality hidden for a dialogue
    assert 0.14 < whole.float().mean() < 0.26
    assert not torch.stack(list(hidden.values())).all(0).any()  # never every modality
    batch = next(data.batches("train", 4))
    losses, out = _train_steps(model, batch, steps=6)
    assert losses[-1] < losses[0] and torch.isfinite(out.total)
    assert set(model.gate["text"].absent) == {"text", "text<-audio", "text<-visual"}


def test_shortcut_adds_a_linear_map_of_each_present_modality(data):
    """With ``shortcut`` the coarse logits are the head's plus, for every modality present
    at an utterance, a linear map of that utterance's own input features."""
    model = _model(data, shortcut=True).eval()
    batch = DialogueBatch.collate(data.split("train")[:3])
    audio = batch.mask & (torch.rand(batch.mask.shape) < 0.5)
    with torch.no_grad():
        out = model(batch, presence={"audio": audio})
        own = {m: model.shortcut[m](x) for m, x in batch.features.items()}
        own["audio"] = own["audio"] * audio[..., None]
        torch.testing.assert_close(out.logits, model.head(out.coarse) + sum(own.values()))
        assert not torch.allclose(out.logits, model.head(out.coarse))


def test_input_dropout_corrupts_the_inputs_and_reconstruction_aims_at_the_clean_ones(data):
    model = _model(data, input_dropout=0.5)
    batch = DialogueBatch.collate(data.split("train")[:2])
    seen = {}

    def record(module, args, kwargs, output):
        seen["x"], seen["target"] = args[0], kwargs["target"]

    model.reconstructors["text"].register_forward_hook(record, with_kwargs=True)
    model(batch)
    x = batch.features["text"]
    assert torch.equal(seen["target"], x)
    zeroed = (seen["x"] == 0) & (x != 0)
    assert 0.3 < zeroed.float().mean() < 0.7  # about half the inputs dropped
    model.eval()
    model(batch)
    assert torch.equal(seen["x"], x)


def test_absent_values_never_matter_and_everything_absent_is_finite(data):
    model = _model(data, modality_dropout=0.3, shortcut=True).eval()
    dialogues = data.split("train")[:2]
    batch = DialogueBatch.collate(dialogues)
    audio = torch.rand(batch.mask.shape) < 0.5
    presence = {"audio": audio & batch.mask, "visual": torch.zeros_like(batch.mask)}
    with torch.no_grad():
        a = model.encode(
            batch.features, mask=batch.mask, speakers=batch.speakers, presence=presence
        )
        junk = dict(batch.features)
        junk["audio"] = torch.where(audio[..., None], junk["audio"], 1e6)
        junk["visual"] = torch.full_like(junk["visual"], float("nan"))
        b = model.encode(junk, mask=batch.mask, speakers=batch.speakers, presence=presence)
        nothing = dict.fromkeys(["text", "audio", "visual"], torch.zeros_like(batch.mask))
        c = model.encode(batch.features, mask=batch.mask, speakers=batch.speakers, presence=nothing)
    torch.testing.assert_close(b.logits, a.logits)
    assert torch.isfinite(c.logits).all()


def test_streaming_equals_the_causal_model_on_the_whole_dialogue(data):
    """Utterance by utterance with cached keys and values, the same predictions as the
    causal model run on the whole dialogue (and a bidirectional model refuses to stream)."""
    from fusionkit import StreamCache

    torch.manual_seed(0)
    model = _model(data, causal=True, shortcut=True).eval()
    d = data.split("test")[0]
    whole = DialogueBatch.collate([d])
    with torch.no_grad():
        full = model(whole).logits[0]
    cache = StreamCache()
    steps = streamed_logits(model, whole, cache)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-4)
    assert cache.position == len(d)
    with pytest.raises(ValueError, match="cache: needs a causal layer"):
        _model(data).encode(
            {m: x[:, :1] for m, x in whole.features.items()},
            mask=whole.mask[:, :1],
            speakers=whole.speakers[:, :1],
            cache=StreamCache(),
        )


def test_attention_dropout_reaches_every_attention_and_keeps_cpu_sdpa_fused(data, monkeypatch):
    """``attention_dropout`` sets every attention's dropout (None: ``dropout``); at 0 the
    CPU's training step never takes the (t, t) math path that attention dropout needs."""
    import fusionkit.attention.reference as reference
    from fusionkit.blocks import MultiHeadAttention
    from fusionkit.dropout import Dropout

    def attention_ps(model):
        return {m.dropout for m in model.modules() if isinstance(m, MultiHeadAttention)}

    def other_ps(model):
        return {m.p for m in model.modules() if isinstance(m, Dropout)}

    default = _model(data, dropout=0.3)
    assert attention_ps(default) == {0.3}
    model = _model(data, dropout=0.3, attention_dropout=0.0)
    assert attention_ps(model) == {0.0} and 0.3 in other_ps(model)
    assert other_ps(model) == other_ps(default)  # only the attention weights' dropout moved
    batch = DialogueBatch.collate(data.split("train")[:4])

    def refuse(*args):
        raise AssertionError("the math path ran")

    monkeypatch.setattr(reference, "math_attention", refuse)
    _loss(model.train(), batch).total.backward()
    with pytest.raises(AssertionError, match="the math path ran"):
        with_attention_dropout = _model(data, dropout=0.3).train()
        _loss(with_attention_dropout, batch)
