"""The comparison baseline computes CMATH's function: fusionkit's weights copied into
``bench/baseline_cmath.py`` give the same logits, loss and input gradients."""

import torch

from bench import common
from bench.baseline_cmath import BaselineCMATH
from fusionkit import DialogueBatch
from fusionkit.models.cmath import loss_counts, objective


def test_baseline_matches_fusionkit_on_shared_weights():
    dialogues = common.iemocap_dialogues(4, 12, quick=True, seed=3)
    spec = common.spec_for(common.QUICK_DIMS, 12)
    weights = common.class_weights_of(dialogues)
    config = common.cmath_config(16, quick=True, cma_depth=2, context_depth=2)
    model = common.build_cmath(config, spec, weights).eval()
    base = BaselineCMATH(config, spec, weights).eval().load_fusionkit(model)
    batch = DialogueBatch.collate(dialogues)
    assert not bool(batch.mask.all())  # padding is exercised
    features = {m: x.clone().requires_grad_() for m, x in batch.features.items()}
    batch = DialogueBatch(
        features=features, mask=batch.mask, speakers=batch.speakers, labels=batch.labels
    )
    normalizer = loss_counts(batch, model.class_weights)
    ours = model(batch)
    ours_loss = objective(model, ours, batch, normalizer).total
    theirs = base(batch.features, batch.mask, batch.speakers)
    loss = base.loss(theirs, batch.mask, batch.labels, normalizer)
    real = batch.mask
    torch.testing.assert_close(theirs["logits"][real], ours.logits[real], rtol=1e-5, atol=1e-5)
    for k in ours.fine_logits:
        torch.testing.assert_close(
            theirs["fine_logits"][k][real], ours.fine_logits[k][real], rtol=1e-5, atol=1e-5
        )
    torch.testing.assert_close(loss, ours_loss, rtol=1e-5, atol=1e-5)
    g_ours = torch.autograd.grad(ours_loss, list(features.values()))
    g_theirs = torch.autograd.grad(loss, list(features.values()))
    for a, b in zip(g_theirs, g_ours):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_baseline_refuses_other_variants():
    import pytest

    spec = common.spec_for(common.QUICK_DIMS, 12)
    with pytest.raises(ValueError, match="default CMATH"):
        BaselineCMATH(common.cmath_config(16, quick=True, symmetric=True), spec)
