"""Test set-up: Triton's interpreter on CPU-only machines, seeding (helpers: tests/helpers.py)."""

import os

import torch

# The interpreter is chosen when @triton.jit runs, i.e. when fusionkit's kernel module is
# first imported: set it before any test imports it (attention.md).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
