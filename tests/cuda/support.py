"""What several CUDA test files share."""

from __future__ import annotations

import pytest
import torch


def skip_without_bf16(device: torch.device | str, dtype: torch.dtype = torch.bfloat16) -> None:
    """Skip a bf16 test on a GPU without bf16 (compute capability below 8.0: no bf16 tensor
    cores, and autocast refuses bf16 there)."""
    if (
        dtype == torch.bfloat16
        and torch.device(device).type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        pytest.skip("this GPU has no bf16 (compute capability below 8.0)")
