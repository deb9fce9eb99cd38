"""Readers for the field's IEMOCAP and MELD feature pickles, every published layout.

The layout is detected from the tuple's length and contents, never from the file name
(cmath.md, "The feature files the field uses"). Files are read with :class:`SafeUnpickler`:
builtin containers, numbers, strings and numpy arrays only; anything else is refused before
it is built, so a pickle whose ``__reduce__`` would run code fails without running it. The
constructors a pickle may call are guarded too, so that a few corrupted or crafted bytes
cannot make them allocate gigabytes or crash numpy: ``bytearray`` and ``bytes`` never from a
size, ``_codecs.encode`` with latin-1 only, arrays of plain dtypes whose data fit their
shape, and no memo slot far beyond the objects made (:func:`check_memo`). A file that is cut
short or corrupted is a :class:`~fusionkit.errors.DataError` naming it; features with NaN or
infinity at an utterance are refused or made absent (:mod:`fusionkit.data.finite`).
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
import pickletools
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.finite import OnNonFinite, finite_dataset
from fusionkit.errors import (
    ConfigError,
    DataError,
    LayoutError,
    MissingFileError,
    UnsafePickleError,
    UserError,
)

IEMOCAP_LABELS = ["hap", "sad", "neu", "ang", "exc", "fru"]
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
MELD_SENTIMENTS = ["neutral", "positive", "negative"]
IEMOCAP_SPEAKERS = {"M": 0, "F": 1}

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),  # split ids are sets in some files ...
    ("builtins", "frozenset"),
    ("__builtin__", "set"),  # ... under Python 2's module name in protocol-2 pickles
    ("__builtin__", "frozenset"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "complex"),
}
_NUMPY = ("numpy.core.multiarray", "numpy._core.multiarray")


class _Refused(UnsafePickleError):
    """Raised by a guarded constructor; :class:`SafeUnpickler` adds the file's name."""


def _latin1(encoding: object) -> bool:
    return isinstance(encoding, str) and encoding.lower().replace("_", "-") in (
        "latin1",
        "latin-1",
        "iso-8859-1",
    )


def _encode(obj: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    """``_codecs.encode`` as pickles use it for bytes: a string and latin-1, nothing else
    (other codecs can grow their input: chained, a few bytes would fill the memory)."""
    if not isinstance(obj, str) or not _latin1(encoding) or errors != "strict":
        raise _Refused(f"_codecs.encode of {type(obj).__name__} with {encoding!r}")
    return obj.encode("latin-1")


def _bytearray(*args: object) -> bytearray:
    """``bytearray`` from bytes, or a string and latin-1 (never a size: that would allocate)."""
    if len(args) == 1 and isinstance(args[0], bytes | bytearray):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and _latin1(args[1]):
        return bytearray(args[0], "latin-1")
    if not args:
        return bytearray()
    raise _Refused(f"bytearray({', '.join(type(a).__name__ for a in args)})")


class _Dtype:
    """A numpy dtype as a pickle builds it (``dtype(spec, align, copy)``, then its state):
    plain dtypes only (no fields, no sub-arrays), resolved by :func:`_resolve`."""

    def __init__(self, *args: object):
        self.args, self.dtype = args, None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or not all(
            isinstance(v, str | int | type(None)) for v in state
        ):  # a sub-array (a tuple), field names (a tuple), fields (a dict), metadata
            raise _Refused(f"numpy dtype {self.args!r:.40} with state {state!r:.60}")
        self.dtype = _plain_dtype(np.dtype(*self.args))
        self.dtype.__setstate__(state)
        _plain_dtype(self.dtype)


def _plain_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"numpy dtype {dtype} (structured or sub-array dtypes)")
    return dtype


def _resolve(dtype: object) -> np.dtype:
    if isinstance(dtype, _Dtype):
        return dtype.dtype if dtype.dtype is not None else _plain_dtype(np.dtype(*dtype.args))
    raise _Refused(f"a numpy array or scalar whose dtype is a {type(dtype).__name__}")


