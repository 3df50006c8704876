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
histories travel in the state_dict's metadata, not as keys (:data:`HISTORY_KEY`), so a
checkpoint resumes exactly and state_dicts load strictly between converted and plain models.

Like torch.nn.Linear: the three GEMMs are the opaque custom ops of :mod:`tcsim.torch.ops`, so
``torch.compile`` works on a converted model and gives eager mode's bits; under
``torch.autocast`` x, w and the bias are cast to the autocast dtype first, as nn.Linear's
operands are, and y comes back in that dtype; a wrong dtype or in_features raises
nn.Linear's RuntimeError; an empty batch gives an empty y and a zero weight gradient; NaN/Inf
propagate through the simulated GEMMs or raise (``nonfinite``, :mod:`tcsim.torch.nonfinite`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError
from . import ops
from ._gemms import fp8_gemm, fp32_dequantized, k_multiple, reusable_transpose, uses_history
from .device import check_device, gemm_operand, pad_k_cuda, stays_on_gpu, to_tensor
from .device import host32 as _np32
from .nonfinite import all_finite, check_mode, raise_nonfinite
from .recipes import GEMMS, TrainingRecipe
from .stats import ordered_matmul

#: The key of a layer's amax histories in its state_dict's metadata
#: (``state_dict._metadata[module_path][HISTORY_KEY]``: {"x": [...], "w": [...], "dy": [...]}).
#: Metadata, not a key, so that plain torch.nn.Linear models load the state_dict strictly; it
#: survives torch.save / torch.load like the module versions kept there, but not a copy into
#: a plain dict (the histories then start empty). :func:`amax_histories` reads them.
HISTORY_KEY = "tcsim_amax_history"

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
    nonfinite: "propagate" (default: NaN/Inf go through the simulated GEMMs as the hardware
        carries them) or "raise" (a FormatError naming the layer and the tensor: x, w or dy);
        :mod:`tcsim.torch.nonfinite` says exactly what is computed.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 recipe: Optional[TrainingRecipe] = None, name: str = "", device=None,
                 dtype=None, gemm_device: Optional[str] = None, nonfinite: str = "propagate"):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_state(recipe, name, gemm_device, nonfinite)

    def _init_state(self, recipe: Optional[TrainingRecipe], name: str,
                    gemm_device: Optional[str] = None, nonfinite: str = "propagate") -> None:
        """What a tcsim Linear holds beside torch.nn.Linear's parameters."""
        self.recipe = recipe
        self.name = name
        self.gemm_device = gemm_device
        self.nonfinite = nonfinite
        self.stats = None
        self.capture = None
        self.keep_details, self.details = False, {}
        self.amax_history = {t: [] for t in _TENSORS}
        self._handle = ops.handle(self)

    # a copy (pickle, deepcopy) gets its own handle for the custom ops
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_handle", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._handle = ops.handle(self)

    @property
    def nonfinite(self) -> str:
        """What NaN/Inf in a GEMM operand do: "propagate" or "raise" (tcsim.torch.nonfinite)."""
        return self.__dict__.get("_nonfinite", "propagate")

    @nonfinite.setter
    def nonfinite(self, value: str) -> None:
        self._nonfinite = check_mode(value)

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
                    name: str = "", gemm_device: Optional[str] = None,
                    nonfinite: str = "propagate") -> "Linear":
        """A tcsim Linear sharing ``layer``'s weight and bias Parameters (an optimizer built on
        the old layer keeps working)."""
        new = cls.__new__(cls)
        torch.nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight = layer.weight
        new.bias = layer.bias
        new._init_state(recipe, name, gemm_device, nonfinite)
        return new

    def extra_repr(self) -> str:
        where = "" if self.gemm_device is None else f", gemm_device={self.gemm_device}"
        return f"{super().extra_repr()}, recipe={self.recipe.name}{where}"

    # the state_dict's metadata carries the amax histories (exact float64 values), HISTORY_KEY
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", None)
        if meta is not None and any(self.amax_history.values()):
            meta.setdefault(prefix[:-1], {})[HISTORY_KEY] = {
                t: list(map(float, v)) for t, v in self.amax_history.items()}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        state = (local_metadata or {}).get(HISTORY_KEY)
        old = prefix + "_extra_state"       # a checkpoint of an earlier tcsim: a key of its own
        if old in state_dict:
            state = state_dict[old]
            if old in unexpected_keys:
                unexpected_keys.remove(old)
        state = state or {}
        self.amax_history = {t: list(map(float, state.get(t, []))) for t in _TENSORS}

    def caches_fp8_x(self) -> bool:
        """Whether wgrad uses the FP8 cache of x (saved_activation "fp8"), not x itself."""
        return self.recipe.saved_activation == "fp8"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        cast = _autocast_dtype(x)
        if cast is not None:        # as autocast casts nn.Linear's operands (F.linear)
            x, w = _cast(x, cast), _cast(w, cast)
            b = None if b is None else _cast(b, cast)
        elif x.dtype != w.dtype:
            raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got "
                               f"{_type_name(x.dtype)} and {_type_name(w.dtype)}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            rows = x.shape[:-1].numel() if x.dim() else 1
            cols = x.shape[-1] if x.dim() else 1
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{cols} and "
                               f"{self.in_features}x{self.out_features})")
        lead = x.shape[:-1]
        # an evaluation pass (no grad, or eval mode) leaves the amax histories alone
        record = self.training and torch.is_grad_enabled()
        y, _, _ = torch.ops.tcsim.linear_fprop(x.reshape(-1, self.in_features), w, b,
                                               self._handle, record, self.caches_fp8_x())
        return y.reshape(*lead, self.out_features)

    # ---- the three GEMMs ----------------------------------------------------------------------
    def _snapshot(self, *tensors: str) -> dict:
        return {t: np.array(self.amax_history[t], dtype=np.float64) for t in tensors}

    def _note_amax(self, tensor: str, amax: float) -> None:
        # a tensor holding NaN/Inf (nonfinite="propagate") leaves its history alone
        if self._history_len and np.isfinite(amax):
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
        finite = self._finite(gemm, a, b)
        sampling = self._sampling() and finite       # no statistics of NaN/Inf
        if s.precision == "fp8" and 0 in (a.shape[0], a.shape[1], _columns(b)):
            # an empty GEMM: an empty result, or zeros (a sum over K = 0), as torch's matmul
            return torch.zeros((a.shape[0], _columns(b)), dtype=torch.float32,
                               device=a.device), None
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
        # NaN/Inf are carried into FP8 on the host (tcsim.torch.nonfinite.quantize_around)
        host = "cpu" if not finite and dev is None else dev
        an = gemm_operand(a, host)
        bn = gemm_operand(b, host) if isinstance(b, torch.Tensor) else b    # b: Quantized w
        if stays_on_gpu(a, host) and isinstance(b, torch.Tensor):
            an, bn = pad_k_cuda(an, bn, k_multiple(s.recipe))
        threads = torch.get_num_threads()
        y, det = fp8_gemm(s, an, bn, hist.get(ta), hist.get(tb), host, nonfinite=not finite)
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

    def _finite(self, gemm: str, a: torch.Tensor, b) -> bool:
        """Whether the operands of ``gemm`` are finite; with nonfinite="raise" a FormatError
        names the first NaN/Inf (b as a Quantized w was checked as w in fprop)."""
        ta, tb = _OPERANDS[gemm]
        ok = True
        for t, name, transposed in ((a, ta, gemm == "wgrad"), (b, tb, gemm == "fprop")):
            if isinstance(t, torch.Tensor) and not all_finite(t):
                if self.nonfinite == "raise":
                    raise_nonfinite(t, name, gemm, self.name, transposed)
                ok = False
        return ok

    def _record(self, gemm, a, b, y, ref_acc, b_true) -> None:
        an, bn = _np32(a), _np32(b if b_true is None else b_true)
        if self.capture is not None:
            self.capture(self.name, gemm, an, bn)
        e2e = ordered_matmul(an, bn)
        self.stats.record(self.name, gemm, a.shape[1], y, ref_acc, e2e)

    def _fprop(self, x: torch.Tensor, w: torch.Tensor, record: bool = True):
        if record and self.stats is not None:
            self.stats.check_started()
        hist = self._snapshot("x", "w")
        y, det = self._gemm("fprop", x, w.t(), hist)
        saved, x_true = x, None
        if self.caches_fp8_x():
            x_true = x if self._sampling() else None
            # the x wgrad sees: the fprop codes times their scales, as fp32 (the FP8 cache);
            # an empty x has no codes
            saved = to_tensor(fp32_dequantized(det.a)[:, :x.shape[1]], like=x) \
                if det is not None else torch.zeros(x.shape, dtype=torch.float32,
                                                     device=x.device)
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


def amax_histories(state_dict) -> dict:
    """The amax histories a state_dict holds (in its metadata, :data:`HISTORY_KEY`), by module
    path: {path: {"x": [...], "w": [...], "dy": [...]}} (layers with empty histories are not
    listed; a plain dict copy of a state_dict has none)."""
    meta = getattr(state_dict, "_metadata", None) or {}
    return {path: m[HISTORY_KEY] for path, m in meta.items() if HISTORY_KEY in m}


def _columns(b) -> int:
    """N of a GEMM operand b (a tensor, or dgrad's Quantized w)."""
    return int(b.shape[1] if isinstance(b, torch.Tensor) else b.values.shape[1])


def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast casts nn.Linear's operands to for ``x``, or None (no autocast)."""
    kind = x.device.type
    if not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` as autocast hands it to a lower-precision op: floating tensors other than float64
    in ``dtype``, others unchanged."""
    eligible = t.is_floating_point() and t.dtype != torch.float64
    return t.to(dtype) if eligible else t


def _type_name(dtype: torch.dtype) -> str:
    """torch's own name of a dtype in its error messages ("Float", "BFloat16")."""
    return torch.empty(0, dtype=dtype).type().rsplit(".", 1)[-1].replace("Tensor", "")
