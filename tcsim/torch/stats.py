"""Per-GEMM error statistics of a training run, sampled every N steps, as a tidy table.

For a sampled GEMM with simulated result y (float32) two float64 references are formed:

* ``acc``: the exact product of the *same quantised operands* (tcsim.metrics.exact_product,
  rounded once to float64): the error of the accumulation alone (tensor-core alignment,
  promotion, epilogue).
* ``e2e``: the product of the unquantised operands the layer received (float64): quantisation
  plus accumulation.

With err = y - ref and rms = sqrt(mean(ref^2)), each reference gives three columns:
``*_rel_err`` = ||err||_F / ||ref||_F, ``*_bias`` = mean(err) / rms (the mean signed error),
``*_var`` = var(err) / rms^2 (the variance of the error), all dimensionless. For bf16/fp32 GEMMs
the ``acc`` reference is the product of the rounded operands (bf16 values; fp32: the operands).

A fourth column per reference, ``*_cos``, is the cosine similarity of y and ref, both flattened:
sum(y * ref) / (||y||_F ||ref||_F), 1.0 when y and ref are both all-zero and 0.0 when only one
is. It measures direction, not size: for wgrad it says how well the simulated weight gradient
keeps the direction of the exact one, which is what SGD and Adam follow, where a relative error
also counts a change of length (which the learning rate, or Adam's normalisation, largely
absorbs). It follows Sakr et al., "Accumulation bit-width scaling for ultra-low precision
training of deep networks" (ICLR 2019), who judge an accumulator width by its variance retention
ratio: the fraction of a dot product's variance that survives swamping (addends lost below the
accumulator's alignment); a weight gradient whose entries lose variance that way turns away
from the exact gradient, and ``wgrad``'s ``acc_cos`` falls below 1.

Every float64 number here has the same bits on every machine, thread count and BLAS: the
float64 products are summed over K in ascending order (:func:`ordered_matmul`) and the norms
are numpy's fixed pairwise sums, not a BLAS dgemm / ddot, whose blocking, vector width and
thread split (OpenBLAS splits a long dot product across its threads) vary with the CPU, the
library build and OPENBLAS_NUM_THREADS (a Dask worker sets it to 1).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

COLUMNS = ("step", "layer", "gemm", "m", "n", "k", "acc_rel_err", "acc_bias", "acc_var",
           "acc_cos", "e2e_rel_err", "e2e_bias", "e2e_var", "e2e_cos")


def ordered_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64, each output summed over k = 0, 1, ... in that order (a numba loop, no
    BLAS: tcsim._kernels.ordered). Products of float32 or bf16 values are exact in float64, so
    only the sums round, the same way everywhere."""
    from .._kernels.ordered import ordered_matmul_kernel
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    out = np.zeros((a.shape[0], b.shape[1]))
    ordered_matmul_kernel(a, b, out)
    return out


def _norm(x: np.ndarray) -> float:
    """The Frobenius norm with numpy's pairwise sum (np.linalg.norm calls BLAS ddot)."""
    return float(np.sqrt(np.sum(np.square(x))))


def cosine(y: np.ndarray, ref: np.ndarray) -> float:
    """The cosine similarity of y and ref, flattened, in float64 with numpy's pairwise sums:
    1.0 when both are all-zero, 0.0 when only one is (module docstring)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    yy, rr = float(np.sum(np.square(y))), float(np.sum(np.square(ref)))
    if yy == 0.0 or rr == 0.0:
        return 1.0 if yy == rr else 0.0
    # ||y|| ||ref|| as sqrt(yy * rr), one rounding less than sqrt(yy) * sqrt(rr): for y == ref,
    # sqrt(fl(yy^2)) == yy exactly (a correctly rounded square root of a rounded square gives
    # the number back), so the cosine is exactly 1. Cauchy-Schwarz bounds it by 1 in magnitude;
    # the roundings of the sums could step an ulp past that, hence the clip.
    dot = float(np.sum(y * ref))
    return float(np.clip(dot / np.sqrt(yy * rr), -1.0, 1.0))


def error_stats(y: np.ndarray, ref: np.ndarray, prefix: str) -> dict:
    """{prefix_rel_err, prefix_bias, prefix_var} of y against ref (module docstring); the
    cosine similarity is :func:`cosine`."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    err = y - ref
    norm = _norm(ref)
    rms = norm / np.sqrt(ref.size) if ref.size else 0.0
    if rms == 0.0:
        return {f"{prefix}_rel_err": 0.0 if not err.any() else np.inf,
                f"{prefix}_bias": 0.0, f"{prefix}_var": 0.0}
    return {f"{prefix}_rel_err": float(_norm(err) / norm),
            f"{prefix}_bias": float(err.mean() / rms),
            f"{prefix}_var": float(err.var() / rms ** 2)}


class GemmStats:
    """Collects per-GEMM statistics from the tcsim.torch layers of a model.

    every: sample every this many steps (steps 0, every, 2*every, ...); call
    :meth:`begin_step` before each step's forward pass. Attach with
    :func:`tcsim.torch.attach_stats` (or ``layer.stats = collector``).
    """

    def __init__(self, every: int = 10):
        if every < 1:
            from ..errors import ConfigError
            raise ConfigError(f"every: must be >= 1, got {every}")
        self.every = every
        self.step: Optional[int] = None
        self.rows: list[dict] = []
        self._begun = False

    @property
    def active(self) -> bool:
        """Whether the current step is sampled (``step = None``: no step, nothing sampled)."""
        return self.step is not None and self.step % self.every == 0

    def begin_step(self, step: int) -> None:
        """Start step ``step`` (sampled when a multiple of ``every``)."""
        self.step = int(step)
        self._begun = True

    def check_started(self) -> None:
        """Warn (once) when no :meth:`begin_step` was ever called: a layer calls this at each
        training pass, which would otherwise be silently left out of the statistics. (Setting
        ``step = None`` after a begin_step, to leave evaluation passes out, warns nothing.)"""
        if self.__dict__.get("_begun", True) or self.__dict__.get("_warned"):
            return
        self._warned = True
        warnings.warn("tcsim.torch.GemmStats: a training pass ran before any begin_step(step) "
                      "call, so nothing is sampled; call stats.begin_step(step) before each "
                      "step's forward pass", UserWarning, stacklevel=3)

    def record(self, layer: str, gemm: str, k: int, y, ref_acc, ref_e2e) -> None:
        """Add one GEMM's row (K; y and the two references: (M, N) arrays)."""
        m, n = np.shape(y)
        row = {"step": self.step, "layer": layer, "gemm": gemm, "m": m, "n": n, "k": int(k)}
        for prefix, ref in (("acc", ref_acc), ("e2e", ref_e2e)):
            row.update(error_stats(y, ref, prefix))
            row[f"{prefix}_cos"] = cosine(y, ref)
        self.rows.append(row)

    def frame(self):
        """The rows as a pandas DataFrame with the columns of COLUMNS (tidy: one GEMM each)."""
        import pandas as pd
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def clear(self) -> None:
        self.rows = []
