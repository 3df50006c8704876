"""Save real training operands: a layer's x, w and dy at chosen steps, as .npz files.

    rec = tcsim.torch.OperandRecorder("operands/", layers=["blocks.0.mlp.*"], steps={0, 100})
    rec.attach(model, stats)       # stats: the run's tcsim.torch.GemmStats (it sets the step)

Each tcsim.torch.Linear hands its GEMM operands to the recorder on the steps ``stats``
samples (a step must be a multiple of stats.every to be seen). ``<folder>/<layer>_step<N>.npz``
then holds x (tokens, in) and w (in, out) as fprop uses them (y = x @ w, float32, unquantised)
and dy (tokens, out), ready for ``python -m tcsim.deepseek --operands FILE``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .convert import layers as tcsim_layers


class OperandRecorder:
    """Collects fprop's x and w^T and dgrad's dy per layer and step, then writes one .npz."""

    def __init__(self, folder, layers: Optional[Iterable[str]] = None,
                 steps: Optional[Iterable[int]] = None):
        self.folder = Path(folder)
        self.patterns = None if layers is None else tuple(layers)
        self.steps = None if steps is None else set(int(s) for s in steps)
        self.stats = None
        self.pending: dict = {}
        self.written: list = []

    def attach(self, model, stats) -> "OperandRecorder":
        """Hook every matching tcsim.torch.Linear of ``model``; ``stats`` gives the step."""
        self.stats = stats
        for layer in tcsim_layers(model):
            if self.patterns is None or any(fnmatchcase(layer.name, p) for p in self.patterns):
                layer.stats = stats
                layer.capture = self
        return self

    def __call__(self, layer: str, gemm: str, a: np.ndarray, b: np.ndarray) -> None:
        step = self.stats.step if self.stats is not None else None
        if step is None or (self.steps is not None and step not in self.steps):
            return
        key = (layer, step)
        got = self.pending.setdefault(key, {})
        if gemm == "fprop":
            got["x"], got["w"] = np.array(a), np.array(b)
        elif gemm == "dgrad":
            got["dy"] = np.array(a)
        if {"x", "w", "dy"} <= set(got):
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{layer.replace('.', '_')}_step{step}.npz"
            np.savez(path, **got)
            self.written.append(path)
            del self.pending[key]
