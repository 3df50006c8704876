"""``tcsim.torch``: FP8 training on the modelled tensor core (needs PyTorch: the ``torch`` extra).

    import tcsim.torch as tt
    recipe = tt.TrainingRecipe.deepseek_v3()             # or torchao_tensorwise, te_hybrid_delayed,
    report = tt.convert(model, recipe)                   # bf16, accumulator_proposal(16), ...
    stats = tt.GemmStats(every=10); tt.attach_stats(model, stats)
    ... stats.begin_step(step); loss.backward() ...; stats.frame()   # tidy pandas table

Each converted nn.Linear runs fprop (y = x w^T), dgrad (dx = dy w) and wgrad (dw = dy^T x)
through :func:`tcsim.gemm` with its own model, path and :class:`tcsim.Recipe`
(tcsim.training_recipes explains the operands and the per-GEMM scale groups). A converted layer
behaves like torch.nn.Linear where users rely on it: ``torch.compile`` (the GEMMs are opaque
custom ops, tcsim.torch.ops), ``torch.autocast``, strict state_dict loads both ways (amax
histories travel in the state_dict's metadata: amax_histories), nn.Linear's errors, empty
batches, and NaN/Inf carried through the GEMMs (``nonfinite``: tcsim.torch.nonfinite).

FP8 code that quantises itself and calls ``torch._scaled_mm`` (torchao's Float8Linear) runs
unmodified on the modelled unit under ``with tt.emulate(model="h100"): ...``
(tcsim.torch.emulate).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tcsim.torch needs PyTorch: pip install 'tcsim[torch]'") from exc

from .capture import OperandRecorder
from .convert import DEEPSEEK_KEEP, Conversion, attach_stats, convert, layers
from .emulate import emulate, is_emulating
from .linear import HISTORY_KEY, Linear, amax_histories
from .recipes import GEMMS, NAMED, GemmSetting, TrainingRecipe
from .scaled_gemm import UnsupportedScaledMM
from .stats import GemmStats

__all__ = ["DEEPSEEK_KEEP", "Conversion", "GEMMS", "GemmSetting", "GemmStats", "HISTORY_KEY",
           "Linear", "NAMED", "OperandRecorder", "TrainingRecipe", "UnsupportedScaledMM",
           "amax_histories", "attach_stats", "convert", "emulate", "is_emulating", "layers"]
