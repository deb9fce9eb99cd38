"""Small feature pickles in each published layout, written the way the field's files are."""

from __future__ import annotations

import pickle

import numpy as np

from fusionkit.data.pickles import LAYOUTS

WIDTHS = {  # layout -> (text, audio, visual)
    "A": (100, 1582, 342),
    "A'": (100, 100, 512),
    "B": (600, 300, 342),
    "C": (1024, 1582, 342),
    "D": (1024, 300, 342),
    "D'": (1024, 300, 342),
    "E": (1024, None, None),
    "F": (1024, None, None),
}
_EMPTY = object()


def make_layout(
    key: str,
    *,
    num_dialogues: int = 5,
    seed: int = 0,
    small: bool = True,
    split_type: type = list,
    unused: object = _EMPTY,
) -> tuple:
    """The tuple a file of layout ``key`` holds (widths divided by 10 when ``small``), split
    ids in a ``split_type`` (list, set or frozenset), the trailing unused field ``unused``
    (an empty dict unless given)."""
    layout = next(lay for lay in LAYOUTS if lay.key == ("A" if key == "A'" else key))
    rng = np.random.default_rng(seed)
    iemocap = layout.dataset == "iemocap"
    n_classes = 6 if iemocap else 7
    text_w, audio_w, visual_w = WIDTHS[key]
    if small:
        text_w = text_w // 10
        audio_w = audio_w // 10 if audio_w else None
        visual_w = visual_w // 10 if visual_w else None
    ids = [f"Ses0{i}F_impro0{i}" if iemocap else i for i in range(num_dialogues)]
    every_field = {f for lay in LAYOUTS for f in lay.fields}
    values: dict[str, dict] = {f: {} for f in every_field}
    for did in ids:
        n = int(rng.integers(2, 9))
        values["ids"][did] = [f"{did}_{j}" for j in range(n)]
        if iemocap:
            values["speakers"][did] = [rng.choice(["M", "F"]) for _ in range(n)]
        else:
            values["speakers"][did] = [list(np.eye(9)[rng.integers(0, 3)]) for _ in range(n)]
        values["labels"][did] = [int(x) for x in rng.integers(0, n_classes, n)]
        values["sentiments"][did] = [int(x) for x in rng.integers(0, 3, n)]
        for f in layout.fields:
            if f.startswith("text"):
                values[f][did] = [rng.normal(size=text_w).astype(np.float32) for _ in range(n)]
        values["audio"][did] = rng.normal(size=(n, audio_w or 1)).astype(np.float32)
        values["visual"][did] = [rng.normal(size=visual_w or 1) for _ in range(n)]
        values["sentences"][did] = [f"utterance {j}" for j in range(n)]
    k = len(ids)
    values["train"] = split_type(ids[: k - 2])
    values["test"] = split_type(ids[k - 1 :])
    values["dev"] = split_type(ids[k - 2 : k - 1])
    values["unused"] = {} if unused is _EMPTY else unused
    return tuple(values[f] for f in layout.fields)


def write_layout(path, key: str, *, protocol: int = 2, **kw) -> tuple:
    """Write :func:`make_layout`'s tuple to ``path``; protocol 2 by default, as the field's
    Python-2 IEMOCAP files (Python 3 then names the builtins module ``__builtin__``)."""
    obj = make_layout(key, **kw)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return obj
