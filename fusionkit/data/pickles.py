"""Readers for the field's IEMOCAP and MELD feature pickles, every published layout.

The layout is detected from the tuple's length and contents, never from the file name
(cmath.md, "The feature files the field uses"). Files are read with :class:`SafeUnpickler`:
builtin containers, numbers, strings and numpy arrays only; anything else is refused before
it is built, so a pickle whose ``__reduce__`` would run code fails without running it.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.errors import LayoutError, UnsafePickleError

IEMOCAP_LABELS = ["hap", "sad", "neu", "ang", "exc", "fru"]
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
MELD_SENTIMENTS = ["neutral", "positive", "negative"]
IEMOCAP_SPEAKERS = {"M": 0, "F": 1}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes inside protocol-2 pickles (numpy array buffers)
    ("collections", "OrderedDict"),
    ("builtins", "set"),  # split ids are sets in some files ...
    ("builtins", "frozenset"),
    ("__builtin__", "set"),  # ... under Python 2's module name in protocol-2 pickles
    ("__builtin__", "frozenset"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin containers, numbers, strings and numpy arrays."""

    def __init__(self, file, *, source: str = "<stream>", **kwargs):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refused to load {module}.{name}: only builtin containers, numbers, "
            "strings and numpy arrays are allowed in a feature file"
        )


def safe_load(path: str | Path) -> object:
    """Unpickle ``path`` with :class:`SafeUnpickler` (Python-2 pickles read as latin1)."""
    data = Path(path).read_bytes()
    return SafeUnpickler(io.BytesIO(data), source=str(path), encoding="latin1").load()


@dataclass(frozen=True)
class Layout:
    """A published tuple layout: ``fields`` names each position; ``readers`` who uses it."""

    key: str
    dataset: Literal["iemocap", "meld"]
    fields: tuple[str, ...]
    readers: str

    @property
    def text_fields(self) -> list[str]:
        return [f for f in self.fields if f.startswith("text")]


_TEXT4 = ("text0", "text1", "text2", "text3")
_AV = ("audio", "visual", "sentences", "train", "test")
# fmt: off
LAYOUTS = [  # cmath.md, "The feature files the field uses"
    Layout("A", "iemocap", ("ids", "speakers", "labels", "text", *_AV),
           "MMGCN, MM-DFN, M3Net (A) / DialogueRNN, DialogueGCN, COGMEN, CORECT (A')"),
    Layout("B", "meld", ("ids", "speakers", "labels", "text", *_AV, "unused"), "MMGCN, MM-DFN, M3Net"),
    Layout("C", "iemocap", ("ids", "speakers", "labels", *_TEXT4, *_AV), "SDT, GraphSmile"),
    Layout("D", "meld", ("ids", "speakers", "labels", *_TEXT4, *_AV, "unused"), "SDT"),
    Layout("D'", "meld", ("ids", "speakers", "labels", "sentiments", *_TEXT4, *_AV, "unused"), "GraphSmile"),
    Layout("E", "iemocap", ("speakers", "labels", *_TEXT4, "sentences", "train", "test", "dev"), "COSMIC (text only)"),
    Layout("F", "meld", ("speakers", "labels", "sentiments", *_TEXT4, "sentences", "train", "test", "dev"),
           "COSMIC (text only)"),
]
# fmt: on


def _first_value(obj: object) -> object:
    return next(iter(obj.values())) if isinstance(obj, dict) and obj else None


def _is_label_list(value: object) -> bool:
    """A dialogue's labels: a sequence of integer scalars."""
    try:
        arr = np.asarray(value)
    except Exception:
        return False
    return arr.ndim == 1 and arr.dtype.kind in "iuf" and arr.size > 0


def _is_feature_map(value: object) -> bool:
    """A feature field: dialogue id -> (utterances, width) matrix."""
    try:
        return np.asarray(_first_value(value), dtype=np.float32).ndim == 2
    except Exception:
        return False


def _describe(obj: object) -> str:
    if isinstance(obj, tuple | list):
        parts = []
        for x in obj[:16]:
            v = _first_value(x)
            inner = f" of {type(v).__name__}" if v is not None else ""
            parts.append(f"{type(x).__name__}{inner}")
        return f"a {type(obj).__name__} of {len(obj)}: [{', '.join(parts)}]"
    return f"a {type(obj).__name__}"


def _field_matches(name: str, value: object) -> bool:
    """Whether ``value`` can be the field ``name`` the reader uses (others are not checked)."""
    if name in ("labels", "sentiments"):
        return isinstance(value, dict) and _is_label_list(_first_value(value))
    if name.startswith("text") or name in ("audio", "visual"):
        return isinstance(value, dict) and _is_feature_map(value)
    if name == "speakers":
        return isinstance(value, dict)
    if name in ("train", "dev", "test"):
        return isinstance(value, list | tuple | set | frozenset)
    return True  # ids, sentences, unused: never required by the reader


