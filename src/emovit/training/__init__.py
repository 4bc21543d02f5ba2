"""Training: the train loop, its input pipeline, augmentation, distillation, model cards and
releases (extra ``[train]``: accelerate, scikit-learn). Datasets live in `emovit.data`."""

from emovit.errors import TrainError
from emovit.training.augment import AugmentConfig
from emovit.training.inputs import TrainingInput
from emovit.training.trainer import TrainConfig, TrainResult, train

__all__ = [
    "AugmentConfig",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainingInput",
    "train",
]
