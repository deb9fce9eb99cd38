"""Properties every block must have (issue 2), checked on every block in ``cases.CASES``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.blocks.cases import CASES, make_inputs

ids = [c.name for c in CASES]
cases = pytest.mark.parametrize("case", CASES, ids=ids)


def _outputs(case, module, feats, mask, speakers):
    outs, loss = case.run(module, feats, mask, speakers)
    return outs, loss


@cases
@settings(max_examples=8, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    extra=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_padding_invariance(case, lengths, extra, seed):
    """Appending padded utterances with arbitrary values leaves real outputs and losses unchanged."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = case.build().eval()
    t = max(lengths)
    feats, mask, speakers = make_inputs(case, lengths, t, generator=g)
    with torch.no_grad():
        outs, loss = _outputs(case, module, feats, mask, speakers)
        b = len(lengths)
        # New padded utterances hold large random values, and the values at positions that
        # were already padded change too: neither may matter.
        junk = {
            k: torch.cat(
                [
                    torch.where(mask[..., None], v, 50.0),
                    100 * torch.randn(b, extra, v.shape[2], generator=g),
                ],
                1,
            )
            for k, v in feats.items()
        }
        pad_mask = torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], 1)
        pad_speakers = torch.cat([speakers, torch.randint(0, 3, (b, extra), generator=g)], 1)
        outs2, loss2 = _outputs(case, module, junk, pad_mask, pad_speakers)
    for a, b in zip(outs, outs2, strict=True):
        torch.testing.assert_close(b[:, :t][mask], a[mask], atol=1e-5, rtol=1e-4)
        assert torch.all(b[~pad_mask] == 0), "padded positions of an output must be zero"
    torch.testing.assert_close(loss2, loss, atol=1e-4, rtol=1e-4)


@cases
def test_batch_independence(case):
    """A dialogue's outputs do not depend on the other dialogues of its batch."""
    module = case.build().eval()
    feats, mask, speakers = make_inputs(case, [5, 9, 2], 9)
    with torch.no_grad():
        together, _ = _outputs(case, module, feats, mask, speakers)
        for i, n in enumerate([5, 9, 2]):
            alone, _ = _outputs(
                case,
                module,
                {k: v[i : i + 1, :n] for k, v in feats.items()},
                mask[i : i + 1, :n],
                speakers[i : i + 1, :n],
            )
            for a, b in zip(alone, together, strict=True):
                torch.testing.assert_close(a[0], b[i, :n], atol=1e-5, rtol=1e-4)


@cases
def test_fully_masked_dialogue_is_finite_forward_and_backward(case):
    """A dialogue with no real utterance gives zeros, and finite gradients, never NaN."""
    module = case.build().train()
    feats, mask, speakers = make_inputs(case, [0, 4], 6)
    feats = {k: v.requires_grad_() for k, v in feats.items()}
    outs, loss = _outputs(case, module, feats, mask, speakers)
    for o in outs:
        assert torch.isfinite(o).all()
        assert torch.all(o[0] == 0)
    loss.backward()
    for v in feats.values():
        assert torch.isfinite(v.grad).all()
    for name, p in module.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@cases
def test_gradients_reach_every_parameter(case):
    module = case.build().train()
    feats, mask, speakers = make_inputs(case, [6, 3], 6)
    _, loss = _outputs(case, module, feats, mask, speakers)
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 1e-6, f"no gradient reaches {name}"


@cases
def test_eval_is_deterministic(case):
    module = case.build().eval()
    feats, mask, speakers = make_inputs(case, [6, 3], 6)
    with torch.no_grad():
        a, la = _outputs(case, module, feats, mask, speakers)
        b, lb = _outputs(case, module, feats, mask, speakers)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(la, lb)


@cases
def test_bfloat16_matches_float32(case):
    """The block runs in bfloat16 on the CPU, in bfloat16, close to its float32 result."""
    module = case.build().eval()
    feats, mask, speakers = make_inputs(case, [6, 3], 6)
    with torch.no_grad():
        ref, _ = _outputs(case, module, feats, mask, speakers)
        module = module.to(torch.bfloat16)
        low, loss = _outputs(
            case, module, {k: v.bfloat16() for k, v in feats.items()}, mask, speakers
        )
    assert torch.isfinite(loss)
    for r, x in zip(ref, low, strict=True):
        assert x.dtype == torch.bfloat16
        err = (x.float() - r).norm() / r.norm().clamp_min(1e-6)
        assert err < 0.1, f"bfloat16 relative error {err:.3f}"
