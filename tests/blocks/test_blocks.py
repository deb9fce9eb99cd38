"""What each block computes, and the errors it gives on bad input."""

import pytest
import torch
from jaxtyping import TypeCheckError

import fusionkit as fk
from fusionkit.blocks.reconstruction import halving_widths
from tests.helpers import lengths_mask

D = 16


def test_cross_attention_with_one_allowed_key_returns_that_keys_value():
    attn = fk.MultiHeadAttention(D, heads=4).eval()
    x, ctx = torch.randn(2, 3, D), torch.randn(2, 5, D)
    ctx_mask = torch.zeros(2, 5, dtype=torch.bool)
    ctx_mask[:, 2] = True
    out = attn(x, ctx, key_mask=ctx_mask)
    v = attn.to_kv(ctx)[..., D:]  # values of every key
    expected = attn.to_out(v[:, 2:3]).expand(-1, 3, -1)
    torch.testing.assert_close(out, expected)


def test_cross_attention_matches_pytorch_multihead_attention():
    attn = fk.MultiHeadAttention(D, heads=4).eval()
    ref = torch.nn.MultiheadAttention(D, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.to_q.weight, attn.to_kv.weight]))
        ref.in_proj_bias.copy_(torch.cat([attn.to_q.bias, attn.to_kv.bias]))
        ref.out_proj.weight.copy_(attn.to_out.weight)
        ref.out_proj.bias.copy_(attn.to_out.bias)
    x, ctx = torch.randn(3, 4, D), torch.randn(3, 6, D)
    ctx_mask = lengths_mask([6, 2, 4], 6)
    expected, _ = ref(x, ctx, ctx, key_padding_mask=~ctx_mask)
    torch.testing.assert_close(attn(x, ctx, key_mask=ctx_mask), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda m: m(torch.randn(2, 3), torch.randn(2, 3, D)), "x"),
        (lambda m: m(torch.randn(2, 3, D), torch.randn(4, 3, D)), "context"),
        (
            lambda m: m(torch.randn(2, 3, D), torch.randn(2, 3, D), key_mask=torch.ones(2, 3)),
            "key_mask",
        ),
        (
            lambda m: m(
                torch.randn(2, 3, D), torch.randn(2, 3, D), mask=torch.ones(2, 4, dtype=torch.bool)
            ),
            "mask",
        ),
        (lambda m: m(torch.randint(0, 3, (2, 3, D)), torch.randn(2, 3, D)), "x"),
    ],
)
def test_cross_attention_bad_input_names_the_argument(call, argument):
    with pytest.raises(TypeCheckError, match=f"parameter '{argument}'"):
        call(fk.MultiHeadAttention(D, heads=4))


def test_wrong_feature_width_names_argument_and_width():
    with pytest.raises(ValueError, match=r"x: expected last dimension 16, got shape \(2, 3, 8\)"):
        fk.MultiHeadAttention(D, heads=4)(torch.randn(2, 3, 8), torch.randn(2, 3, 8))


def test_modality_mapping_errors_name_the_modality():
    cma = fk.CMATransformer(D, central="text", auxiliary=["audio"], heads=2)
    mask = lengths_mask([3, 2], 3)
    with pytest.raises(ValueError, match=r"missing \['audio'\]"):
        cma({"text": torch.randn(2, 3, D)}, mask=mask)
    with pytest.raises(ValueError, match=r"unexpected \['visual'\]"):
        cma(
            {
                "text": torch.randn(2, 3, D),
                "audio": torch.randn(2, 3, D),
                "visual": torch.randn(2, 3, D),
            },
            mask=mask,
        )
    with pytest.raises(
        ValueError, match=r"features\['audio'\]: shape \(2, 4, 16\) does not match mask"
    ):
        cma({"text": torch.randn(2, 3, D), "audio": torch.randn(2, 4, D)}, mask=mask)
    with pytest.raises(ValueError, match=r"features\['audio'\]: expected last dimension 16"):
        cma({"text": torch.randn(2, 3, D), "audio": torch.randn(2, 3, 5)}, mask=mask)
    with pytest.raises(TypeError, match=r"features\['audio'\]: expected a floating tensor"):
        cma(
            {"text": torch.randn(2, 3, D), "audio": torch.ones(2, 3, D, dtype=torch.long)},
            mask=mask,
        )