class _Array(np.ndarray):
    """The arrays a pickle builds: ``__setstate__`` checks that the data fit the shape before
    numpy sees them (numpy crashes on an object array whose list is too short)."""

    def __new__(cls, *args, **kwargs):
        raise _Refused("numpy.ndarray called directly")

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("numpy array state that is not a tuple of 4 or 5")
        version, (shape, dtype, fortran, data) = state[:-4], state[-4:]
        dtype = _resolve(dtype)
        if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and 0 <= n < 2**62 for n in shape
        ):
            raise _Refused(f"numpy array shape {shape!r:.60}")
        size = math.prod(shape)
        if dtype.hasobject:
            ok = isinstance(data, list) and len(data) == size
        else:
            ok = isinstance(data, bytes | bytearray | str) and len(data) == size * dtype.itemsize
        if not ok:
            raise _Refused(f"numpy array of shape {shape} and dtype {dtype} whose data do not fit")
        super().__setstate__((*version, shape, dtype, fortran, data))


def _reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct`` as its pickles call it: an empty array, filled by its state."""
    if subtype is not _Array or not isinstance(shape, tuple) or 0 not in shape:
        raise _Refused(
            f"numpy _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r:.40})"
        )
    return np.ndarray.__new__(_Array, shape, np.dtype("b"))


def _scalar(dtype: object, data: object = None) -> object:
    """numpy's ``scalar``: a number of a plain dtype from its bytes."""
    dtype = _resolve(dtype)
    if dtype.hasobject:
        return data
    if not isinstance(data, bytes | str) or len(data) != dtype.itemsize:
        raise _Refused(f"numpy scalar of dtype {dtype} from {len(data or b'')} bytes")
    raw = data.encode("latin-1") if isinstance(data, str) else data
    return np.frombuffer(raw, dtype=dtype)[0]


def _bytes(*args: object) -> bytes:
    """``bytes`` as protocol 2 writes an empty one, or from a string and latin-1."""
    return bytes(_bytearray(*args))


def _plain(root: object) -> object:
    """``root`` with the guarded numpy types replaced by numpy's own: arrays (in containers
    and object arrays) as ``np.ndarray``, dtypes as ``np.dtype``."""
    done: dict[int, object] = {}

    def plain(x: object) -> object:
        if isinstance(x, int | float | str | bytes | complex | bool | type(None) | np.generic):
            return x
        if id(x) in done:
            return done[id(x)]
        if isinstance(x, _Dtype):
            done[id(x)] = out = _resolve(x)
        elif isinstance(x, np.ndarray):
            done[id(x)] = out = x.view(np.ndarray)
            if out.dtype.hasobject:
                for i in np.ndindex(out.shape):
                    out[i] = plain(out[i])
        elif isinstance(x, list):
            done[id(x)] = out = x
            x[:] = [plain(v) for v in x]
        elif isinstance(x, dict):
            done[id(x)] = out = x
            for k, v in x.items():
                x[k] = plain(v)
        elif isinstance(x, tuple):
            done[id(x)] = out = tuple(plain(v) for v in x)
        else:  # sets, bytearrays: hold nothing of numpy's (arrays are not hashable)
            out = x
        return out

    return plain(root)


_GUARDED = {
    ("_codecs", "encode"): _encode,  # bytes inside protocol-2 pickles (numpy array buffers)
    ("builtins", "bytearray"): _bytearray,
    ("__builtin__", "bytearray"): _bytearray,
    ("builtins", "bytes"): _bytes,
    ("__builtin__", "bytes"): _bytes,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _Dtype,
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY},
    **{(m, "scalar"): _scalar for m in _NUMPY},
}


def _opcode_table() -> tuple[dict[int, object], frozenset[int]]:
    """Opcode -> how its argument is laid out (a byte count, the width and struct format of
    a length prefix, or "line"/"line2": one or two newline-terminated lines), and the
    opcodes that store into the memo."""
    prefix = {-2: (1, "<B"), -3: (4, "<i"), -4: (4, "<I"), -5: (8, "<Q")}
    args: dict[int, object] = {}
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")[0]
        if op.arg is None or op.arg.n >= 0:
            args[code] = 0 if op.arg is None else op.arg.n
        elif op.arg.n == pickletools.UP_TO_NEWLINE:
            args[code] = "line2" if op.name in ("GLOBAL", "INST") else "line"
        else:
            args[code] = prefix[op.arg.n]
    memo = frozenset(pickletools.code2op[c].code.encode("latin-1")[0] for c in "qrp\x94")
    return args, memo


