"""Shape aliases and run-time shape checking.

Every public block annotates its tensors with jaxtyping (`Float[Tensor, "batch time dim"]`)
and is wrapped in :func:`typechecked`, which checks them with beartype at each call.

The switch: set the environment variable ``FUSIONKIT_TYPECHECK=0`` before importing
fusionkit to turn checking off (the decorator then returns the function itself, so the off
switch costs nothing). Checking is also skipped while ``torch.compile`` traces, where it
would break ``fullgraph=True`` (see ``shared/design/attention.md``).

Letters used in shapes: b batch, t utterances (time), h heads, d features.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from jaxtyping import Bool, Float, Int, jaxtyped
from torch import Tensor

__all__ = [
    "CHECKING",
    "Bool",
    "Float",
    "Int",
    "Tensor",
    "check_features",
    "check_last_dim",
    "typechecked",
]

CHECKING: bool = os.environ.get("FUSIONKIT_TYPECHECK", "1").lower() not in ("0", "false", "no")
"""Whether run-time shape checking is on; read once from ``FUSIONKIT_TYPECHECK`` at import."""

F = TypeVar("F", bound=Callable)


def typechecked(fn: F) -> F:
    """Check the jaxtyping annotations of ``fn`` with beartype at each call (if enabled)."""
    if not CHECKING:
        return fn
    from beartype import beartype

    checked = jaxtyped(typechecker=beartype)(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return checked(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_last_dim(name: str, x: Tensor, expected: int) -> None:
    """Fail with a message naming ``name`` unless ``x.shape[-1] == expected``."""
    if x.shape[-1] != expected:
        raise ValueError(f"{name}: expected last dimension {expected}, got shape {tuple(x.shape)}")


def check_features(
    name: str,
    features: Mapping[str, Tensor],
    mask: Tensor,
    *,
    expected: Mapping[str, int] | None = None,
) -> None:
    """Check a modality mapping: each value (b, t, d_m) floating, aligned with ``mask`` (b, t).

    With ``expected`` (modality -> width), the keys must be exactly those modalities and the
    widths must match: a missing or unexpected modality is an error, never ignored.
    """
    if not isinstance(features, Mapping):
        raise TypeError(
            f"{name}: expected a mapping of modality name to tensor, got {type(features)}"
        )
    if expected is not None and set(features) != set(expected):
        missing = sorted(set(expected) - set(features))
        extra = sorted(set(features) - set(expected))
        raise ValueError(
            f"{name}: expected modalities {sorted(expected)}; missing {missing}, unexpected {extra}"
        )
    if not CHECKING or torch.compiler.is_compiling():
        return
    for key, x in features.items():
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(
                f"{name}[{key!r}]: expected a floating tensor of shape (batch, time, dim), "
                f"got {got}" + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else "")
            )
        if x.shape[:2] != mask.shape:
            raise ValueError(
                f"{name}[{key!r}]: shape {tuple(x.shape)} does not match mask (batch, time) = "
                f"{tuple(mask.shape)}"
            )
        if expected is not None:
            check_last_dim(f"{name}[{key!r}]", x, expected[key])