def test_cma_is_asymmetric():
    """``text<-audio`` depends on text and audio only; auxiliaries get nothing back."""
    cma = fk.CMATransformer(D, central="text", auxiliary=["audio", "visual"], heads=2).eval()
    mask = lengths_mask([4, 3], 4)
    f = {m: torch.randn(2, 4, D, requires_grad=True) for m in ("text", "audio", "visual")}
    out = cma(f, mask=mask)
    assert list(out) == ["text", "text<-audio", "text<-visual"] == cma.output_names
    (grad_visual,) = torch.autograd.grad(out["text<-audio"].sum(), f["visual"], allow_unused=True)
    assert grad_visual is None
    assert not any("<-text" in k for k in out)
    changed = dict(f, visual=torch.randn(2, 4, D))
    torch.testing.assert_close(cma(changed, mask=mask)["text<-audio"], out["text<-audio"])


def test_cma_symmetric_has_every_ordered_pair():
    cma = fk.CMATransformer(
        D, central="text", auxiliary=["audio", "visual"], heads=2, symmetric=True
    )
    out = cma(
        {m: torch.randn(1, 2, D) for m in ("text", "audio", "visual")}, mask=lengths_mask([2], 2)
    )
    pairs = {k for k in out if "<-" in k}
    assert pairs == {
        f"{a}<-{b}"
        for a in ("text", "audio", "visual")
        for b in ("text", "audio", "visual")
        if a != b
    }


def test_cma_without_auxiliary_is_the_central_stream():
    cma = fk.CMATransformer(D, central="text", auxiliary=[], heads=2)
    x, mask = torch.randn(2, 3, D), lengths_mask([3, 1], 3)
    out = cma({"text": x}, mask=mask)
    assert list(out) == ["text"]
    torch.testing.assert_close(out["text"], x * mask[..., None])


def test_cma_rejects_central_among_auxiliaries():
    with pytest.raises(ValueError, match="auxiliary"):
        fk.CMATransformer(D, central="text", auxiliary=["text", "audio"])


def test_poe_is_the_precision_weighted_product_of_experts():
    vf = fk.VariationalFusion({"a": D, "b": D}, 4).eval()
    xs, mask = [torch.randn(1, 3, D), torch.randn(1, 3, D)], lengths_mask([3], 3)
    out = vf({"b": xs[1], "a": xs[0]}, mask=mask)
    mus = [h(x) for h, x in zip(vf.mu, xs)]
    precisions = [(-h(x)).exp() for h, x in zip(vf.logvar, xs)]
    precision = 1 + precisions[0] + precisions[1]
    torch.testing.assert_close(
        out.mu, (precisions[0] * mus[0] + precisions[1] * mus[1]) / precision
    )
    torch.testing.assert_close(out.logvar, -precision.log())
    torch.testing.assert_close(out.z, out.mu)  # eval: the mean
    kl = 0.5 * (out.mu**2 + out.logvar.exp() - 1 - out.logvar).sum(-1).mean()
    torch.testing.assert_close(out.kl, kl)


def test_poe_trusts_the_more_certain_expert():
    vf = fk.VariationalFusion({"a": 2, "b": 2}, 1).eval()
    with torch.no_grad():
        for i, (mu, logvar) in enumerate([(3.0, -6.0), (-3.0, 4.0)]):
            vf.mu[i].weight.zero_(), vf.mu[i].bias.fill_(mu)
            vf.logvar[i].weight.zero_(), vf.logvar[i].bias.fill_(logvar)
    out = vf({"a": torch.randn(1, 1, 2), "b": torch.randn(1, 1, 2)}, mask=lengths_mask([1], 1))
    assert 2.9 < out.mu.item() < 3.0


def test_variational_samples_in_train_mode_only():
    vf = fk.VariationalFusion({"a": D}, D, mode="concat")
    xs, mask = {"a": torch.randn(2, 3, D)}, lengths_mask([3, 3], 3)
    assert not torch.equal(vf(xs, mask=mask).z, vf(xs, mask=mask).z)
    vf.eval()
    assert torch.equal(vf(xs, mask=mask).z, vf(xs, mask=mask).mu)


