"""Training and evaluation: `python -m train --config configs/X.yaml` trains, saves and
scores a model; `python -m train.evaluate` scores a saved one. Benchmarks are in bench/."""

import train.framing_data as framing_data  # noqa: F401  (registers the framing loaders)
from train.config import (
                     DataConfig,
                     DatasetConfig,
                     RunConfig,
                     TaskConfig,
                     TrainingConfig,
                     load_run_config,
)
from train.data import LOADERS, DataError, load_task, register_loader, split_examples

__all__ = ["DataConfig", "DataError", "DatasetConfig", "LOADERS", "RunConfig", "TaskConfig",
           "TrainingConfig", "load_run_config", "load_task", "register_loader",
           "split_examples"]
