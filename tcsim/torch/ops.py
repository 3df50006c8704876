"""The simulated GEMMs of a tcsim.torch.Linear as opaque PyTorch custom ops (torch.library).

``tcsim::linear_fprop(x, w, b, layer, record, fp8_cache) -> (y, x_saved, ticket)`` runs fprop (adds
the bias) and ``tcsim::linear_backward(dy, x_saved, w, ticket, layer, need_dx, need_dw,
need_db) -> (dx, dw, db)`` runs dgrad and wgrad (and sums dy for the bias gradient), each GEMM
as the layer's recipe says (numpy / numba inside: torch.compile cannot trace them, so they are
opaque to it). Every arithmetic step of the layer is inside the ops, in eager torch: a compiled
model cannot reorder a sum (the bias gradient) or skip a rounding (y cast to x's dtype before
the bias is added), so it gives eager mode's bits. Each op has a fake (meta) implementation
giving the output shapes and dtypes, and fprop has a registered autograd formula that calls the
backward op, so ``torch.compile(model)`` traces around the simulated GEMMs (no graph break)
and its forward and backward run the very same simulation as eager mode (same bits).

A custom op takes tensors and plain numbers only, so the layer travels as a handle: a 0-d int64
CPU tensor naming it in a weak registry (:func:`handle`; a handle is never reused). A tensor,
not an int, so that dynamo lifts it as a graph input instead of baking it into the graph: one
compiled code serves every layer of the same shapes (an int attribute would recompile per
layer). The layer's ``fp8_cache`` (saved_activation "fp8") is an argument for the fake
implementation, which cannot look a handle up. And what fprop leaves for the
backward pass (the amax-history snapshot, dgrad's reusable FP8 weight, the true x for the
statistics) as a ``ticket``: a 0-d int64 tensor naming an entry kept here as long as the ticket
tensor lives (autograd keeps it with the graph, as it keeps a Function's ctx).

Outputs never alias inputs (a custom op's rule): when wgrad uses the layer's input x itself
(``saved_activation="input"``) ``x_saved`` is an empty 1-D tensor and the autograd formula
saves x instead. y is in x's dtype; dx and dw are float32 (cast to x's and w's dtypes by the
autograd formula: one rounding, the same in eager and compiled code), db is in dy's dtype.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Optional

import torch

_LAYERS: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_HANDLES = itertools.count(1)
_PENDING: dict = {}
_TICKETS = itertools.count(1)
_LOCK = threading.Lock()


def handle(layer) -> torch.Tensor:
    """A new handle for ``layer``: a 0-d int64 CPU tensor (registered weakly: the layer may be
    freed)."""
    with _LOCK:
        h = next(_HANDLES)
        _LAYERS[h] = layer
    return torch.tensor(h, dtype=torch.int64)


def _layer(h: torch.Tensor):
    layer = _LAYERS.get(int(h))
    if layer is None:
        raise RuntimeError(f"tcsim.torch: layer handle {int(h)} names no live "
                           f"tcsim.torch.Linear")
    return layer


def _ticket(entry: tuple) -> torch.Tensor:
    """A 0-d int64 tensor naming ``entry`` until it is claimed or the tensor is freed."""
    with _LOCK:
        key = next(_TICKETS)
        _PENDING[key] = entry
    t = torch.tensor(key, dtype=torch.int64)
    weakref.finalize(t, _PENDING.pop, key, None)
    return t


def _claim(ticket: torch.Tensor) -> tuple:
    """The entry ``ticket`` names (kept: a retain_graph=True graph may be backpropagated
    again; it goes with the ticket tensor, when autograd frees the graph)."""
    entry = _PENDING.get(int(ticket))
    if entry is None:
        raise RuntimeError("tcsim.torch.Linear: the state this backward pass needs (saved by "
                           "its forward pass) is gone")
    return entry


def _empty(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=torch.float32, device=like.device)


@torch.library.custom_op("tcsim::linear_fprop", mutates_args=())
def linear_fprop(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
                 layer: torch.Tensor, record: bool, fp8_cache: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = x w^T (+ b) as the layer's fprop setting says; x: (tokens, in), w: (out, in), b: (out,)
    or None. The GEMM's float32 result is cast to x's dtype, then b is added (as nn.Linear's
    y + b would be, in torch).

    Returns (y, x_saved, ticket): x_saved is the x wgrad uses when it is not x itself (the FP8
    cache: ``fp8_cache``, the layer's saved_activation "fp8"), else an empty 1-D tensor; ticket
    names what the backward pass needs."""
    lin = _layer(layer)
    if lin.caches_fp8_x() != fp8_cache:
        raise RuntimeError("tcsim::linear_fprop: fp8_cache disagrees with the layer's recipe")
    with torch.autocast(x.device.type, enabled=False):     # the float32 GEMMs stay float32
        y, saved, x_true, hist = lin._fprop(x, w, record)
        y = y.to(x.dtype)
        if b is not None:
            y = y + b
    saved = _empty(x) if saved is x else saved.to(torch.float32)
    return y, saved, _ticket((hist, x_true))


