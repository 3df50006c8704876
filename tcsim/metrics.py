"""Error metrics of a simulated GEMM against a float64 reference."""

from __future__ import annotations

import numpy as np


def max_relative_error(y, ref) -> float:
    """max over outputs of |y - ref| / |ref| (outputs with ref == 0 skipped)."""
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    nz = ref != 0
    return float(np.max(np.abs(y[nz] - ref[nz]) / np.abs(ref[nz]))) if nz.any() else 0.0


def relative_frobenius_error(y, ref) -> float:
    """||y - ref||_F / ||ref||_F."""
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(y - ref) / den) if den else 0.0


def errors(y, ref) -> dict:
    """Both metrics as a dict (keys "max_rel", "rel_fro")."""
    return {"max_rel": max_relative_error(y, ref), "rel_fro": relative_frobenius_error(y, ref)}
