"""What each block does where a modality is absent (issue 11); the properties every block
shares under absence are in test_properties.py."""

import pytest
import torch

import fusionkit as fk
from tests.helpers import lengths_mask

D = 16


def _weighted(x):
    """A scalar of ``x`` that a LayerNorm's output does not make constant."""
    return (x * torch.linspace(-1, 1, x.shape[-1])).sum()


def test_cma_query_with_no_present_key_gets_only_the_feed_forward():
    """With audio absent from the whole dialogue, ``text<-audio`` is the central stream
    through the layers' feed-forward parts alone: attention and the aligned term add nothing."""
    cma = fk.CMATransformer(
        D, central="text", auxiliary=["audio"], depth=2, heads=2, aligned=True
    ).eval()
    mask = lengths_mask([4, 3], 4)
    f = {"text": torch.randn(2, 4, D), "audio": torch.randn(2, 4, D, requires_grad=True)}
    absent = {"audio": torch.zeros(2, 4, dtype=torch.bool)}
    out = cma(f, mask=mask, presence=absent)["text<-audio"]
    u = f["text"]
    for layer in cma.streams["text<-audio"]:
        u = u + layer.ff(layer.norm_ff(u))
    expected = torch.where(mask[..., None], cma.norm(u), 0.0)
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(_weighted(out), f["audio"], allow_unused=True)
    assert grad is None or torch.all(grad == 0)


def test_cma_aligned_term_and_keys_skip_absent_utterances():
    """An utterance's own audio reaches ``text<-audio`` through the aligned term where the
    audio is present, and neither through it nor as a key where it is absent."""
    mask = lengths_mask([4], 4)
    presence = {"audio": torch.tensor([[True, False, True, True]])}
    f = {"text": torch.randn(1, 4, D), "audio": torch.randn(1, 4, D, requires_grad=True)}
    cma = fk.CMATransformer(
        D, central="text", auxiliary=["audio"], depth=1, heads=2, aligned=True
    ).eval()
    out = cma(f, mask=mask, presence=presence)["text<-audio"]
    for t in range(4):
        (grad,) = torch.autograd.grad(_weighted(out[0, t]), f["audio"], retain_graph=True)
        reaches = grad[0].abs().sum(-1) > 0
        assert reaches.tolist() == [True, False, True, True], t


def test_cma_absent_central_starts_from_zero_and_keeps_the_auxiliary():
    """Where the central modality is absent, the returned central stream is zero and
    ``text<-audio`` is computed from a zero query: it carries the audio's information only."""
    cma = fk.CMATransformer(D, central="text", auxiliary=["audio"], heads=2).eval()
    mask = lengths_mask([3], 3)
    text, audio = torch.randn(1, 3, D), torch.randn(1, 3, D, requires_grad=True)
    presence = {"text": torch.tensor([[True, False, True]])}
    out = cma({"text": text, "audio": audio}, mask=mask, presence=presence)
    assert torch.all(out["text"][0, 1] == 0) and torch.equal(out["text"][0, 0], text[0, 0])
    zeroed = text.clone()
    zeroed[0, 1] = 0.0
    plain = cma({"text": zeroed, "audio": audio}, mask=mask)
    torch.testing.assert_close(out["text<-audio"], plain["text<-audio"])
    (grad,) = torch.autograd.grad(_weighted(out["text<-audio"][0, 1]), audio)
    assert grad.abs().sum() > 0


def test_context_encoder_treats_absent_utterances_as_padding():
    enc = fk.DialogueContextEncoder(D, heads=2, num_speakers=2, max_len=8, dropout=0.0).eval()
    x, mask = torch.randn(2, 5, D), lengths_mask([5, 3], 5)
    presence = mask & torch.tensor([[True, False, True, True, False]])
    speakers = torch.randint(0, 2, (2, 5))
    out = enc(x, mask=mask, speakers=speakers, presence=presence)
    assert torch.all(out[~presence] == 0)
    torch.testing.assert_close(out, enc(x, mask=presence, speakers=speakers))


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_reconstructor_treats_absent_utterances_as_padding(kind):
    rec = fk.ModalityReconstructor(12, latent_dim=4, kind=kind).eval()
    x, mask = torch.randn(2, 6, 12), lengths_mask([6, 4], 6)
    presence = mask & (torch.arange(6) % 3 != 1)
    out = rec(x, mask=mask, presence=presence)
    same = rec(x, mask=presence)
    for a, b in ((out.latent, same.latent), (out.reconstruction, same.reconstruction)):
        torch.testing.assert_close(a, b)
        assert torch.all(a[~presence] == 0)
    expected = fk.losses.masked_mse(out.reconstruction, x, mask=presence, reduction="sum")
    torch.testing.assert_close(out.loss, expected)


