import math

import pytest
import torch
import torch.nn.functional as F

from fusionkit.losses import (
    DistillationLevel,
    HierarchicalDistillation,
    distillation_kl,
    feature_consistency,
    gaussian_kl,
    masked_mse,
)
from tests.helpers import lengths_mask


def test_distillation_kl_matches_formula_and_detaches_teacher():
    s = torch.randn(2, 4, 5, requires_grad=True)
    t = torch.randn(2, 4, 5, requires_grad=True)
    mask = lengths_mask([4, 2], 4)
    tau = 3.0
    loss = distillation_kl(s, t, mask=mask, temperature=tau)
    ref = F.kl_div(
        F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(loss, tau**2 * ref[mask].mean())
    loss.backward()
    assert t.grad is None and s.grad.abs().sum() > 0


def test_distillation_kl_is_zero_for_identical_logits_and_ignores_padding():
    x = torch.randn(1, 3, 4)
    mask = lengths_mask([2], 3)
    assert distillation_kl(x, x, mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    y = x.clone()
    y[0, 2] = 100.0  # a padded position
    assert distillation_kl(x, y, mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_consistency_kinds():
    a = torch.randn(1, 3, 8)
    mask = lengths_mask([3], 3)
    assert feature_consistency(a, 2 * a, mask=mask, kind="cosine").item() == pytest.approx(
        0.0, abs=1e-5
    )
    assert feature_consistency(a, -a, mask=mask, kind="cosine").item() == pytest.approx(
        2.0, abs=1e-5
    )
    torch.testing.assert_close(feature_consistency(a, a + 1, mask=mask), torch.tensor(1.0))


def test_masked_mse_and_gaussian_kl():
    x, y = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    y[0, 2] = 1000.0
    mask = lengths_mask([2], 3)
    assert masked_mse(x, y, mask=mask).item() == pytest.approx(1.0)
    assert masked_mse(x, y, mask=mask, reduction="sum").item() == pytest.approx(2.0)
    mu, logvar = torch.ones(1, 3, 2), torch.zeros(1, 3, 2)
    assert gaussian_kl(mu, logvar, mask=mask).item() == pytest.approx(
        1.0
    )  # 0.5 * (1 + 1 - 1 - 0) * 2
    assert gaussian_kl(
        torch.zeros(1, 1, 2), math.log(2) * torch.ones(1, 1, 2), mask=lengths_mask([1], 1)
    ).item() == pytest.approx((2 - 1 - math.log(2)), rel=1e-5)


def test_empty_mask_gives_zero_loss():
    mask = torch.zeros(2, 3, dtype=torch.bool)
    x = torch.randn(2, 3, 4)
    for value in (
        masked_mse(x, x + 1, mask=mask),
        gaussian_kl(x, x, mask=mask),
        distillation_kl(x, -x, mask=mask),
    ):
        assert value.item() == 0.0


def test_hierarchical_distillation_terms():
    mask = lengths_mask([3, 1], 3)
    coarse = torch.randn(2, 3, 4)
    fine = {"text": torch.randn(2, 3, 4), "audio": torch.randn(2, 3, 4)}
    uni = {"x": torch.randn(2, 3, 4)}
    hd = HierarchicalDistillation(temperature=2.0)
    out = hd(
        [DistillationLevel({"c": coarse}), DistillationLevel(fine), DistillationLevel(uni)],
        mask=mask,
    )
    assert set(out.terms) == {"level1/kd", "level2/kd"}
    level1 = sum(distillation_kl(f, coarse, mask=mask, temperature=2.0) for f in fine.values())
    torch.testing.assert_close(out.terms["level1/kd"], level1)
    teacher = (fine["text"] + fine["audio"]) / 2  # the level above, averaged
    torch.testing.assert_close(
        out.terms["level2/kd"], distillation_kl(uni["x"], teacher, mask=mask, temperature=2.0)
    )
    torch.testing.assert_close(out.total, level1 + out.terms["level2/kd"])


def test_hierarchical_distillation_feature_terms_and_errors():
    mask = lengths_mask([3], 3)
    hd = HierarchicalDistillation([8, 4], feature_weight=0.5)
    levels = [
        DistillationLevel({"c": torch.randn(1, 3, 2)}, {"c": torch.randn(1, 3, 8)}),
        DistillationLevel({"f": torch.randn(1, 3, 2)}, {"f": torch.randn(1, 3, 4)}),
    ]
    out = hd(levels, mask=mask)
    assert set(out.terms) == {"level1/kd", "level1/feature"}
    torch.testing.assert_close(
        out.total, out.terms["level1/kd"] + 0.5 * out.terms["level1/feature"]
    )
    with pytest.raises(ValueError, match="features are needed"):
        hd([DistillationLevel({"c": torch.randn(1, 3, 2)}), levels[1]], mask=mask)
    with pytest.raises(ValueError, match="at least 2 levels"):
        hd(levels[:1], mask=mask)
    with pytest.raises(ValueError, match="dims"):
        HierarchicalDistillation(feature_weight=1.0)


def test_distillation_member_masks():
    """A member is distilled only where it is defined, and the teacher mean is over the
    teacher members defined at each utterance (issue 11)."""
    mask = lengths_mask([4, 3], 4)
    audio = mask & torch.tensor([[True, False, True, True], [False, False, True, True]])
    coarse = torch.randn(2, 4, 5)
    fine = {"text": torch.randn(2, 4, 5), "audio": torch.randn(2, 4, 5)}
    uni = {"text": torch.randn(2, 4, 5), "audio": torch.randn(2, 4, 5)}
    hd = HierarchicalDistillation(temperature=2.0)
    levels = [
        DistillationLevel({"c": coarse}),
        DistillationLevel(fine, masks={"audio": audio}),
        DistillationLevel(uni, masks={"audio": audio}),
    ]
    out = hd(levels, mask=mask)
    kd = lambda s, t, m: distillation_kl(s, t, mask=m, temperature=2.0)  # noqa: E731
    torch.testing.assert_close(
        out.terms["level1/kd"],
        kd(fine["text"], coarse, mask) + kd(fine["audio"], coarse, audio),
    )
    both = (fine["text"] + fine["audio"]) / 2
    teacher = torch.where(audio[..., None], both, fine["text"])  # text alone where no audio
    torch.testing.assert_close(
        out.terms["level2/kd"],
        kd(uni["text"], teacher, mask) + kd(uni["audio"], teacher, audio),
    )
    everywhere = [
        DistillationLevel(lv.logits, masks=dict.fromkeys(lv.logits, mask)) for lv in levels
    ]
    unmasked = hd([DistillationLevel(lv.logits) for lv in levels], mask=mask)
    assert torch.equal(hd(everywhere, mask=mask).total, unmasked.total)


def test_distillation_skips_utterances_without_a_teacher():
    mask = lengths_mask([3], 3)
    audio = torch.tensor([[True, False, True]])
    teacher, student = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    student_features, teacher_features = torch.randn(1, 3, 6), torch.randn(1, 3, 6)
    hd = HierarchicalDistillation([6, 6], feature_weight=1.0)
    out = hd(
        [
            DistillationLevel({"audio": teacher}, {"audio": teacher_features}, {"audio": audio}),
            DistillationLevel({"x": student}, {"x": student_features}),
        ],
        mask=mask,
    )
    torch.testing.assert_close(
        out.terms["level1/kd"], distillation_kl(student, teacher, mask=audio)
    )
    expected = feature_consistency(
        hd.projections[0](student_features), teacher_features, mask=audio
    )
    torch.testing.assert_close(out.terms["level1/feature"], expected)


def test_distillation_masks_name_members():
    mask = lengths_mask([3], 3)
    levels = [
        DistillationLevel({"c": torch.randn(1, 3, 2)}),
        DistillationLevel({"f": torch.randn(1, 3, 2)}, masks={"g": mask}),
    ]
    with pytest.raises(ValueError, match=r"masks: \['g'\] name nothing of \['f'\]"):
        HierarchicalDistillation()(levels, mask=mask)
