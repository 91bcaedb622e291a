"""Training, transfer strategies, checkpoints and tracking of CGAT models.

MLflow is imported only by ``cgat_dgl.training.tracking``; import ``Tracker`` from there.
"""

from cgat_dgl.training.config import TrainConfig
from cgat_dgl.training.inference import load_checkpoint, predict
from cgat_dgl.training.normalization import Normalizer
from cgat_dgl.training.trainer import TrainResult, train

__all__ = ["Normalizer", "TrainConfig", "TrainResult", "load_checkpoint", "predict", "train"]
