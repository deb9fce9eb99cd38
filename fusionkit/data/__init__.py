"""Conversation datasets: the field's feature pickles, fusionkit's npz format, synthetic data."""

from fusionkit.data.dataset import SPLITS, ConversationDataset
from fusionkit.data.pickles import (
    IEMOCAP_LABELS,
    LAYOUTS,
    MELD_LABELS,
    MELD_SENTIMENTS,
    Layout,
    LayoutError,
    SafeUnpickler,
    UnsafePickleError,
    detect_layout,
    read_feature_pickle,
    safe_load,
)
from fusionkit.data.store import load_npz, read_meta, save_npz
from fusionkit.data.synthetic import SyntheticConversations

__all__ = [
    "IEMOCAP_LABELS",
    "LAYOUTS",
    "MELD_LABELS",
    "MELD_SENTIMENTS",
    "SPLITS",
    "ConversationDataset",
    "Layout",
    "LayoutError",
    "SafeUnpickler",
    "SyntheticConversations",
    "UnsafePickleError",
    "detect_layout",
    "load_npz",
    "read_feature_pickle",
    "read_meta",
    "safe_load",
    "save_npz",
]