@linear_fprop.register_fake
def _(x, w, b, layer, record, fp8_cache):
    dtype = x.dtype if b is None else torch.promote_types(x.dtype, b.dtype)
    y = x.new_empty((x.shape[0], w.shape[0]), dtype=dtype)
    saved = x.new_empty(x.shape, dtype=torch.float32) if fp8_cache else \
        x.new_empty((0,), dtype=torch.float32)
    return y, saved, torch.empty((), dtype=torch.int64)


@torch.library.custom_op("tcsim::linear_backward", mutates_args=())
def linear_backward(dy: torch.Tensor, x_saved: torch.Tensor, w: torch.Tensor,
                    ticket: torch.Tensor, layer: torch.Tensor, need_dx: bool, need_dw: bool,
                    need_db: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx = dy w and dw = dy^T x_saved (float32) as the layer's dgrad and wgrad settings say,
    and db = the sum of dy over tokens (torch's sum, in dy's dtype); an output not needed is an
    empty 1-D tensor."""
    lin = _layer(layer)
    hist, x_true = _claim(ticket)
    with torch.autocast(dy.device.type, enabled=False):
        db = dy.sum(0) if need_db else None
        dx, dw = lin._backward(dy.contiguous(), x_saved, w, hist, x_true, need_dx, need_dw)
    return (_empty(dy) if dx is None else dx.to(torch.float32),
            _empty(dy) if dw is None else dw.to(torch.float32),
            dy.new_empty(0) if db is None else db)


@linear_backward.register_fake
def _(dy, x_saved, w, ticket, layer, need_dx, need_dw, need_db):
    dx = dy.new_empty((dy.shape[0], w.shape[1]) if need_dx else (0,), dtype=torch.float32)
    dw = dy.new_empty(tuple(w.shape) if need_dw else (0,), dtype=torch.float32)
    db = dy.new_empty((dy.shape[1],) if need_db else (0,))
    return dx, dw, db


def _setup_context(ctx, inputs, output) -> None:
    x, w, b, layer, _, fp8_cache = inputs
    _, saved, ticket = output
    ctx.x_dtype, ctx.w_dtype = x.dtype, w.dtype
    ctx.b_dtype = None if b is None else b.dtype
    ctx.save_for_backward(saved if fp8_cache else x, w, ticket, layer)


def _backward(ctx, dy, _saved_grad, _ticket_grad):
    x_saved, w, ticket, layer = ctx.saved_tensors
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    dx, dw, db = torch.ops.tcsim.linear_backward(dy, x_saved, w, ticket, layer, need_dx,
                                                 need_dw, need_db and ctx.b_dtype is not None)
    return (dx.to(ctx.x_dtype) if need_dx else None, dw.to(ctx.w_dtype) if need_dw else None,
            db.to(ctx.b_dtype) if need_db and ctx.b_dtype is not None else None, None, None,
            None)


linear_fprop.register_autograd(_backward, setup_context=_setup_context)
