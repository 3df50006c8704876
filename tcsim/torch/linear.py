"""``tcsim.torch.Linear``: a drop-in torch.nn.Linear whose three GEMMs run on the modelled unit.

Forward y = x w^T (+ bias, in torch), backward dx = dy w and dw = dy^T x; each GEMM runs as the
layer's :class:`TrainingRecipe` says (tcsim.training_recipes: operands, K and scale groups per
GEMM). FP8 GEMMs go through :func:`tcsim.gemm` on the float32 operands, so the result of each is
exactly tcsim.gemm's on the same operands: CPU tensors as numpy arrays, CUDA tensors as CUDA
arrays (no host copy; the layer's ``gemm_device`` can send them elsewhere: tcsim.torch.device).
Inputs of any leading shape are flattened to (tokens, in_features).

Delayed scaling (an amax history, Transformer Engine): the layer keeps the amaxes of x, w and
dy, one per step, oldest first. fprop quantises x and w with the history as it stood before the
step; dgrad and wgrad reuse that snapshot for w and x, and quantise dy (dgrad and wgrad) with
dy's history before this backward pass; each tensor's amax is appended after its use
(training passes only: a forward pass in eval mode or without grad leaves the histories alone). The
histories are part of the layer's state_dict (extra state), so a checkpoint resumes exactly.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import ConfigError
from ._gemms import fp32_dequantized, fp8_gemm, k_multiple, reusable_transpose, uses_history
from .device import check_device, gemm_operand, pad_k_cuda, stays_on_gpu, to_tensor
from .device import host32 as _np32
from .recipes import GEMMS, TrainingRecipe
from .stats import ordered_matmul

_TENSORS = ("x", "w", "dy")
# operands of each GEMM: (tensor of operand a, tensor of operand b)
_OPERANDS = {"fprop": ("x", "w"), "dgrad": ("dy", "w"), "wgrad": ("dy", "x")}


def _hp_matmul(precision: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in float32, with bf16 (RNE) operands for precision "bf16"."""
    if precision == "bf16":
        a, b = a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float()
    return a.float() @ b.float()


