"""fusionkit: typed, shape-checked building blocks for multimodal fusion.

Letters in shapes: b batch, t utterances, h heads, d features.
"""

from fusionkit import attention, data, fusion, losses, typing
from fusionkit.batch import IGNORE_INDEX, Dialogue, DialogueBatch, batches, length_buckets
from fusionkit.blocks import (
    CMATransformer,
    DialogueContextEncoder,
    FeedForward,
    ModalityReconstructor,
    MultiHeadAttention,
    Reconstruction,
    StreamCache,
    TransformerLayer,
    VariationalFusion,
    VariationalOutput,
    stream_name,
)
from fusionkit.fusion import ConcatFusion, GatedFusion, LowRankFusion, TensorFusion
from fusionkit.metrics import ClassificationReport, classification_report

__version__ = "0.2.0"

__all__ = [
    "IGNORE_INDEX",
    "CMATransformer",
    "ClassificationReport",
    "ConcatFusion",
    "Dialogue",
    "DialogueBatch",
    "DialogueContextEncoder",
    "FeedForward",
    "GatedFusion",
    "LowRankFusion",
    "ModalityReconstructor",
    "MultiHeadAttention",
    "Reconstruction",
    "StreamCache",
    "TensorFusion",
    "TransformerLayer",
    "VariationalFusion",
    "VariationalOutput",
    "attention",
    "batches",
    "classification_report",
    "data",
    "fusion",
    "length_buckets",
    "losses",
    "stream_name",
    "typing",
]
