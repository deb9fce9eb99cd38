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
