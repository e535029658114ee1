"""Training: the three stages (alignment, grounding, instruction tuning) on accelerate, one YAML each.

Names are imported on first use, so that `omniground --help` does not pay for torch/accelerate/peft.
"""

import importlib

_EXPORTS = {
    "DataSource": "config", "ModelInit": "config", "TrainConfig": "config", "TrainConfigError": "config",
    "load_config": "config", "Trainer": "trainer", "build_start_model": "trainer",
    "latest_checkpoint": "trainer", "train": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'omniground.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"omniground.train.{_EXPORTS[name]}"), name)
