"""Properties every block must have (issues 2 and 11), checked on every block in
``cases.CASES``: each general property both without presence masks and with absent
modalities, and the contract of absence (conventions.md) with them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.blocks.cases import CASES, make_inputs

cases = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
absences = pytest.mark.parametrize("absences", [False, True], ids=["all-present", "absences"])


def _cat(presence, extra):
    """``presence`` with ``extra`` padded (absent) utterances appended."""
    if presence is None:
        return None
    return {
        k: torch.cat([p, torch.zeros(p.shape[0], extra, dtype=torch.bool)], 1)
        for k, p in presence.items()
    }


@cases
@absences
@settings(max_examples=8, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    extra=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_padding_invariance(case, absences, lengths, extra, seed):
    """Appending padded utterances with arbitrary values leaves real outputs and losses unchanged."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = case.build(absences).eval()
    t = max(lengths)
    feats, mask, speakers, presence = make_inputs(case, lengths, t, absences=absences, generator=g)
    with torch.no_grad():
        outs, loss = case.run(module, feats, mask, speakers, presence)
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
        outs2, loss2 = case.run(module, junk, pad_mask, pad_speakers, _cat(presence, extra))
    for a, b in zip(outs, outs2, strict=True):
        torch.testing.assert_close(b[:, :t][mask], a[mask], atol=1e-5, rtol=1e-4)
        assert torch.all(b[~pad_mask] == 0), "padded positions of an output must be zero"
    torch.testing.assert_close(loss2, loss, atol=1e-4, rtol=1e-4)


@cases
@absences
def test_batch_independence(case, absences):
    """A dialogue's outputs do not depend on the other dialogues of its batch."""
    module = case.build(absences).eval()
    feats, mask, speakers, presence = make_inputs(case, [5, 9, 2], 9, absences=absences)
    with torch.no_grad():
        together, _ = case.run(module, feats, mask, speakers, presence)
        for i, n in enumerate([5, 9, 2]):
            alone, _ = case.run(
                module,
                {k: v[i : i + 1, :n] for k, v in feats.items()},
                mask[i : i + 1, :n],
                speakers[i : i + 1, :n],
                None if presence is None else {k: p[i : i + 1, :n] for k, p in presence.items()},
            )
            for a, b in zip(alone, together, strict=True):
                torch.testing.assert_close(a[0], b[i, :n], atol=1e-5, rtol=1e-4)


@cases
@absences
def test_fully_masked_dialogue_is_finite_forward_and_backward(case, absences):
    """A dialogue with no real utterance gives zeros, and finite gradients, never NaN."""
    module = case.build(absences).train()
    feats, mask, speakers, presence = make_inputs(case, [0, 4], 6, absences=absences)
    feats = {k: v.requires_grad_() for k, v in feats.items()}
    outs, loss = case.run(module, feats, mask, speakers, presence)
    for o in outs:
        assert torch.isfinite(o).all()
        assert torch.all(o[0] == 0)
    loss.backward()
    for v in feats.values():
        assert torch.isfinite(v.grad).all()
    for name, p in module.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@cases
@absences
def test_gradients_reach_every_parameter(case, absences):
    """Every parameter learns; with absences, the learned absence vectors too."""
    module = case.build(absences).train()
    feats, mask, speakers, presence = make_inputs(case, [8, 4, 8], 8, absences=absences)
    _, loss = case.run(module, feats, mask, speakers, presence)
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 1e-6, f"no gradient reaches {name}"


@cases
@absences
def test_eval_is_deterministic(case, absences):
    module = case.build(absences).eval()
    feats, mask, speakers, presence = make_inputs(case, [6, 3], 6, absences=absences)
    with torch.no_grad():
        a, la = case.run(module, feats, mask, speakers, presence)
        b, lb = case.run(module, feats, mask, speakers, presence)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(la, lb)


@cases
@absences
def test_bfloat16_matches_float32(case, absences):
    """The block runs in bfloat16 on the CPU, in bfloat16, close to its float32 result."""
    module = case.build(absences).eval()
    feats, mask, speakers, presence = make_inputs(case, [6, 3], 6, absences=absences)
    with torch.no_grad():
        ref, _ = case.run(module, feats, mask, speakers, presence)
        module = module.to(torch.bfloat16)
        low, loss = case.run(
            module, {k: v.bfloat16() for k, v in feats.items()}, mask, speakers, presence
        )
    assert torch.isfinite(loss)
    for r, x in zip(ref, low, strict=True):
        assert x.dtype == torch.bfloat16
        err = (x.float() - r).norm() / r.norm().clamp_min(1e-6)
        assert err < 0.1, f"bfloat16 relative error {err:.3f}"


# ----------------------------------------------------------------------- absence (issue 11)


def _junk(v, keep, g):
    """``v`` with huge, infinite and NaN values wherever ``keep`` (b, t) is False."""
    choices = torch.tensor([1e30, -1e30, float("inf"), float("-inf"), float("nan")])
    junk = choices[torch.randint(0, len(choices), v.shape, generator=g)]
    return torch.where(keep.unsqueeze(-1), v, junk)


def _forward_backward(case, module, feats, mask, speakers, presence):
    feats = {k: v.clone().requires_grad_() for k, v in feats.items()}
    outs, loss = case.run(module, feats, mask, speakers, presence)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return outs, loss, {k: v.grad for k, v in feats.items()}, grads


@cases
def test_absent_values_never_matter(case):
    """Whatever an input holds where it is absent or padded (1e30, inf, NaN), no output,
    loss or parameter gradient changes, every one stays finite (also for the utterance with
    no modality and the one with the first only), and no gradient reaches those values."""
    g = torch.Generator().manual_seed(0)
    module = case.build(True).eval()
    feats, mask, speakers, presence = make_inputs(case, [6, 5, 4], 6, absences=True, generator=g)
    keep = {k: presence.get(k, mask) for k in feats}
    junk = {k: _junk(v, keep[k], g) for k, v in feats.items()}
    outs, loss, _, grads = _forward_backward(case, module, feats, mask, speakers, presence)
    outs2, loss2, input_grads2, grads2 = _forward_backward(
        case, module, junk, mask, speakers, presence
    )
    for a, b in zip(outs, outs2, strict=True):
        assert torch.isfinite(b).all()
        assert torch.equal(a, b)
    assert torch.isfinite(loss2) and torch.equal(loss, loss2)
    assert grads.keys() == grads2.keys()
    for name, grad in grads2.items():
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, grads[name], atol=1e-6, rtol=1e-5, msg=name)
    for k, grad in input_grads2.items():
        if grad is not None:
            assert torch.all(grad[~keep[k]] == 0), f"a gradient reaches absent values of {k}"


@cases
def test_presence_none_equals_all_present(case):
    """``presence=None`` means every real utterance has every input: exactly the same outputs."""
    module = case.build(True).eval()
    feats, mask, speakers, _ = make_inputs(case, [6, 3], 6)
    with torch.no_grad():
        a, la = case.run(module, feats, mask, speakers, None)
        b, lb = case.run(module, feats, mask, speakers, dict.fromkeys(case.present, mask))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(la, lb)


@cases
@pytest.mark.parametrize("lengths", [[8, 4, 8], [6, 5, 4]], ids=str)
def test_absences_are_exercised(case, lengths):
    """The inputs of the tests above do make some utterances lack each input (and have it)."""
    _, mask, _, presence = make_inputs(case, lengths, max(lengths), absences=True)
    for name, p in presence.items():
        assert (mask & ~p).any() and p.any(), name
