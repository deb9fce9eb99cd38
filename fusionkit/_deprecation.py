"""Old call forms kept working for one release, each with a ``FutureWarning``.

fusionkit 0.2 made masks keyword-only and gave the key mask one name (``key_mask``)
everywhere; code written against 0.1 still runs, and is told what to change.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


_INTERNAL = (str(Path(__file__).parent), str(Path(torch.__file__).parent))


def warn(message: str) -> None:
    """Emit a fusionkit deprecation (a ``FutureWarning``, shown to users by default),
    attributed to the first caller outside fusionkit and torch."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{message} (deprecated in fusionkit 0.2)", FutureWarning, stacklevel=level)


def keyword_only(*names: str, renamed: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Accept the keyword-only parameters ``names`` positionally (in this order, after the
    positional ones) and the old keyword names in ``renamed`` (old -> new), with a warning."""
    renamed = dict(renamed or {})

    def decorate(fn: F) -> F:
        positional = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        n = len(positional)
        where = fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if len(args) > n:
                extra = args[n:]
                if len(extra) > len(names):
                    raise TypeError(f"{where}: takes {n} positional arguments, got {len(args)}")
                given = names[: len(extra)]
                warn(f"{where}: pass {', '.join(given)} by keyword ({given[0]}=...)")
                clash = sorted(set(given) & set(kwargs))
                if clash:
                    raise TypeError(f"{where}: {clash} given both by position and by keyword")
                kwargs.update(zip(given, extra))
                args = args[:n]
            for old, new in renamed.items():
                if old in kwargs:
                    warn(f"{where}: {old}= is now {new}=")
                    if new in kwargs:
                        raise TypeError(f"{where}: got both {old}= and {new}=")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