def test_variational_missing_input_is_named():
    vf = fk.VariationalFusion({"a": D, "b": D, "c": D}, D)
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        vf({"a": torch.randn(1, 2, D), "b": torch.randn(1, 2, D)}, mask=lengths_mask([2], 2))


def test_halving_widths():
    assert halving_widths(1582, 256) == [1582, 791, 395, 256]
    assert halving_widths(100, 64) == [100, 64]


def test_reconstructor_learns_to_reconstruct():
    torch.manual_seed(0)
    rec = fk.ModalityReconstructor(12, latent_dim=6, hidden_dim=12)
    basis = torch.randn(3, 12)
    x = torch.randn(4, 8, 3) @ basis  # rank-3 data: compressible to 6 dims
    mask = lengths_mask([8, 5, 8, 2], 8)
    opt = torch.optim.Adam(rec.parameters(), lr=1e-2)
    first = rec(x, mask=mask).loss.item()
    for _ in range(150):
        opt.zero_grad()
        loss = rec(x, mask=mask).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    out = rec(x, mask=mask)
    expected = fk.losses.masked_mse(out.reconstruction, x, mask=mask, reduction="sum")
    assert out.loss.item() == pytest.approx(expected.item())
    rec.loss_reduction = "mean"
    assert rec(x, mask=mask).loss.item() == pytest.approx(out.loss.item() / 12, rel=1e-5)


def test_reconstructor_scores_against_its_target():
    """``target``: the loss compares the reconstruction with the clean features when the
    input is a corrupted copy (a denoising autoencoder); a target of another shape is refused."""
    rec = fk.ModalityReconstructor(12, latent_dim=4)
    x, mask = torch.randn(2, 5, 12), lengths_mask([5, 3], 5)
    noisy = x + torch.randn_like(x)
    out = rec(noisy, mask=mask, target=x)
    expected = fk.losses.masked_mse(out.reconstruction, x, mask=mask, reduction="sum")
    torch.testing.assert_close(out.loss, expected)
    assert not torch.allclose(out.loss, rec(noisy, mask=mask).loss)
    with pytest.raises(TypeCheckError, match="parameter 'target'"):
        rec(noisy, mask=mask, target=x[:, :4])


def test_context_encoder_rejects_bad_speakers_and_long_dialogues():
    enc = fk.DialogueContextEncoder(D, depth=1, heads=2, num_speakers=2, max_len=4)
    mask = lengths_mask([3], 3)
    with pytest.raises(ValueError, match=r"speakers: ids must lie in \[0, 2\)"):
        enc(torch.randn(1, 3, D), mask=mask, speakers=torch.tensor([[0, 1, 5]]))
    with pytest.raises(ValueError, match="exceeds max_len=4"):
        enc(
            torch.randn(1, 5, D),
            mask=lengths_mask([5], 5),
            speakers=torch.zeros(1, 5, dtype=torch.long),
        )
    with pytest.raises(TypeCheckError, match="parameter 'speakers'"):
        enc(torch.randn(1, 3, D), mask=mask, speakers=torch.zeros(1, 3))


def test_context_encoder_uses_the_whole_dialogue_and_the_speaker():
    enc = fk.DialogueContextEncoder(
        D, depth=1, heads=2, num_speakers=2, max_len=8, dropout=0.0
    ).eval()
    x, mask, spk = torch.randn(1, 4, D), lengths_mask([4], 4), torch.tensor([[0, 1, 0, 1]])
    out = enc(x, mask=mask, speakers=spk)
    later = x.clone()
    later[0, 3] += 3 * torch.randn(D)
    # Utterance 0 sees utterance 3, and its speaker embedding matters.
    assert (enc(later, mask=mask, speakers=spk)[0, 0] - out[0, 0]).abs().max() > 1e-3
    assert (enc(x, mask=mask, speakers=1 - spk)[0, 0] - out[0, 0]).abs().max() > 1e-3