_ARGS, _MEMO = _opcode_table()
_MEMO_SLACK = 2**20


def check_memo(data: bytes, source: str) -> None:
    """Refuse a pickle that stores into a memo slot far beyond the objects it has made: the C
    unpickler would first grow its memo to that index (a 4-byte change in a file made it
    allocate 6 GB). Walks the opcodes without building anything; stops where they stop
    making sense and leaves the error to the unpickler."""
    pos, n, count = 0, len(data), 0
    args, memo, find = _ARGS, _MEMO, data.find
    while pos < n:
        code = data[pos]
        pos += 1
        arg = args.get(code)
        if arg is None or code == 0x2E:  # unknown, or STOP
            return
        if code in memo:
            index = count
            if code == 0x72 and pos + 4 <= n:  # LONG_BINPUT
                index = struct.unpack_from("<I", data, pos)[0]
            elif code == 0x70:  # PUT
                with contextlib.suppress(ValueError):
                    index = int(data[pos : find(b"\n", pos)])
            if index > count + _MEMO_SLACK:
                raise UnsafePickleError(
                    f"{source}: corrupted pickle: stores object {index} at byte {pos - 1} after "
                    f"making {count} (the unpickler would allocate memory for all of them)"
                )
            count += 1
        if type(arg) is int:
            pos += arg
        elif type(arg) is tuple:
            width, fmt = arg
            if pos + width > n:
                return
            length = struct.unpack_from(fmt, data, pos)[0]
            if length < 0:
                return
            pos += width + length
        else:
            pos = find(b"\n", pos) + 1
            if arg == "line2" and pos:
                pos = find(b"\n", pos) + 1
            if pos == 0:
                return


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin containers, numbers, strings and numpy arrays
    (plain dtypes; arrays are checked to fit their shape before numpy sees them)."""

    def __init__(self, file, *, source: str = "<stream>", **kwargs):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _GUARDED:
            return _GUARDED[module, name]
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refused to load {module}.{name}: only builtin containers, numbers, "
            "strings and numpy arrays are allowed in a feature file"
        )


def safe_load(path: str | Path) -> object:
    """Unpickle ``path`` with :class:`SafeUnpickler` (Python-2 pickles read as latin1).

    A file that is not a whole pickle (cut short, corrupted) is a
    :class:`~fusionkit.errors.DataError` naming it; a missing one a
    :class:`~fusionkit.errors.MissingFileError`.
    """
    data = _read_bytes(path, "feature pickle")
    check_memo(data, str(path))
    try:
        return _plain(SafeUnpickler(io.BytesIO(data), source=str(path), encoding="latin1").load())
    except _Refused as e:
        raise UnsafePickleError(
            f"{path}: refused to build {e}: only builtin containers, numbers, strings and "
            "numpy arrays of plain dtypes are allowed in a feature file"
        ) from None
    except UserError:
        raise
    except Exception as e:  # the unpickler fails in many ways on cut or corrupted bytes
        raise DataError(
            f"{path}: not a readable pickle (cut short or corrupted): {_first(e)}"
        ) from None


def _read_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of ``path``; a missing file or a folder is an error naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what}: {e.strerror or e}") from None


def _first(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for a one-line error."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


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
        return _array(_first_value(value), np.float32, "").ndim == 2
    except DataError:
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


def _array(value: object, dtype: type, what: str) -> np.ndarray:
    """``value`` as an array of ``dtype`` (a :class:`DataError` naming ``what`` if it is not
    one); numbers beyond float32's range become infinity, refused with the NaN."""
    try:
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise DataError(f"{what}: not an array of numbers ({_first(e)})") from None


def _matrix(value: object, n: int, what: str) -> np.ndarray:
    arr = _array(value, np.float32, what)
    if arr.ndim == 1 and n == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DataError(f"{what}: expected {n} feature vectors, got an array of shape {arr.shape}")
    return arr