def detect_layout(obj: object, *, source: str = "<object>") -> Layout:
    """The layout of an unpickled feature file, or a :class:`LayoutError` saying what was found.

    Only the fields the reader uses are checked: an unused trailing field may hold anything.
    """
    if isinstance(obj, tuple | list):
        for layout in LAYOUTS:
            if len(layout.fields) == len(obj) and all(
                _field_matches(f, v) for f, v in zip(layout.fields, obj, strict=True)
            ):
                return layout
    raise LayoutError(
        f"{source}: matches no known IEMOCAP/MELD feature layout (expected a tuple of 9, 10, 11, 12, 13 "
        f"or 14 fields whose label field maps dialogue ids to integer labels); found {_describe(obj)}"
    )


def _matrix(value: object, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 1 and n == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{what}: expected {n} feature vectors, got an array of shape {arr.shape}")
    return arr


def _speaker_ids(value: object, what: str) -> np.ndarray:
    """'M'/'F' characters (IEMOCAP) or one-hot vectors (MELD) as integer ids."""
    items = list(value)
    if all(isinstance(s, str) for s in items):
        unknown = sorted({s for s in items if s not in IEMOCAP_SPEAKERS})
        if unknown:
            raise ValueError(f"{what}: unknown speaker codes {unknown} (expected 'M' or 'F')")
        return np.array([IEMOCAP_SPEAKERS[s] for s in items], dtype=np.int64)
    arr = np.asarray(items, dtype=np.float32)
    if arr.ndim == 2:
        return arr.argmax(1).astype(np.int64)
    if arr.ndim == 1:
        return arr.astype(np.int64)
    raise ValueError(
        f"{what}: speakers must be 'M'/'F' codes or one-hot vectors, got shape {arr.shape}"
    )


def read_feature_pickle(
    path: str | Path,
    *,
    text: int | Literal["mean"] = 0,
    label_set: Literal["emotion", "sentiment"] = "emotion",
) -> ConversationDataset:
    """Read a feature pickle of any published layout into a :class:`ConversationDataset`.

    Args:
        path: the ``.pkl`` file.
        text: which RoBERTa layer (0..3) of the four-layer layouts is the text modality, or
            ``"mean"`` for their average (M3Net); SDT uses layer 0.
        label_set: ``"sentiment"`` uses MELD's sentiment labels where the file has them.
    """
    path = Path(path)
    obj = safe_load(path)
    layout = detect_layout(obj, source=str(path))
    fields = dict(zip(layout.fields, obj, strict=True))
    labels_by_dialogue = fields["labels"]
    if label_set == "sentiment":
        if "sentiments" not in fields:
            raise ValueError(f"{path}: layout {layout.key} has no sentiment labels")
        labels_by_dialogue = fields["sentiments"]
    dataset = layout.dataset
    label_names = (
        MELD_SENTIMENTS
        if label_set == "sentiment"
        else (IEMOCAP_LABELS if dataset == "iemocap" else MELD_LABELS)
    )

    if layout.text_fields == ["text"]:
        text_note = "text"
    elif text == "mean":
        text_note = "text = mean of the 4 RoBERTa layers"
    elif text in range(4):
        text_note = f"text = RoBERTa layer {text + 1}"
    else:
        raise ValueError(f"text: expected 0, 1, 2, 3 or 'mean', got {text!r}")
    modalities = ["text"] + [m for m in ("audio", "visual") if m in fields]

    dialogues = {}
    for key, labels in labels_by_dialogue.items():
        did = str(key)
        where = f"{path}: dialogue {did!r}"
        labels = np.asarray(labels, dtype=np.int64)
        n = len(labels)
        if labels.min() < 0 or labels.max() >= len(label_names):
            raise ValueError(
                f"{where}: labels outside 0..{len(label_names) - 1}: {sorted(set(labels.tolist()))}"
            )
        feats = {}
        for m in modalities:
            if m == "text" and layout.text_fields != ["text"]:
                layers = [_matrix(fields[f][key], n, f"{where}, {f}") for f in _TEXT4]
                feats["text"] = np.mean(layers, axis=0) if text == "mean" else layers[text]
            else:
                feats[m] = _matrix(fields[m][key], n, f"{where}, {m}")
        speakers = _speaker_ids(fields["speakers"][key], f"{where}, speakers")
        if len(speakers) != n:
            raise ValueError(f"{where}: {len(speakers)} speakers for {n} labels")
        sentences = fields["sentences"].get(key) if isinstance(fields["sentences"], dict) else None
        extras = {"sentences": [str(s) for s in sentences]} if sentences is not None else {}
        dialogues[did] = Dialogue(
            id=did, features=feats, speakers=speakers, labels=labels, extras=extras
        )

    splits = {s: sorted(str(i) for i in fields[s]) for s in ("train", "dev", "test") if s in fields}
    dims = {m: int(next(iter(dialogues.values())).features[m].shape[1]) for m in modalities}
    key = layout.key
    if key == "A":
        key = "A" if dims.get("audio") == 1582 else "A'"
    num_speakers = 2 if dataset == "iemocap" else 9
    source = f"{path.name}: layout {key} ({layout.readers}), {dataset}, {text_note}, widths {dims}"
    return ConversationDataset(
        name=dataset,
        dialogues=dialogues,
        splits=splits,
        label_names=list(label_names),
        num_speakers=num_speakers,
        source=source,
        info={"layout": key, "dataset": dataset, "feature_dims": dims, "modalities": modalities},
    )
