"""Conversation datasets: the field's feature pickles, conversation tables and manifests of
your own conversations with text and audio features, fusionkit's npz format, synthetic
conversations."""

from fusionkit.data.audio import FEATURE_SETS, AudioFeatures, audio_features
from fusionkit.data.dataset import SPLITS, ConversationDataset
from fusionkit.data.finetune import FineTune, finetune_encoder
from fusionkit.data.manifest import extraction_settings, manifest_dataset
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
    Features,
    Segment,
    TableColumns,
    TableError,
    read_conversation_table,
    read_meld_csv,
)
from fusionkit.data.text import (
    DEFAULT_ENCODER,
    TextFeatures,
    encode_table,
    load_encoder,
    meld_text_dataset,
    text_features,
)
from fusionkit.data.visual import (
    DEFAULT_VISUAL_ENCODER,
    VisualFeatures,
    load_image_encoder,
    visual_features,
)
from fusionkit.errors import MediaError

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_VISUAL_ENCODER",
    "FEATURE_SETS",
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MELD_SENTIMENTS",
    "SPLITS",
    "AudioFeatures",
    "ConversationDataset",
    "ConversationTable",
    "Features",
    "FineTune",
    "Layout",
    "LayoutError",
    "MediaError",
    "Segment",
    "SyntheticConversations",
    "TableColumns",
    "TableError",
    "TextFeatures",
    "UnsafePickleError",
    "VisualFeatures",
    "audio_features",
    "detect_layout",
    "encode_table",
    "extraction_settings",
    "finetune_encoder",
    "load_encoder",
    "load_image_encoder",
    "load_npz",
    "manifest_dataset",
    "meld_text_dataset",
    "read_conversation_table",
    "read_feature_pickle",
    "read_meld_csv",
    "read_meta",
    "safe_load",
    "save_npz",
    "text_features",
    "visual_features",
]