class Linear(torch.nn.Linear):
    """torch.nn.Linear with its fprop, dgrad and wgrad GEMMs run as ``recipe`` says.

    recipe: a :class:`tcsim.torch.TrainingRecipe` (default: TrainingRecipe.deepseek_v3()).
    name: the layer's name in statistics tables (convert() sets the module path).
    stats: a :class:`tcsim.torch.GemmStats` collector, or None.
    keep_details: keep each FP8 GEMM's last tcsim.GemmDetails (quantised operands and
        scales) in ``details[gemm]``, for inspection.
    capture: None, or a callable ``capture(layer_name, gemm, a, b)`` called with each GEMM's
        float operands (numpy, a: (M, K), b: (K, N)) while stats are sampled (a hook to save
        real training operands).
    gemm_device: where the simulated GEMMs run, tcsim.gemm's ``device``: None (follow the
        tensors: CUDA tensors stay on the GPU), "cpu" or "cuda" (tcsim.torch.device).
        ``device`` and ``dtype`` are torch.nn.Linear's: where the Parameters live.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 recipe: Optional[TrainingRecipe] = None, name: str = "", device=None,
                 dtype=None, gemm_device: Optional[str] = None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_state(recipe, name, gemm_device)

    def _init_state(self, recipe: Optional[TrainingRecipe], name: str,
                    gemm_device: Optional[str] = None) -> None:
        """What a tcsim Linear holds beside torch.nn.Linear's parameters."""
        self.recipe = recipe
        self.name = name
        self.gemm_device = gemm_device
        self.stats = None
        self.capture = None
        self.keep_details, self.details = False, {}
        self.amax_history = {t: [] for t in _TENSORS}

    # the recipe is validated (and its datapaths resolved) whenever it is set
    @property
    def recipe(self) -> TrainingRecipe:
        return self._recipe

    @recipe.setter
    def recipe(self, value: Optional[TrainingRecipe]) -> None:
        value = TrainingRecipe.deepseek_v3() if value is None else value
        if not isinstance(value, TrainingRecipe):
            raise ConfigError(f"recipe: expected a tcsim.torch.TrainingRecipe, got "
                              f"{type(value).__name__}")
        self._recipe = value.check()
        self._history_len = max([self._history_need(g, r) for g in GEMMS for r in "ab"] + [0])

    # validated when set; a layer pickled before the attribute existed reads None
    @property
    def gemm_device(self) -> Optional[str]:
        return self.__dict__.get("_gemm_device")

    @gemm_device.setter
    def gemm_device(self, value: Optional[str]) -> None:
        self._gemm_device = check_device(value, "gemm_device")

    def _history_need(self, gemm: str, role: str) -> int:
        s = getattr(self._recipe, gemm)
        if s.precision != "fp8" or not uses_history(s.recipe, role):
            return 0
        return getattr(s.recipe, f"{role}_scaling").amax_history

    @classmethod
    def from_linear(cls, layer: torch.nn.Linear, recipe: Optional[TrainingRecipe] = None,
                    name: str = "", gemm_device: Optional[str] = None) -> "Linear":
        """A tcsim Linear sharing ``layer``'s weight and bias Parameters (an optimizer built on
        the old layer keeps working)."""
        new = cls.__new__(cls)
        torch.nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight = layer.weight
        new.bias = layer.bias
        new._init_state(recipe, name, gemm_device)
        return new

    def extra_repr(self) -> str:
        where = "" if self.gemm_device is None else f", gemm_device={self.gemm_device}"
        return f"{super().extra_repr()}, recipe={self.recipe.name}{where}"

    # state_dict carries the amax histories (exact float64 values)
    def get_extra_state(self):
        return {t: list(map(float, v)) for t, v in self.amax_history.items()}

    def set_extra_state(self, state) -> None:
        self.amax_history = {t: list(map(float, state.get(t, []))) for t in _TENSORS}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        # an evaluation pass (no grad, or eval mode) leaves the amax histories alone
        record = self.training and torch.is_grad_enabled()
        y = _LinearFunction.apply(x.reshape(-1, self.in_features), self.weight, self, record)
        y = y.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    # ---- the three GEMMs ----------------------------------------------------------------------
    def _snapshot(self, *tensors: str) -> dict:
        return {t: np.array(self.amax_history[t], dtype=np.float64) for t in tensors}

    def _note_amax(self, tensor: str, amax: float) -> None:
        if self._history_len:
            h = self.amax_history[tensor]
            h.append(float(amax))
            del h[:-self._history_len]

    def _sampling(self) -> bool:
        return self.stats is not None and self.stats.active

    def _gemm(self, gemm: str, a: torch.Tensor, b: torch.Tensor, hist: dict,
              b_true: Optional[torch.Tensor] = None):
        """One GEMM a @ b as the recipe says: (result tensor float32, details or None).

        b_true: the unquantised operand b stands for (wgrad's x when x is cached in FP8), for
        the e2e statistics and the capture hook (default b)."""
        s = getattr(self.recipe, gemm)
        ta, tb = _OPERANDS[gemm]
        sampling = self._sampling()
        if s.precision != "fp8":
            y = _hp_matmul(s.precision, a, b)
            if sampling:
                a64, b64 = _np32(a).astype(np.float64), _np32(b).astype(np.float64)
                if s.precision == "bf16":
                    ra = _np32(a.to(torch.bfloat16)).astype(np.float64)
                    rb = _np32(b.to(torch.bfloat16)).astype(np.float64)
                else:
                    ra, rb = a64, b64
                self._record(gemm, a, b, _np32(y), ordered_matmul(ra, rb), b_true)
            return y, None
        dev = self.gemm_device
        an = gemm_operand(a, dev)
        bn = gemm_operand(b, dev) if isinstance(b, torch.Tensor) else b    # b: Quantized w
        if stays_on_gpu(a, dev) and isinstance(b, torch.Tensor):
            an, bn = pad_k_cuda(an, bn, k_multiple(s.recipe))
        threads = torch.get_num_threads()
        y, det = fp8_gemm(s, an, bn, hist.get(ta), hist.get(tb), dev)
        if torch.get_num_threads() != threads:
            # numba starting its OpenMP threads (the first parallel call in a process) resets
            # the OpenMP thread count torch shares: torch.set_num_threads(n) would be lost for
            # the rest of the step, and torch's reductions would sum in another order
            torch.set_num_threads(threads)
        if self.keep_details:
            self.details[gemm] = det
        y = to_tensor(y, like=a)          # on a's device; a CPU result shares the numpy array
        if sampling:
            self._record(gemm, a, b, _np32(y), det.exact_product(), b_true)
        return y, det

    def _record(self, gemm, a, b, y, ref_acc, b_true) -> None:
        an, bn = _np32(a), _np32(b if b_true is None else b_true)
        if self.capture is not None:
            self.capture(self.name, gemm, an, bn)
        e2e = ordered_matmul(an, bn)
        self.stats.record(self.name, gemm, a.shape[1], y, ref_acc, e2e)

    def _fprop(self, x: torch.Tensor, w: torch.Tensor, record: bool = True):
        hist = self._snapshot("x", "w")
        y, det = self._gemm("fprop", x, w.t(), hist)
        saved, x_true = x, None
        if self.recipe.saved_activation == "fp8":
            x_true = x if self._sampling() else None
            # the x wgrad sees: the fprop codes times their scales, as fp32 (the FP8 cache)
            saved = to_tensor(fp32_dequantized(det.a)[:, :x.shape[1]], like=x)
        if det is not None:
            if record:
                self._note_amax("x", det.a.amax)
                self._note_amax("w", det.b.amax)
            # dgrad's quantised w, when it is fprop's transposed (saves a quantisation)
            if det.b.values.shape == (self.in_features, self.out_features):   # not padded
                hist = dict(hist, w_fp8=reusable_transpose(det.b, self.recipe.dgrad))
        return y, saved, x_true, hist

    def _backward(self, dy: torch.Tensor, x_saved: torch.Tensor, w: torch.Tensor, hist: dict,
                  x_true: Optional[torch.Tensor], need_dx: bool, need_dw: bool):
        hist = dict(hist, **self._snapshot("dy"))
        dx = dw = None
        amax_dy = None
        if need_dx:
            w_fp8 = hist.get("w_fp8")
            use_fp8 = w_fp8 is not None and not self._sampling()
            dx, det = self._gemm("dgrad", dy, w_fp8 if use_fp8 else w, hist)
            amax_dy = det.a.amax if det is not None else None
        if need_dw:
            dyt = dy.t()
            dw, det = self._gemm("wgrad", dyt, x_saved, hist, b_true=x_true)
            if det is not None and amax_dy is None:
                amax_dy = det.a.amax
        if amax_dy is not None:
            self._note_amax("dy", amax_dy)
        return dx, dw


class _LinearFunction(torch.autograd.Function):
    """y = x w^T with the layer's recipe; backward: dx = dy w, dw = dy^T x."""

    @staticmethod
    def forward(ctx, x, w, layer: Linear, record: bool):
        y, x_saved, x_true, hist = layer._fprop(x, w, record)
        ctx.layer, ctx.hist, ctx.x_true, ctx.x_dtype = layer, hist, x_true, x.dtype
        ctx.save_for_backward(x_saved, w)
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x_saved, w = ctx.saved_tensors
        dx, dw = ctx.layer._backward(dy.contiguous(), x_saved, w, ctx.hist, ctx.x_true,
                                     ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        dx = None if dx is None else dx.to(ctx.x_dtype)
        dw = None if dw is None else dw.to(w.dtype)
        return dx, dw, None, None
