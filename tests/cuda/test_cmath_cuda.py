"""CMATH on a CUDA device: a training step with each attention backend (fp32 and bf16
autocast), streaming against the whole dialogue, and a checkpoint trained on CUDA that
predicts on the CPU.

Every test here that needs the CMATH model is in this file, with its imports at the top.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fusionkit import DialogueBatch, StreamCache
from fusionkit.attention import triton_available
from fusionkit.data import SyntheticConversations
from fusionkit.models.cmath import checkpoint
from fusionkit.models.cmath.config import RunConfig
from fusionkit.models.cmath.model import CMATH, CMATHConfig, DataSpec, loss_counts, objective
from fusionkit.models.cmath.predictor import Predictor
from tests.cuda.support import skip_without_bf16
from tests.helpers import needs_triton, rel_error, streamed_logits

pytestmark = pytest.mark.cuda

# heads 2 of width 32: a head dim the Triton kernel takes (16..128)
DIMS = {"text": 48, "audio": 40, "visual": 24}
CONFIG = CMATHConfig(
    hidden_dim=64, heads=2, compressed_dim=16, dropout=0.0, input_dropout=0.0, cma_depth=2
)
BACKENDS = [pytest.param("triton", marks=needs_triton), "sdpa", "math"]


@pytest.fixture(scope="module")
def data():
    return SyntheticConversations(num_dialogues=10, min_len=5, max_len=40, dims=DIMS, seed=0).load()


def _model(data, device, **changes) -> CMATH:
    torch.manual_seed(0)  # built on the CPU: the same weights for every backend
    return CMATH(replace(CONFIG, **changes), DataSpec.of(data), data.class_weights()).to(device)


def _loss(model, batch, amp):
    torch.manual_seed(1)  # the variational fusion's draws: the same for every backend
    normalizer = loss_counts(batch, model.class_weights)
    with torch.autocast(batch.mask.device.type, torch.bfloat16, enabled=amp):
        return objective(model, model(batch), batch, normalizer).total.float()


def _step(model, batch, amp):
    """One training step (forward, objective, backward, Adam): the loss, every parameter's
    gradient flattened, and the loss after the step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = _loss(model, batch, amp)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    optimizer.step()
    with torch.no_grad():
        after = _loss(model, batch, amp)
    return loss.item(), grads, after.item()


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_training_step_gives_the_same_loss_with_each_backend(data, amp, device):
    """The same model and batch, one step with each backend: the same loss, gradients and
    loss after the Adam step, to tolerance (fp32: 1e-4; bf16 autocast: 2e-2)."""
    if amp:
        skip_without_bf16(device)
    batch = DialogueBatch.collate(data.split("train")[:6]).to(device)
    results = {}
    for backend in ("sdpa", "triton", "math"):
        if backend == "triton" and not triton_available():
            continue
        model = _model(data, device, backend=backend).train()
        results[backend] = _step(model, batch, amp)
    tol = 2e-2 if amp else 1e-4
    ref_loss, ref_grads, ref_after = results["math"]
    assert np.isfinite(ref_loss) and ref_after < ref_loss  # the step learns
    for backend, (loss, grads, after) in results.items():
        assert torch.isfinite(grads).all(), backend
        assert abs(loss - ref_loss) <= tol * abs(ref_loss), (backend, loss, ref_loss)
        assert abs(after - ref_after) <= tol * abs(ref_after), (backend, after, ref_after)
        assert rel_error(grads, ref_grads) < (5e-2 if amp else 1e-3), backend


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_streaming_equals_the_whole_dialogue_on_cuda(data, backend, device):
    """A causal model fed one utterance at a time (keys and values cached on the GPU) gives
    the logits it gives on the whole dialogue."""
    model = _model(data, device, causal=True, backend=backend).eval()
    d = max(data.split("test"), key=len)
    whole = DialogueBatch.collate([d]).to(device)
    cache = StreamCache()
    with torch.no_grad():
        full = model(whole).logits[0]
    steps = streamed_logits(model, whole, cache)
    assert full.device.type == device.type and cache.position == len(d)
    torch.testing.assert_close(steps, full, atol=1e-4, rtol=1e-4)


def test_checkpoint_trained_on_cuda_predicts_on_the_cpu(data, tmp_path, device):
    """A model trained on the GPU as the training loop trains it (bf16 autocast where the
    GPU has it, fused Adam) is saved; the checkpoint loads on the CPU and predicts, from raw
    features, what the trained model predicts on the GPU."""
    model = _model(data, device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)
    amp = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else None
    batch = DialogueBatch.collate(data.split("train")).to(device)
    normalizer = loss_counts(batch, model.class_weights)
    for _ in range(5):
        with torch.autocast(device.type, amp or torch.float32, enabled=amp is not None):
            loss = objective(model, model(batch), batch, normalizer).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    path = tmp_path / "best.pt"
    checkpoint.save(checkpoint.payload(model, RunConfig(model=model.config), None, data), path)

    assert all(t.device.type == "cpu" for t in checkpoint.load(path)["model"].values())
    predictor = Predictor.from_checkpoint(path)  # on the CPU, whatever device wrote it
    assert all(p.device.type == "cpu" for p in predictor.model.parameters())
    dialogues = data.split("test")
    on_cpu = predictor.predict(dialogues)
    model.eval()
    with torch.no_grad():
        test = DialogueBatch.collate(dialogues).to(device)
        on_gpu = model(test).logits.float().softmax(-1).cpu().numpy()
    for i, (d, pred) in enumerate(zip(dialogues, on_cpu)):
        assert pred.dialogue == d.id and len(pred.labels) == len(d)
        np.testing.assert_allclose(pred.probabilities, on_gpu[i, : len(d)], rtol=1e-4, atol=1e-5)
