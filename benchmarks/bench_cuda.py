"""Benchmark: the GPU backend (tcsim.cuda) against float32 matmul on the same GPU.

    python benchmarks/bench_cuda.py [--repeat 3] [--skip-train] [--tiny]

Three figures, each simulated vs float32 on the same device:
1. the simulated H100 FP8 MMA (e4m3 x e4m3 -> fp32, M = N = K = 4096) on device arrays, against
   float32 matmul with TF32 off (CuPy, else PyTorch CUDA);
2. the DeepSeek-V3 GEMM (M = 4096, N = K = 7168: 1x128 / 128x128 scaling, promotion every 128)
   through tcsim.gemm(device="cuda"), against the same float32 matmul;
3. one training step of a GPT-2-small-sized model (12 layers, width 768, 8 x 1024 tokens) with
   its Linear layers converted to the DeepSeek-V3 recipe, simulated on the GPU vs float32.
Goals on a Hopper GPU: MMA >= 0.15 of float32 matmul, the training step within 8x of float32.
Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, no GPU) only --tiny makes sense: the
sizes shrink so that the script provably runs, the float32 reference is numpy on the host, and
the figures mean nothing. The results are also checked, bit for bit, against the CPU backend on
a slice. Last line JSON: {"mma_macs_per_s", "mma_ratio_vs_f32", "gemm_macs_per_s",
"gemm_ratio_vs_f32", "train_ratio", "bits_equal", "device", "shapes"}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import ml_dtypes
import numpy as np

import tcsim
from _timing import parse_with_tiny

SIZES = {"default": {"mma": (4096, 4096, 4096), "gemm": (4096, 7168, 7168),
                     "train": dict(n_layer=12, d_model=768, n_head=12, seq_len=1024, n_seq=8)},
         "tiny": {"mma": (8, 8, 64), "gemm": (2, 128, 128),
                  "train": dict(n_layer=1, d_model=16, n_head=2, seq_len=8, n_seq=1)}}


def _sync():
    from numba import cuda
    cuda.synchronize()


def _timed(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs of fn() (device work synchronised), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _f32_matmul(m, n, k, repeat):
    """(seconds, label) of a float32 matmul with TF32 off on the GPU (CuPy, else torch), or of
    numpy on the host under the simulator."""
    from tcsim.cuda import simulated
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    if not simulated():
        try:
            import cupy
            os.environ.setdefault("CUPY_TF32", "0")
            da, db = cupy.asarray(a), cupy.asarray(b)
            return _timed(lambda: da @ db, repeat), "CuPy float32 matmul (TF32 off)"
        except ImportError:
            import torch
            torch.backends.cuda.matmul.allow_tf32 = False
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            return _timed(lambda: ta @ tb, repeat), "torch float32 matmul (TF32 off)"
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return (time.perf_counter() - t0) / repeat, "numpy float32 matmul on the host (simulator)"


def bench_mma(shape, repeat):
    from numba import cuda
    m, n, k = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    da, db = cuda.to_device(a), cuda.to_device(b)
    run = lambda: tcsim.mma(da, db, model="h100", a_format="e4m3", b_format="e4m3")  # noqa: E731
    d = run()                                           # compiles the kernels
    t_sim = _timed(run, repeat)
    t_f32, label = _f32_matmul(m, n, k, max(repeat, 3))
    # bits: a slice of rows against the CPU backend
    rows = min(m, 8)
    cpu = tcsim.mma(a[:rows], b, model="h100", a_format="e4m3", b_format="e4m3", device="cpu")
    equal = bool((d.copy_to_host()[:rows].view(np.uint32) == cpu.view(np.uint32)).all())
    return m * n * k / t_sim, t_f32 / t_sim, label, equal


def bench_gemm(shape, repeat):
    m, n, k = shape
    rng = np.random.default_rng(2)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.02
    run = lambda: tcsim.gemm(x, w, model="h100", recipe="deepseek_v3", device="cuda",  # noqa
                             progress=False)
    y = run()
    t_sim = _timed(run, repeat)
    t_f32, _ = _f32_matmul(m, n, k, max(repeat, 3))
    rows = min(m, 4)
    cpu = tcsim.gemm(x[:rows], w, model="h100", recipe="deepseek_v3", device="cpu",
                     progress=False)
    equal = bool((y[:rows].view(np.uint32) == cpu.view(np.uint32)).all())
    return m * n * k / t_sim, t_f32 / t_sim, equal


def bench_train(size, repeat):
    """Simulated / float32 step time ratio of the GPT (None without PyTorch)."""
    try:
        import torch
    except ImportError:
        return None
    import tcsim.torch as tt
    from tcsim.train.config import ModelConfig
    from tcsim.train.data import VOCAB, Corpus
    from tcsim.train.model import GPT
    n_seq = size.pop("n_seq")
    cfg = ModelConfig(**size)
    corpus = Corpus(max(20_000, 4 * n_seq * cfg.seq_len), 0.1)
    x, y = map(torch.from_numpy, corpus.batch("train", 0, 0, n_seq, cfg.seq_len))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = x.to(dev), y.to(dev)

    def step_time(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev == "cuda":
                torch.cuda.synchronize()
        step()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - t0)
        return best

    torch.manual_seed(0)
    t_f32 = step_time(GPT(cfg, VOCAB).to(dev))
    torch.manual_seed(0)
    sim = GPT(cfg, VOCAB).to(dev)
    tt.convert(sim, tt.TrainingRecipe.named("deepseek_v3", model="h100"))
    saved = os.environ.get("TCSIM_DEVICE")
    os.environ["TCSIM_DEVICE"] = "cuda"         # host tensors (simulator): GEMMs on the device
    try:
        t_sim = step_time(sim)
    finally:
        if saved is None:
            os.environ.pop("TCSIM_DEVICE", None)
        else:
            os.environ["TCSIM_DEVICE"] = saved
    return t_sim / t_f32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true", help="leave out the training step")
    ap.set_defaults(size="default")
    args = parse_with_tiny(ap, repeat=1, size="tiny")
    from tcsim.cuda import require, simulated
    require()
    if simulated():     # the simulator runs a CUDA block as Python threads: switch often
        import sys
        sys.setswitchinterval(1e-4)
    sizes = SIZES[args.size]
    device = "numba CUDA simulator" if simulated() else _device_name()
    print(f"device: {device}")
    mma_rate, mma_ratio, label, mma_equal = bench_mma(sizes["mma"], args.repeat)
    print(f"h100 FP8 MMA {sizes['mma']}: {mma_rate / 1e9:.3f} G MAC/s, {mma_ratio:.3f} of "
          f"{label}; bits equal to the CPU backend: {mma_equal}")
    gemm_rate, gemm_ratio, gemm_equal = bench_gemm(sizes["gemm"], args.repeat)
    print(f"DeepSeek-V3 GEMM {sizes['gemm']}: {gemm_rate / 1e9:.3f} G MAC/s, {gemm_ratio:.3f} "
          f"of float32 matmul; bits equal to the CPU backend: {gemm_equal}")
    train_ratio = None
    if not args.skip_train:
        train_ratio = bench_train(dict(sizes["train"]), args.repeat)
        print("training step: " + ("PyTorch not installed" if train_ratio is None else
                                   f"simulated / float32 = {train_ratio:.1f}x"))
    print(json.dumps({"mma_macs_per_s": mma_rate, "mma_ratio_vs_f32": mma_ratio,
                      "gemm_macs_per_s": gemm_rate, "gemm_ratio_vs_f32": gemm_ratio,
                      "train_ratio": train_ratio, "bits_equal": mma_equal and gemm_equal,
                      "device": device, "shapes": {"mma": sizes["mma"],
                                                   "gemm": sizes["gemm"]}}))


def _device_name() -> str:
    from numba import cuda
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return f"{name} (cc {dev.compute_capability[0]}.{dev.compute_capability[1]})"


if __name__ == "__main__":
    main()
