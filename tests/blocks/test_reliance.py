"""Each expert's precision share in the product-of-experts fusion (VariationalOutput.shares)."""

import pytest
import torch

import fusionkit as fk
from fusionkit.blocks.variational import LOGVAR_RANGE
from tests.helpers import lengths_mask

D = 6
NAMES = ("audio", "text", "visual")


def expected_shares(vf, inputs, mask, presence):
    """Float64 hand computation: per utterance, mean over latent dims of p_kd / (1 + sum_j p_jd)
    with p_kd = exp(-logvar_kd), 0 where k is absent; the prior's column last."""
    precisions = []
    for i, m in enumerate(sorted(inputs)):
        logvar = vf.logvar[i](inputs[m]).double().clamp(*LOGVAR_RANGE)
        here = (presence.get(m, mask) & mask).unsqueeze(-1)
        precisions.append(torch.where(here, (-logvar).exp(), torch.zeros((), dtype=torch.float64)))
    total = 1 + sum(precisions)
    columns = [(p / total).mean(-1) for p in precisions] + [(1 / total).mean(-1)]
    return torch.stack(columns, -1) * mask.unsqueeze(-1), total


def setup(presence_of=None):
    vf = fk.VariationalFusion(dict.fromkeys(NAMES, D), 5).eval()
    with torch.no_grad():  # spread the log-variances so that the experts differ clearly
        for head in vf.logvar:
            head.weight.mul_(4.0)
    mask = lengths_mask([5, 3], 5)
    inputs = {m: torch.randn(2, 5, D) for m in NAMES}
    presence = {m: p & mask for m, p in (presence_of or {}).items()}
    return vf, inputs, mask, presence


def test_shares_match_a_float64_hand_computation():
    present = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 0, 1, 1]], dtype=torch.bool)
    vf, inputs, mask, presence = setup({"text": present, "visual": ~present})
    out = vf(inputs, mask=mask, presence=presence)
    expected, total = expected_shares(vf, inputs, mask, presence)
    assert out.share_names == (*NAMES, "prior")
    assert out.shares.shape == (2, 5, len(NAMES) + 1) and out.shares.dtype == torch.float32
    torch.testing.assert_close(out.shares.double(), expected, rtol=1e-5, atol=1e-6)
    # the returned fused logvar is -log(total precision): the prior's share is mean_d exp(logvar)
    torch.testing.assert_close(
        out.logvar.double(), -total.log() * mask[..., None], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        out.shares[..., -1].double(),
        out.logvar.double().exp().mean(-1) * mask,
        rtol=1e-5,
        atol=1e-6,
    )
    assert expected[..., :-1].std() > 0.05  # the test has experts that differ


def test_shares_sum_to_one_with_the_prior_and_follow_the_more_certain_expert():
    vf, inputs, mask, _ = setup()
    out = vf(inputs, mask=mask)
    torch.testing.assert_close(out.shares.sum(-1), mask.float())
    assert (out.shares[mask] > 0).all()
    with torch.no_grad():  # make audio far more certain than the others
        vf.logvar[0].weight.zero_(), vf.logvar[0].bias.fill_(-8.0)
        for head in vf.logvar[1:]:
            head.weight.zero_(), head.bias.fill_(2.0)
    out = vf(inputs, mask=mask)
    audio, others = out.shares[..., 0][mask], out.shares[..., 1:][mask]
    assert (audio > 0.99).all() and (others < 0.01).all()
    torch.testing.assert_close(out.shares.sum(-1), mask.float())


def test_absent_expert_has_share_zero_and_none_present_is_all_prior():
    audio = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    text = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    visual = torch.tensor([[0, 0, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    vf, inputs, mask, presence = setup({"audio": audio, "text": text, "visual": visual})
    out = vf(inputs, mask=mask, presence=presence)
    for i, m in enumerate(NAMES):
        absent = mask & ~presence[m]
        assert absent.any() and (out.shares[..., i][absent] == 0).all()
        assert (out.shares[..., i][presence[m]] > 0).all()
    nothing = mask & ~(audio | text | visual)  # (0, 0) and (1, 2): the posterior is the prior
    assert nothing.sum() == 2
    torch.testing.assert_close(out.shares[nothing], torch.tensor([[0.0, 0, 0, 1]] * 2))
    torch.testing.assert_close(out.shares.sum(-1), mask.float())


def test_padded_positions_have_zero_shares():
    vf, inputs, mask, _ = setup()
    inputs = {m: x.masked_fill(~mask[..., None], 1e4) for m, x in inputs.items()}  # junk padding
    out = vf(inputs, mask=mask)
    assert (out.shares[~mask] == 0).all()
    assert torch.isfinite(out.shares).all()


def test_shares_are_the_same_one_utterance_at_a_time():
    vf, inputs, mask, _ = setup()
    full = vf(inputs, mask=mask).shares
    for t in range(5):
        step = vf({m: x[:, t : t + 1] for m, x in inputs.items()}, mask=mask[:, t : t + 1])
        torch.testing.assert_close(step.shares, full[:, t : t + 1])


def test_concat_mode_has_no_shares():
    vf = fk.VariationalFusion(dict.fromkeys(NAMES, D), 5, mode="concat").eval()
    out = vf({m: torch.randn(1, 2, D) for m in NAMES}, mask=lengths_mask([2], 2))
    assert out.shares is None and out.share_names is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_shares_are_float32_for_low_precision_inputs(dtype):
    vf, inputs, mask, _ = setup()
    out = vf.to(dtype)({m: x.to(dtype) for m, x in inputs.items()}, mask=mask)
    assert out.shares.dtype == torch.float32 and out.mu.dtype == dtype
    torch.testing.assert_close(out.shares.sum(-1), mask.float())


def test_old_call_forms_are_gone():
    with pytest.raises(TypeError):
        fk.VariationalFusion(D, num_inputs=2, latent_dim=4)
    vf = fk.VariationalFusion({"0": D, "1": D}, 4)
    with pytest.raises(TypeError, match=r"[Mm]apping"):  # not turned into one with a warning
        vf([torch.randn(1, 2, D), torch.randn(1, 2, D)], mask=lengths_mask([2], 2))