def test_poe_leaves_absent_experts_out():
    vf = fk.VariationalFusion({"a": D, "b": D}, 4).eval()
    a, b = torch.randn(1, 3, D), torch.randn(1, 3, D)
    mask = lengths_mask([3], 3)
    presence = {"a": torch.tensor([[True, True, False]]), "b": torch.tensor([[True, False, False]])}
    out = vf({"a": a, "b": b}, mask=mask, presence=presence)
    full = vf({"a": a, "b": b}, mask=mask)
    torch.testing.assert_close(out.mu[0, 0], full.mu[0, 0])  # both present
    precision = 1 + (-vf.logvar[0](a[0, 1])).exp()  # a and the prior
    torch.testing.assert_close(out.mu[0, 1], (precision - 1) * vf.mu[0](a[0, 1]) / precision)
    torch.testing.assert_close(out.logvar[0, 1], -precision.log())
    assert torch.all(out.mu[0, 2] == 0) and torch.all(out.logvar[0, 2] == 0)  # the prior
    kl = 0.5 * (out.mu**2 + out.logvar.exp() - 1 - out.logvar).sum(-1)
    torch.testing.assert_close(out.kl, kl.mean())  # averaged over real utterances
    vf.train()
    z = vf({"a": a, "b": b}, mask=mask, presence=presence).z
    assert torch.isfinite(z).all() and not torch.all(z[0, 2] == 0)  # a draw from N(0, I)


@pytest.mark.parametrize(
    "build",
    [
        lambda absence: fk.ConcatFusion({"a": 3, "b": 2}, 4, absence=absence),
        lambda absence: fk.GatedFusion({"a": 3, "b": 2}, 4, absence=absence),
        lambda absence: fk.TensorFusion({"a": 3, "b": 2}, 4, factor_dim=2, absence=absence),
        lambda absence: fk.LowRankFusion({"a": 3, "b": 2}, 4, rank=2, absence=absence),
        lambda absence: fk.VariationalFusion({"a": 3, "b": 2}, 4, mode="concat", absence=absence),
    ],
    ids=["concat", "gated", "tensor", "lowrank", "vconcat"],
)
def test_fusions_see_the_learned_absence_vector(build):
    fusion = build(True).eval()
    assert {k: tuple(p.shape) for k, p in fusion.absent.items()} == {"a": (3,), "b": (2,)}
    with torch.no_grad():
        fusion.absent["b"].normal_()
    a, b, mask = torch.randn(1, 3, 3), torch.randn(1, 3, 2), lengths_mask([3], 3)
    presence = {"b": torch.tensor([[True, False, True]])}
    out = fusion({"a": a, "b": b}, mask=mask, presence=presence)
    substituted = b.clone()
    substituted[0, 1] = fusion.absent["b"]
    expected = fusion({"a": a, "b": substituted}, mask=mask)
    out, expected = (getattr(o, "z", o) for o in (out, expected))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="built without absence vectors"):
        build(False)({"a": a, "b": b}, mask=mask, presence=presence)


def test_poe_needs_no_absence_vectors():
    assert fk.VariationalFusion({"a": 3}, 4, absence=True).absent is None
    assert fk.ConcatFusion({"a": 3}, 4).absent is None


def test_presence_errors_name_the_problem():
    fusion = fk.ConcatFusion({"a": 3, "b": 2}, 4, absence=True)
    x, mask = {"a": torch.randn(1, 3, 3), "b": torch.randn(1, 3, 2)}, lengths_mask([2], 3)
    with pytest.raises(ValueError, match=r"presence: \['c'\] name nothing of \['a', 'b'\]"):
        fusion(x, mask=mask, presence={"c": mask})
    with pytest.raises(ValueError, match=r"presence\['a'\]: True at a padded position"):
        fusion(x, mask=mask, presence={"a": torch.ones(1, 3, dtype=torch.bool)})
    enc = fk.DialogueContextEncoder(D, heads=2, num_speakers=2, max_len=8)
    with pytest.raises(ValueError, match="presence: True at a padded position"):
        enc(
            torch.randn(1, 3, D),
            mask=mask,
            speakers=torch.zeros(1, 3, dtype=torch.long),
            presence=torch.ones(1, 3, dtype=torch.bool),
        )


def test_blocks_take_a_batch_presence():
    """A collated batch's presence goes straight into the blocks."""
    ds = fk.data.SyntheticConversations(
        num_dialogues=4,
        min_len=3,
        max_len=6,
        dims={"text": D, "audio": D},
        missing_rate={"audio": 0.5},
        seed=1,
    ).load()
    batch = fk.DialogueBatch.collate(list(ds.dialogues.values()))
    assert not torch.equal(batch.presence["audio"], batch.mask)
    cma = fk.CMATransformer(D, central="text", auxiliary=["audio"], heads=2)
    out = cma(batch.features, mask=batch.mask, presence=batch.presence)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_transformer_layer_never_reads_absent_keys():
    """Whatever the context holds at an absent key (inf, NaN), a cross-attention layer's
    output and gradients do not change, with or without the aligned term."""
    for aligned in (False, True):
        layer = fk.TransformerLayer(D, heads=2, cross=True, aligned=aligned).eval()
        x, mask = torch.randn(2, 4, D), lengths_mask([4, 3], 4)
        key_mask = mask & torch.tensor([[True, False, True, False], [False, False, False, False]])
        context = torch.randn(2, 4, D)
        junk = torch.where(key_mask[..., None], context, float("nan"))
        junk[0, 1] = float("inf")
        outs, grads = [], []
        for ctx in (context, junk):
            ctx = ctx.clone().requires_grad_()
            out = layer(x, mask=mask, context=ctx, key_mask=key_mask)
            _weighted(out).backward()
            outs.append(out)
            grads.append([p.grad.clone() for p in layer.parameters()])
            assert torch.all(ctx.grad[~key_mask] == 0)
            layer.zero_grad()
        assert torch.equal(outs[0], outs[1])
        for a, b in zip(*grads):
            assert torch.isfinite(b).all()
            torch.testing.assert_close(a, b)
