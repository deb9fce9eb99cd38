"""Data sources: one dataclass per kind of data, holding only its own fields, with one
``load()``; the registry :data:`SOURCES` names them, and :class:`Prepare` turns what a source
loads into what a model trains on (modality subset, dev split, standardisation).

A run configuration's ``[data]`` table names the source (``source = "table"``) and sets its
fields; training, prediction, evaluation and the benchmarks all get data through
:func:`load_data`, and a checkpoint's data are restored by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from fusionkit.data.audio import AudioFeatures
from fusionkit.data.dataset import ConversationDataset, Stats
from fusionkit.data.finetune import FineTune
from fusionkit.data.finite import OnNonFinite
from fusionkit.data.manifest import extraction_settings, manifest_dataset
from fusionkit.data.pickles import read_feature_pickle
from fusionkit.data.store import load_npz
from fusionkit.data.synthetic import SyntheticConversations
from fusionkit.data.tables import MELD_FILES, Segment, read_meld_csv
from fusionkit.data.text import DEFAULT_ENCODER, TextFeatures
from fusionkit.data.visual import DEFAULT_VISUAL_ENCODER, VisualFeatures
from fusionkit.errors import DataError, MissingFileError

SOURCES: dict[str, type] = {}
"""Source name (the ``[data]`` table's ``source``) -> its dataclass."""


class Source:
    """A kind of data: a dataclass of its own fields, ``name`` in :data:`SOURCES`."""

    name: ClassVar[str]

    def load(self) -> ConversationDataset:
        """The dataset as read, before any split or standardisation."""
        raise NotImplementedError

    def reader_for(
        self, extraction: dict, label_names: list[str]
    ) -> Callable[[], ConversationDataset]:
        """How a trained model reads new data of this kind: with the feature ``extraction``
        settings its checkpoint records and its ``label_names``. Sources whose features are
        read, not made (or a model trained without extraction settings), read them as
        configured."""
        return self.load


def register(cls: type[Source]) -> type[Source]:
    """Add a source dataclass to :data:`SOURCES` under its ``name``."""
    SOURCES[cls.name] = cls
    return cls


def existing(path: str | None, source: str, *, folder: bool = False) -> Path:
    """``path`` as a Path, or an error naming ``--data`` unless it is an existing file
    (or ``folder``)."""
    what = "folder" if folder else "file"
    if path is None:
        raise MissingFileError(f"--data: the {source!r} source needs a {what} (data.path)")
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"--data {p}: no such {what}")
    if folder != p.is_dir():
        raise DataError(f"--data {p}: expected a {what} for the {source!r} source")
    return p


@register
@dataclass(frozen=True)
class Synthetic(SyntheticConversations, Source):
    """The built-in synthetic conversations (every :class:`SyntheticConversations` field)."""

    name: ClassVar[str] = "synthetic"


@register
@dataclass
class FeaturePickle(Source):
    """The field's feature pickles (any published layout, detected from the content):
    ``expect`` names the dataset the file must hold (None: either), ``text_layer`` the
    RoBERTa layer of the four-layer layouts (or "mean")."""

    name: ClassVar[str] = "pickle"
    path: str | None = None
    expect: Literal["iemocap", "meld"] | None = None
    text_layer: int | Literal["mean"] = 0
    on_nonfinite: OnNonFinite = "raise"

    def load(self) -> ConversationDataset:
        path = existing(self.path, self.name)
        ds = read_feature_pickle(path, text=self.text_layer, on_nonfinite=self.on_nonfinite)
        if self.expect is not None and ds.name != self.expect:
            raise DataError(f"--data {self.path}: holds {ds.name} features, expected {self.expect}")
        return ds


@register
@dataclass
class Npz(Source):
    """A dataset in fusionkit's npz format (:func:`fusionkit.data.save_npz`)."""

    name: ClassVar[str] = "npz"
    path: str | None = None
    on_nonfinite: OnNonFinite = "raise"

    def load(self) -> ConversationDataset:
        return load_npz(existing(self.path, self.name), on_nonfinite=self.on_nonfinite)


@dataclass
class TextSettings:
    """How text features are made: a sentence-transformers ``encoder`` (name or folder),
    frozen, or fine-tuned on the training split's labels first (``finetune``)."""

    encoder: str = DEFAULT_ENCODER
    finetune: bool = False
    fine_tuning: FineTune = field(default_factory=FineTune)

    def features(self) -> TextFeatures:
        return TextFeatures(self.encoder, finetune=self.fine_tuning if self.finetune else None)


