"""Building blocks of CMATH-style models; each file holds one block."""

from fusionkit.blocks.cma_transformer import CMATransformer, stream_name
from fusionkit.blocks.context import DialogueContextEncoder
from fusionkit.blocks.multihead_attention import MultiHeadAttention
from fusionkit.blocks.reconstruction import ModalityReconstructor, Reconstruction
from fusionkit.blocks.stream_cache import KVCache, StreamCache
from fusionkit.blocks.transformer import FeedForward, TransformerLayer
from fusionkit.blocks.variational import VariationalFusion, VariationalOutput

__all__ = [
    "CMATransformer",
    "DialogueContextEncoder",
    "FeedForward",
    "KVCache",
    "ModalityReconstructor",
    "MultiHeadAttention",
    "Reconstruction",
    "StreamCache",
    "TransformerLayer",
    "VariationalFusion",
    "VariationalOutput",
    "stream_name",
]