def test_fusion_ignores_mapping_order_and_checks_modalities():
    f = fk.ConcatFusion({"b": 3, "a": 2}, 4)
    mask = lengths_mask([2], 2)
    a, b = torch.randn(1, 2, 2), torch.randn(1, 2, 3)
    torch.testing.assert_close(f({"a": a, "b": b}, mask=mask), f({"b": b, "a": a}, mask=mask))
    torch.testing.assert_close(f({"a": a, "b": b}, mask=mask), f.proj(torch.cat([a, b], -1)))
    with pytest.raises(ValueError, match=r"inputs\['b'\]: expected last dimension 3"):
        f({"a": a, "b": torch.randn(1, 2, 4)}, mask=mask)


def test_tensor_fusion_is_the_outer_product_with_ones():
    f = fk.TensorFusion({"a": 2, "b": 3}, 5, factor_dim=2)
    a, b = torch.randn(1, 1, 2), torch.randn(1, 1, 3)
    za = torch.cat([f.proj[0](a), torch.ones(1, 1, 1)], -1)[0, 0]
    zb = torch.cat([f.proj[1](b), torch.ones(1, 1, 1)], -1)[0, 0]
    expected = f.out(torch.outer(za, zb).reshape(-1))
    torch.testing.assert_close(f({"a": a, "b": b}, mask=lengths_mask([1], 1))[0, 0], expected)


def test_low_rank_fusion_equals_its_formula():
    f = fk.LowRankFusion({"a": 2, "b": 3}, 4, rank=2)
    a, b = torch.randn(1, 1, 2), torch.randn(1, 1, 3)
    one = torch.ones(1)
    ha = torch.einsum("i,rio->ro", torch.cat([a[0, 0], one]), f.factors[0])
    hb = torch.einsum("i,rio->ro", torch.cat([b[0, 0], one]), f.factors[1])
    expected = (f.rank_weights[:, None] * ha * hb).sum(0) + f.bias
    torch.testing.assert_close(f({"a": a, "b": b}, mask=lengths_mask([1], 1))[0, 0], expected)


def test_gated_fusion_of_one_modality_is_its_projection():
    f = fk.GatedFusion({"a": 3}, 4)
    a = torch.randn(2, 2, 3)
    torch.testing.assert_close(f({"a": a}, mask=lengths_mask([2, 2], 2)), torch.tanh(f.proj[0](a)))


def test_aligned_cma_sees_the_same_utterance_directly():
    """With attention switched off (values zeroed), an aligned layer still passes each
    utterance's own auxiliary features; the plain layer passes nothing of them."""
    mask = lengths_mask([4], 4)
    f = {"text": torch.randn(1, 4, D), "audio": torch.randn(1, 4, D, requires_grad=True)}
    for aligned, expect_diagonal_only in ((True, True), (False, False)):
        cma = fk.CMATransformer(
            D, central="text", auxiliary=["audio"], depth=1, heads=2, aligned=aligned
        ).eval()
        for layer in cma.streams["text<-audio"]:
            torch.nn.init.zeros_(layer.attn.to_out.weight)
            torch.nn.init.zeros_(layer.attn.to_out.bias)
        out = cma(f, mask=mask)["text<-audio"]
        # (a LayerNorm output sums to a constant: weigh it before differentiating)
        (grad,) = torch.autograd.grad((out[0, 1] * torch.randn(D)).sum(), f["audio"])
        reaches = grad[0].abs().sum(-1) > 0
        assert reaches.tolist() == (
            [False, True, False, False] if expect_diagonal_only else [False] * 4
        )


def test_aligned_needs_cross_and_equal_lengths():
    with pytest.raises(ValueError, match="aligned=True needs cross=True"):
        fk.TransformerLayer(D, heads=2, aligned=True)
    layer = fk.TransformerLayer(D, heads=2, cross=True, aligned=True)
    with pytest.raises(ValueError, match="aligned=True needs as many positions"):
        layer(
            torch.randn(1, 3, D),
            mask=lengths_mask([3], 3),
            context=torch.randn(1, 5, D),
            key_mask=lengths_mask([5], 5),
        )
