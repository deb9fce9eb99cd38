"""CUDA tests: every test marked ``cuda`` skips, with the reason, where there is no CUDA device.

``bench/gpu.sh`` runs them on a GPU (``python -m pytest tests/cuda -m cuda``). To check the
tests' own logic on a machine without a GPU, set ``FUSIONKIT_CUDA_TESTS_DEVICE=cpu``: they
then run on CPU tensors (the Triton kernel under Triton's interpreter, which
``tests/conftest.py`` turns on). That proves the tests, not CUDA.
"""

from __future__ import annotations

import os

import pytest
import torch

ON = os.environ.get("FUSIONKIT_CUDA_TESTS_DEVICE", "cuda")
"""The device the ``cuda`` tests run on: ``cuda`` (the point of them), or ``cpu`` to check them."""

SKIP_REASON = (
    "no CUDA device (torch.cuda.is_available() is False"
    + (f", torch {torch.__version__} is a CPU build" if torch.version.cuda is None else "")
    + "): run on a GPU machine, e.g. bench/gpu.sh"
)


def pytest_collection_modifyitems(config, items):
    """Skip, with the reason, every test marked ``cuda`` (in any folder) when there is no GPU;
    with ``FUSIONKIT_CUDA_TESTS_DEVICE=cpu`` only those that name the device "cuda" themselves."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is None:
            continue
        callspec = getattr(item, "callspec", None)
        if ON == "cuda" or (callspec is not None and callspec.params.get("device") == "cuda"):
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    """The device of the ``cuda`` tests (see the module docstring)."""
    return torch.device(ON)


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 means fp32 in these tests: cuDNN's convolutions default to TF32 on Ampere and
    later (10-bit mantissas), which would blur comparisons made at 1e-4."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