@register
@dataclass
class MeldCsv(Source):
    """MELD's three transcript CSVs (official splits), text features from a sentence
    encoder, cached in ``cache_dir`` (default ``.fusionkit-cache`` here). ``limit_dialogues``
    keeps the first N dialogues of every split, ``train_dialogues`` of train only (the
    few-data regime)."""

    name: ClassVar[str] = "meld-csv"
    path: str | None = None
    text: TextSettings = field(default_factory=TextSettings)
    cache_dir: str | None = None
    limit_dialogues: int | None = None
    train_dialogues: int | None = None
    on_nonfinite: OnNonFinite = "raise"

    def load(self) -> ConversationDataset:
        text = self.text.features()
        return self._read(text.encoder, text.finetune)

    def reader_for(self, extraction: dict, label_names: list[str]):
        """MELD's CSVs encoded as ``extraction`` says (a fine-tuned encoder loaded, not
        trained again)."""
        if not extraction:
            return self.load
        encoder = extraction_settings(extraction)["text"].encoder
        return lambda: self._read(encoder, None)

    def _read(self, encoder: str, finetune) -> ConversationDataset:
        from fusionkit.data.text import meld_text_dataset

        return meld_text_dataset(
            existing(self.path, self.name, folder=True),
            encoder=encoder,
            finetune=finetune,
            cache_dir=self.cache_dir,
            limit_dialogues=self.limit_dialogues,
            train_dialogues=self.train_dialogues,
            on_nonfinite=self.on_nonfinite,
        )


@dataclass
class VisualSettings:
    """How visual features are made from video (:class:`~fusionkit.data.visual.VisualFeatures`):
    frames at ``fps`` inside each segment (at most ``max_frames``), the largest face cropped
    (``face_crop``), an image ``encoder`` (a Hugging Face id, downloaded on first use, or a
    folder; "none": no visual modality), pooled by ``pooling``; decoding on ``workers``
    processes."""

    encoder: str = DEFAULT_VISUAL_ENCODER
    fps: float = 2.0
    max_frames: int = 8
    face_crop: bool = True
    pooling: Literal["mean_std", "mean"] = "mean_std"
    workers: int = 1

    def features(self) -> VisualFeatures | None:
        if self.encoder == "none":
            return None
        return VisualFeatures(
            encoder=self.encoder,
            fps=self.fps,
            max_frames=self.max_frames,
            face_crop=self.face_crop,
            pooling=self.pooling,
            workers=self.workers,
        )


@dataclass
class Recordings(Source):
    """What the sources that make features from recordings share: text, audio (openSMILE
    ``audio_features``, "none" for no audio) and visual settings, the cache, and what an
    unusable recording becomes (``on_error``: an error naming the row and the file, or that
    utterance's modality absent, counted), and NaN or infinity in made features
    (``on_nonfinite``, the same choice)."""

    text: TextSettings = field(default_factory=TextSettings)
    audio_features: Literal["eGeMAPSv02", "emobase", "ComParE_2016", "IS10", "none"] = "eGeMAPSv02"
    visual: VisualSettings = field(default_factory=VisualSettings)
    on_error: Literal["raise", "absent"] = "raise"
    on_nonfinite: OnNonFinite = "raise"
    cache_dir: str | None = None

    def features(self) -> dict:
        """Modality -> feature settings, for the modalities not switched off."""
        made = {"text": self.text.features(), "visual": self.visual.features()}
        if self.audio_features != "none":
            made["audio"] = AudioFeatures(self.audio_features)
        return {m: f for m, f in made.items() if f is not None}


@register
@dataclass
class Table(Recordings):
    """A manifest of your own conversations (CSV or JSON Lines; docs/own-conversations.md):
    a text column, audio files, video files (the visual modality, and the audio where there
    is no audio column), features cached in ``cache_dir`` (default: beside the manifest).
    ``label_names`` fixes the model's label order (None: sorted)."""

    name: ClassVar[str] = "table"
    path: str | None = None
    label_names: list[str] | None = None
    split: str | None = None  # the split of every row of a manifest without a split column

    def load(self) -> ConversationDataset:
        return self._read(self.features(), self.label_names, self.split)

    def reader_for(self, extraction: dict, label_names: list[str]):
        """New conversations read as a model's training data were: ``extraction``'s
        settings (a fine-tuned encoder loaded, not trained again), the model's
        ``label_names``, every dialogue in test when the manifest has no split column."""
        if not extraction:
            return self.load
        features = extraction_settings(extraction)
        return lambda: self._read(features, label_names, self.split or "test")

    def _read(self, features: dict, label_names, split) -> ConversationDataset:
        return manifest_dataset(
            existing(self.path, self.name),
            features=features,
            label_names=label_names,
            split=split,
            cache_dir=self.cache_dir,
            on_error=self.on_error,
            on_nonfinite=self.on_nonfinite,
        )


