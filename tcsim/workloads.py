"""Seeded input distributions for GEMM experiments.

normal: N(0, 1). uniform: U(0, 1) (all positive: truncation toward zero biases every partial
sum the same way, the worst case for a truncating accumulator). heavy: Student-t with 3 degrees
of freedom (heavy tails). outliers: N(0, 1) activations with a few outlier channels (columns of
x along K) scaled by 100, as LLM activations have (and N(0, 1) weights).
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

DISTRIBUTIONS = ("normal", "uniform", "heavy", "outliers")
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
    else:
        raise ConfigError(f"unknown distribution {dist!r}; known: {', '.join(DISTRIBUTIONS)}")
    return x.astype(np.float32), w.astype(np.float32)
