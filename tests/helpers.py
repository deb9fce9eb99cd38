"""What many tests share: masks from lengths, tolerances, skip markers, tiny run settings."""

from __future__ import annotations

import os

import pytest
import torch

from fusionkit.attention import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

needs_triton = pytest.mark.skipif(
    not triton_available(), reason="triton is not installed: pip install -e '.[triton]'"
)
needs_interpreter_or_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no GPU and TRITON_INTERPRET is not set",
)


def lengths_mask(lengths: list[int], t: int) -> torch.Tensor:
    """Bool (len(lengths), t), True at the first ``lengths[i]`` positions of row i."""
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative Frobenius error of ``actual`` against ``expected``, computed in float64."""
    a, e = actual.double(), expected.double()
    return ((a - e).norm() / e.norm().clamp_min(1e-12)).item()


# A tiny synthetic run of `fusionkit train` (a few seconds), shared by the
# end-to-end tests: ``cli.main(["train", *TINY, "--out", ...])``.
TINY = [
    *("--set", "data.num_dialogues=18"),
    *("--set", "data.min_len=3"),
    *("--set", "data.max_len=12"),
    *("--set", "data.dims={text = 16, audio = 12, visual = 8}"),
    *("--set", "model.hidden_dim=16"),
    *("--set", "model.heads=2"),
    *("--set", "model.compressed_dim=8"),
    *("--set", "model.reconstruction_hidden=0"),
    *("--set", "train.batch_size=4"),
    *("--set", "train.lr=3e-3"),
    *("--set", "train.epochs=20"),  # not the recipe's budget: 500 steps are 125 epochs here
    "--quiet",
]


def streamed_logits(model, whole, cache) -> torch.Tensor:
    """Logits (t, classes) of a causal model fed the one dialogue of batch ``whole`` one
    utterance at a time through ``cache``."""
    t = int(whole.mask[0].sum())
    with torch.no_grad():
        return torch.stack(
            [
                model.encode(
                    {m: x[:, i : i + 1] for m, x in whole.features.items()},
                    mask=whole.mask[:, i : i + 1],
                    speakers=whole.speakers[:, i : i + 1],
                    cache=cache,
                ).logits[0, 0]
                for i in range(t)
            ]
        )


def attention_inputs(b, h, tq, tk, dh, dv, *, dtype, device=DEVICE, fully_masked_row=True, seed=0):
    """q, k, v, a key mask (~30% padding, key 0 always real; with ``fully_masked_row`` and
    b > 1 the last dialogue all padding) and an output gradient, drawn on the CPU (the same
    numbers on every device), then moved to ``device`` in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq, dh, generator=g)
    k = torch.randn(b, h, tk, dh, generator=g)
    v = torch.randn(b, h, tk, dv, generator=g)
    key_mask = torch.rand(b, tk, generator=g) < 0.7
    key_mask[:, 0] = True
    if fully_masked_row and b > 1:
        key_mask[-1] = False  # a dialogue whose every key is padding
    grad = torch.randn(b, h, tq, dv, generator=g)
    return [x.to(device, dtype) for x in (q, k, v)], key_mask.to(device), grad.to(device, dtype)