@dataclass
class Prepare:
    """What a model trains on, from what a source loaded: ``modalities`` (None: all), a
    seeded dev split of ``dev_fraction`` of train when the data have none, and per-feature
    standardisation by the training split's statistics."""

    modalities: list[str] | None = None
    dev_fraction: float = 0.1
    dev_seed: int = 0
    standardize: bool = True

    def split(self, ds: ConversationDataset) -> ConversationDataset:
        """The modality subset, and the dev split if the data have none."""
        if self.modalities is not None:
            ds = ds.select_modalities(self.modalities)
        if "train" not in ds.splits:
            return ds
        return ds.with_dev_split(self.dev_fraction, seed=self.dev_seed)

    def __call__(
        self, ds: ConversationDataset, stats: Stats | None = None
    ) -> tuple[ConversationDataset, Stats | None]:
        """:meth:`split`, then standardisation by ``stats`` (default: the training split's);
        returns the dataset and the statistics used (None if ``standardize`` is off)."""
        ds = self.split(ds)
        if not self.standardize:
            return ds, None
        stats = ds.standardization("train") if stats is None else stats
        return ds.standardized(stats=stats), stats


MELD_CLIPS = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
"""The clip folders of each split in MELD's raw release (MELD.Raw.tar.gz, its split archives unpacked)."""


@register
@dataclass
class MeldRaw(Recordings):
    """MELD's raw release: the three CSVs and one ``dia{D}_utt{U}.mp4`` clip per utterance
    in each split's folder (``clips``, relative to ``path``); text features from the
    transcripts, audio from each clip's audio track, visual from its frames. Some of
    MELD's clips do not decode: ``on_error = "absent"`` makes them absent, counted."""

    name: ClassVar[str] = "meld-raw"
    path: str | None = None
    clips: dict[str, str] = field(default_factory=lambda: dict(MELD_CLIPS))

    def load(self) -> ConversationDataset:
        return self._read(self.features())

    def reader_for(self, extraction: dict, label_names: list[str]):
        if not extraction:
            return self.load
        return lambda: self._read(extraction_settings(extraction))

    def _read(self, features: dict) -> ConversationDataset:
        folder = existing(self.path, self.name, folder=True)
        csvs = _meld_csvs(folder)
        table = read_meld_csv(csvs)
        missing = {s: c for s, c in self.clips.items() if not (folder / c).is_dir()}
        if missing:
            raise MissingFileError(
                f"--data {folder}: MELD clip folders {missing} not found (data.clips names them)"
            )
        dialogues = []
        for d in table.dialogues:
            clips = folder / self.clips[d.split]
            video = [
                Segment((clips / f"dia{d.id.split('/')[1]}_utt{u}.mp4").absolute())
                for u in d.utterance_ids
            ]
            dialogues.append(replace(d, cells={**d.cells, "audio": video, "visual": list(video)}))
        table = replace(table, dialogues=dialogues, modalities=("audio", "text", "visual"))
        cache = Path(self.cache_dir) if self.cache_dir else folder / ".fusionkit-cache"
        made = {
            m: how.extract(table, name="meld-raw", cache_dir=cache, on_error=self.on_error)
            for m, how in sorted(features.items())
        }
        how = "; ".join(f.settings["description"] for f in made.values())
        source = f"MELD raw release in {folder}; {how}"
        return table.to_dataset("meld", made, source=source, on_nonfinite=self.on_nonfinite)


def _meld_csvs(folder: Path) -> Path:
    """The folder holding MELD's three CSVs: ``folder`` or one folder below it."""
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if all((candidate / f).is_file() for f in MELD_FILES.values()):
            return candidate
    raise MissingFileError(
        f"--data {folder}: MELD's CSVs {list(MELD_FILES.values())} are neither in it nor in a folder below it"
    )
