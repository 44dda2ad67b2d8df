"""Training (Ho et al. 2020 Algorithm 1 on any path and objective): the loop, one step, the EMA, the run log.

``train(cfg, resume=..., overrides=..., stop_at=..., progress=...)`` -> run folder. Randomness is a pure function
of (seed, step) (see step.py), so a resumed run continues bit for bit and N DDP processes train the model one
process would.
"""

from .ema import EMA
from .loop import TrainingError, train
from .step import lr_at, step_generator

__all__ = ["EMA", "TrainingError", "lr_at", "step_generator", "train"]