def _labels(value: object, num_labels: int, what: str) -> np.ndarray:
    """A dialogue's labels: whole numbers in ``0..num_labels - 1``, at least one."""
    if isinstance(value, str | bytes | dict):
        raise DataError(
            f"{what}: labels must be a sequence of integers, got a {type(value).__name__}"
        )
    arr = _array(value, np.float64, f"{what}, labels")
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(
            f"{what}: labels must be a non-empty list of integers, got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < 0) | (arr >= num_labels)
    if bad.any():
        found = sorted({repr(v) for v in arr[bad].tolist()})[:10]
        raise DataError(f"{what}: labels outside 0..{num_labels - 1}: {', '.join(found)}")
    return arr.astype(np.int64)


def _speaker_ids(value: object, n: int, num_speakers: int, what: str) -> np.ndarray:
    """'M'/'F' characters (IEMOCAP) or one-hot vectors (MELD) as integer ids."""
    if not isinstance(value, list | tuple | str | np.ndarray):
        raise DataError(f"{what}: expected a list of speakers, got a {type(value).__name__}")
    items = list(value)
    if items and all(isinstance(s, str) for s in items):
        unknown = sorted({s for s in items if s not in IEMOCAP_SPEAKERS})
        if unknown:
            raise DataError(f"{what}: unknown speaker codes {unknown[:10]} (expected 'M' or 'F')")
        ids = np.array([IEMOCAP_SPEAKERS[s] for s in items], dtype=np.int64)
    else:
        arr = _array(items, np.float64, what)
        if arr.ndim == 2 and arr.shape[1] > 0 and np.isfinite(arr).all():
            ids = arr.argmax(1)
        elif arr.ndim == 1 and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            ids = arr
        else:
            raise DataError(
                f"{what}: speakers must be 'M'/'F' codes, one-hot vectors or integer ids, "
                f"got an array of shape {arr.shape}"
            )
    if len(ids) != n:
        raise DataError(f"{what}: {len(ids)} speakers for {n} labels")
    if n and (ids.min() < 0 or ids.max() >= num_speakers):
        raise DataError(f"{what}: speaker ids outside 0..{num_speakers - 1}")
    return np.asarray(ids, dtype=np.int64)


def _names(value: object, n: int) -> list[str] | None:
    """Per-utterance strings (ids, sentences) when ``value`` is a sequence of ``n``."""
    if isinstance(value, list | tuple | np.ndarray) and len(value) == n:
        return [str(v) for v in value]
    return None


def read_feature_pickle(
    path: str | Path,
    *,
    text: int | Literal["mean"] = 0,
    label_set: Literal["emotion", "sentiment"] = "emotion",
    on_nonfinite: OnNonFinite = "raise",
) -> ConversationDataset:
    """Read a feature pickle of any published layout into a :class:`ConversationDataset`.

    Args:
        path: the ``.pkl`` file.
        text: which RoBERTa layer (0..3) of the four-layer layouts is the text modality, or
            ``"mean"`` for their average (M3Net); SDT uses layer 0.
        label_set: ``"sentiment"`` uses MELD's sentiment labels where the file has them.
        on_nonfinite: NaN or infinity in an utterance's features: ``"raise"`` a
            :class:`~fusionkit.errors.NonFiniteError` naming the dialogue, utterance and
            modality; ``"absent"``: that utterance lacks that modality (counted in
            ``info["absent"]``).

    Anything in the file that cannot be used is a :class:`~fusionkit.errors.UserError`
    naming the file (and the dialogue).
    """
    path = Path(path)
    if text != "mean" and text not in range(4):
        raise ConfigError(f"text: expected 0, 1, 2, 3 or 'mean', got {text!r}")
    if label_set not in ("emotion", "sentiment"):
        raise ConfigError(f"label_set: expected 'emotion' or 'sentiment', got {label_set!r}")
    if on_nonfinite not in ("raise", "absent"):
        raise ConfigError(f"on_nonfinite: expected 'raise' or 'absent', got {on_nonfinite!r}")
    obj = safe_load(path)
    layout = detect_layout(obj, source=str(path))
    fields = dict(zip(layout.fields, obj, strict=True))
    labels_by_dialogue = fields["labels"]
    if label_set == "sentiment":
        if "sentiments" not in fields:
            raise ConfigError(f"{path}: layout {layout.key} has no sentiment labels")
        labels_by_dialogue = fields["sentiments"]
    dataset = layout.dataset
    label_names = (
        MELD_SENTIMENTS
        if label_set == "sentiment"
        else (IEMOCAP_LABELS if dataset == "iemocap" else MELD_LABELS)
    )
    num_speakers = 2 if dataset == "iemocap" else 9

    if layout.text_fields == ["text"]:
        text_note = "text"
    elif text == "mean":
        text_note = "text = mean of the 4 RoBERTa layers"
    else:
        text_note = f"text = RoBERTa layer {text + 1}"
    modalities = ["text"] + [m for m in ("audio", "visual") if m in fields]
    sources = {m: [m] for m in modalities}
    if layout.text_fields != ["text"]:
        sources["text"] = list(_TEXT4) if text == "mean" else [_TEXT4[text]]

    dialogues: dict[str, Dialogue] = {}
    names: dict[str, list[str]] = {}
    dims: dict[str, int] = {}
    for key, labels in labels_by_dialogue.items():
        did = str(key)
        where = f"{path}: dialogue {did!r}"
        if did in dialogues:
            raise DataError(f"{where}: two dialogues have this id")
        labels = _labels(labels, len(label_names), where)
        n = len(labels)
        feats = {}
        for m in modalities:
            layers = []
            for f in sources[m]:
                by_dialogue = fields[f]
                if key not in by_dialogue:
                    raise DataError(f"{where}: no {f} features for this dialogue")
                layers.append(_matrix(by_dialogue[key], n, f"{where}, {f}"))
            widths = {x.shape[1] for x in layers} | ({dims[m]} if m in dims else set())
            if len(widths) > 1:
                raise DataError(
                    f"{where}, {m}: features {sorted(widths)} wide; other dialogues' are {dims.get(m)}"
                )
            dims.setdefault(m, layers[0].shape[1])
            feats[m] = layers[0] if len(layers) == 1 else np.mean(layers, axis=0)
        if key not in fields["speakers"]:
            raise DataError(f"{where}: no speakers for this dialogue")
        speakers = _speaker_ids(fields["speakers"][key], n, num_speakers, f"{where}, speakers")
        sentences = fields["sentences"].get(key) if isinstance(fields["sentences"], dict) else None
        extras = {}
        if sentences is not None:
            extras["sentences"] = _names(sentences, n)
            if extras["sentences"] is None:
                raise DataError(f"{where}: sentences are not a list of {n} strings")
        ids = fields.get("ids")
        utterance_ids = _names(ids.get(key), n) if isinstance(ids, dict) else None
        if utterance_ids is not None:
            names[did] = utterance_ids
        dialogues[did] = Dialogue(
            id=did, features=feats, speakers=speakers, labels=labels, extras=extras
        )
    if not dialogues:
        raise DataError(f"{path}: holds no dialogue")

    splits = {}
    for s in ("train", "dev", "test"):
        if s in fields:
            ids = sorted({str(i) for i in fields[s]})
            unknown = [i for i in ids if i not in dialogues]
            if unknown:
                raise DataError(
                    f"{path}: split {s!r} names {len(unknown)} dialogue(s) with no labels, "
                    f"e.g. {unknown[:3]}"
                )
            splits[s] = ids
    key = layout.key
    if key == "A":
        key = "A" if dims.get("audio") == 1582 else "A'"
    source = f"{path.name}: layout {key} ({layout.readers}), {dataset}, {text_note}, widths {dims}"
    data = ConversationDataset(
        name=dataset,
        dialogues=dialogues,
        splits=splits,
        label_names=list(label_names),
        num_speakers=num_speakers,
        source=source,
        info={"layout": key, "dataset": dataset, "feature_dims": dims, "modalities": modalities},
    )
    return finite_dataset(data, where=str(path), on_nonfinite=on_nonfinite, utterance_names=names)
