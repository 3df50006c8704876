"""The training recipes (:mod:`tcsim.training_recipes`), under their ``tcsim.torch`` name.

They live outside this package so that a training config validates without PyTorch; this module
keeps ``tcsim.torch.recipes`` importable for existing code.
"""

from ..training_recipes import GEMMS, NAMED, GemmSetting, TrainingRecipe

__all__ = ["GEMMS", "NAMED", "GemmSetting", "TrainingRecipe"]
