"""Seeded input distributions for GEMM experiments.

normal: N(0, 1). uniform: U(0, 1) (all positive: truncation toward zero biases every partial
sum the same way, the worst case for a truncating accumulator). heavy: Student-t with 3 degrees
of freedom (heavy tails). outliers: N(0, 1) activations with a few outlier channels (columns of
x along K) scaled by 100, as LLM activations have (and N(0, 1) weights).
biased: N(0.75, 1) x N(0.75, 1) (sign-biased: most products positive, but not all; at K = 4096
H100's fast accumulation loses about 2% to truncation, DeepSeek-V3's "nearly 2%"). relu / gelu:
post-activation x = relu(z) / gelu(z) of z ~ N(0, 1) (non-negative, or nearly), N(0, 1) weights.
Operands captured from a training run (tcsim.torch.OperandRecorder) are another workload:
tcsim.deepseek.operands_table runs the same configurations on them.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

DISTRIBUTIONS = ("normal", "uniform", "heavy", "outliers", "biased", "relu", "gelu")
BIAS_MEAN = 0.75
OUTLIER_SCALE = 100.0
OUTLIER_FRACTION = 0.01


def make_inputs(dist: str, m: int, k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x (M, K) and w (K, N) as float32 arrays drawn from ``dist`` with ``seed``."""
    rng = np.random.default_rng(seed)
    if dist == "normal":
        x, w = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    elif dist == "uniform":
        x, w = rng.random((m, k)), rng.random((k, n))
    elif dist == "heavy":
        x, w = rng.standard_t(3, (m, k)), rng.standard_t(3, (k, n))
    elif dist == "outliers":
        x, w = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        count = max(1, int(round(OUTLIER_FRACTION * k)))
        x[:, rng.choice(k, size=count, replace=False)] *= OUTLIER_SCALE
    elif dist == "biased":
        x = rng.standard_normal((m, k)) + BIAS_MEAN
        w = rng.standard_normal((k, n)) + BIAS_MEAN
    elif dist in ("relu", "gelu"):
        z, w = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        # gelu(z) = z * Phi(z), Phi the standard normal CDF (the exact, erf form)
        x = np.maximum(z, 0.0) if dist == "relu" else z * 0.5 * (1.0 + _erf(z / np.sqrt(2.0)))
    else:
        raise ConfigError(f"unknown distribution {dist!r}; known: {', '.join(DISTRIBUTIONS)}")
    return x.astype(np.float32), w.astype(np.float32)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf element-wise in float64 (math.erf; numpy has none)."""
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)
