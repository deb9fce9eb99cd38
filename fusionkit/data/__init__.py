"""Conversation datasets: the field's feature pickles, conversation tables with text
features, fusionkit's npz format, synthetic conversations."""

from fusionkit.data.dataset import SPLITS, ConversationDataset
from fusionkit.data.pickles import (
    IEMOCAP_LABELS,
    MELD_LABELS,
    MELD_SENTIMENTS,
    Layout,
    LayoutError,
    UnsafePickleError,
    detect_layout,
    read_feature_pickle,
    safe_load,
)
from fusionkit.data.store import load_npz, read_meta, save_npz
from fusionkit.data.synthetic import SyntheticConversations
from fusionkit.data.tables import (
    ConversationTable,
    TableColumns,
    TableError,
    read_conversation_table,
    read_meld_csv,
)
from fusionkit.data.text import encode_table, meld_text_dataset

__all__ = [
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MELD_SENTIMENTS",
    "SPLITS",
    "ConversationDataset",
    "ConversationTable",
    "Layout",
    "LayoutError",
    "SyntheticConversations",
    "TableColumns",
    "TableError",
    "UnsafePickleError",
    "detect_layout",
    "encode_table",
    "load_npz",
    "meld_text_dataset",
    "read_conversation_table",
    "read_feature_pickle",
    "read_meld_csv",
    "read_meta",
    "safe_load",
    "save_npz",
]

_MOVED = {"SafeUnpickler": "fusionkit.data.pickles", "LAYOUTS": "fusionkit.data.pickles"}


def __getattr__(name: str):
    """Internals once exported here still import, with a warning, for one release."""
    if name in _MOVED:
        import importlib

        from fusionkit._deprecation import warn

        warn(f"fusionkit.data.{name} is internal: import it from {_MOVED[name]}")
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'fusionkit.data' has no attribute {name!r}")
