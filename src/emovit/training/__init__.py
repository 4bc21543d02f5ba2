"""Training, datasets and augmentation (extra ``[train]``: accelerate, scikit-learn, tqdm)."""

from emovit.training.augment import AugmentConfig
from emovit.training.datasets import DatasetError, LabelledImages, Sample, decode_samples, read_samples
from emovit.training.trainer import TrainConfig, TrainError, TrainResult, train

__all__ = [
    "AugmentConfig",
    "DatasetError",
    "LabelledImages",
    "Sample",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "decode_samples",
    "read_samples",
    "train",
]
