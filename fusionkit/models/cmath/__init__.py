"""CMATH (Zhu et al., arXiv 2411.10060): the model, its objective, training, checkpoints and
predictor. ``docs/architecture.md`` says where each piece lives and how a step flows."""

from fusionkit.models.cmath.checkpoint import Restored, restore
from fusionkit.models.cmath.config import RunConfig, TrainConfig, load_config, override
from fusionkit.models.cmath.model import (
    CMATH,
    CMATHConfig,
    CMATHLoss,
    CMATHOutput,
    DataSpec,
    loss_counts,
    objective,
)
from fusionkit.models.cmath.predictor import (
    DialoguePrediction,
    Predictor,
    StreamSession,
    UtterancePrediction,
)
from fusionkit.models.cmath.train import Fitted, fit

__all__ = [
    "CMATH",
    "CMATHConfig",
    "CMATHLoss",
    "CMATHOutput",
    "DataSpec",
    "DialoguePrediction",
    "Fitted",
    "Predictor",
    "Restored",
    "RunConfig",
    "StreamSession",
    "TrainConfig",
    "UtterancePrediction",
    "fit",
    "load_config",
    "loss_counts",
    "objective",
    "override",
    "restore",
]
