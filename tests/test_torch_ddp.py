"""tcsim.torch under torch.nn.parallel.DistributedDataParallel: 2 CPU ranks (gloo), bit for bit.

The parent converts a tiny model (two tcsim Linear layers: DeepSeek-V3 blockwise scaling, and
Transformer Engine's delayed scaling with an amax history) and pickles it whole; each rank
process unpickles it, wraps it in DDP and trains two SGD steps on its shard of the batch. The
parent then runs the same two steps on the pickled model in one process, one copy per shard,
and checks, comparing float32 (and float64) bits:

(a) each rank's forward output is the single-process output on its shard (steps 1 and 2);
(b) each rank's gradients after DDP's all-reduce are the mean of the two single-process
    gradients, (g0 + g1) / 2 in float32. DDP's reducer multiplies each gradient by
    1 / world_size = 0.5 as it copies it into its bucket and gloo then sums the buckets:
    RN(g0 * 0.5 + g1 * 0.5) = RN(g0 + g1) * 0.5, the same bits (halving is exact in float32
    outside the subnormal range, and a two-term sum is commutative), and the test checks both
    forms agree;
(c) each rank's amax histories (module state, returned in its state_dict's metadata) and its
    GemmStats rows are those of the single-process run on its shard.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed without the gloo backend", allow_module_level=True)

import tcsim.torch as tt  # noqa: E402
from helpers import bits  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORLD = 2
LR = 0.05
STEPS = 2
THREADS = 1          # torch threads in every process: torch's own reductions sum the same way

# One rank: unpickle the converted model, wrap it in DDP, train STEPS SGD steps on its shard,
# save what it saw. Rank 0 hosts the store: it leaves last, after every rank has said "left"
# (a rank whose store server exits under it while it tears down the process group aborts).
_RANK = textwrap.dedent("""
    import datetime, os, sys, time
    import torch, torch.distributed as dist
    import torch.nn.functional as F
    rank, world, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    lr, steps, threads = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    sys.setswitchinterval(1e-4)     # the CUDA simulator's threads (layers on device "cuda")
    torch.set_num_threads(threads)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          rank == 0, timeout=datetime.timedelta(seconds=90))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    import tcsim.torch as tt
    model = torch.load(os.path.join(folder, "model.pt"), weights_only=False)
    data = torch.load(os.path.join(folder, "data.pt"))
    stats = tt.GemmStats(every=1)
    tt.attach_stats(model, stats)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=lr)
    out = {"y": [], "grads": []}
    for step in range(steps):
        stats.begin_step(step)
        x, target = data["x"][step][rank], data["t"][step][rank]
        y = ddp(x)
        opt.zero_grad(set_to_none=True)
        F.mse_loss(y, target).backward()
        out["y"].append(y.detach().clone())
        out["grads"].append([p.grad.clone() for p in model.parameters()])
        opt.step()
    out["state"] = model.state_dict()
    out["stats"] = stats.rows
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    store.add("left", 1)
    if rank == 0:
        while store.add("left", 0) < world:
            time.sleep(0.01)
    print("rank", rank, "done")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(device=None) -> torch.nn.Module:
    """The converted model; device: where its simulated GEMMs run (convert's ``device``)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.GELU(),
                                torch.nn.Linear(48, 16))
    tt.convert(model, tt.TrainingRecipe.deepseek_v3(), include=["0"], exclude=(), device=device)
    tt.convert(model, tt.TrainingRecipe.te_hybrid_delayed(history=2), include=["2"], exclude=(),
               device=device)
    return model


def _data() -> dict:
    """Per step, per rank: x (2, 8, 32) (a leading batch axis the layers flatten), target."""
    g = torch.Generator().manual_seed(1)
    shape = (STEPS, WORLD, 2, 8)
    return {"x": torch.randn(*shape, 32, generator=g), "t": torch.randn(*shape, 16, generator=g)}


def _single_process(model: torch.nn.Module, data: dict) -> dict:
    """The DDP run without DDP: one copy of the model per shard, each stepped with the mean of
    the two copies' gradients. Returns per shard: y, grads (each step), state, stats rows;
    and the mean gradients of each step."""
    import copy

    import torch.nn.functional as F
    copies = [copy.deepcopy(model) for _ in range(WORLD)]
    stats = [tt.GemmStats(every=1) for _ in range(WORLD)]
    for m, s in zip(copies, stats):
        tt.attach_stats(m, s)
    opts = [torch.optim.SGD(m.parameters(), lr=LR) for m in copies]
    out = {"y": [[] for _ in copies], "grads": [[] for _ in copies], "mean": []}
    for step in range(STEPS):
        for r, (m, s, opt) in enumerate(zip(copies, stats, opts)):
            s.begin_step(step)
            y = m(data["x"][step][r])
            opt.zero_grad(set_to_none=True)
            F.mse_loss(y, data["t"][step][r]).backward()
            out["y"][r].append(y.detach().clone())
            out["grads"][r].append([p.grad.clone() for p in m.parameters()])
        g0, g1 = out["grads"][0][step], out["grads"][1][step]
        mean = [(a + b) / 2 for a, b in zip(g0, g1)]
        # DDP's form: each gradient times 1/world_size, then summed (see the module docstring)
        assert all(_same(m_, a * 0.5 + b * 0.5) for m_, a, b in zip(mean, g0, g1))
        out["mean"].append(mean)
        for m, opt in zip(copies, opts):
            for p, g in zip(m.parameters(), mean):
                p.grad = g.clone()
            opt.step()
    out["state"] = [m.state_dict() for m in copies]
    out["stats"] = [s.rows for s in stats]
    return out


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))


def _run_ranks(folder: Path) -> list:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(THREADS))
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, str(r), str(WORLD), str(folder),
                               str(LR), str(STEPS), str(THREADS)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(WORLD)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, (so, se)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r}: exit {p.returncode}\n{so}\n{se[-3000:]}"
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("device", [None, pytest.param("cuda", marks=pytest.mark.slow)])
def test_ddp_two_ranks_bit_for_bit(tmp_path, device):
    """device "cuda": the ranks' simulated GEMMs run on the GPU backend (numba's CUDA simulator
    here), checked against the same single-process reference on the CPU backend."""
    if device == "cuda":
        pytest.importorskip("numba.cuda.extending", reason="the GPU backend needs numba-cuda")
    model, data = _model(), _data()
    torch.save(_model(device), tmp_path / "model.pt")    # the converted model, pickled whole
    torch.save(data, tmp_path / "data.pt")
    ranks = _run_ranks(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        want = _single_process(model, data)
    finally:
        torch.set_num_threads(threads)
    names = [n for n, _ in model.named_parameters()]
    for r, got in enumerate(ranks):
        for step in range(STEPS):
            # (a) the forward output on this rank's shard
            assert _same(got["y"][step], want["y"][r][step]), (r, step)
            # (b) the all-reduced gradients: the mean of the single-process ones
            for name, g, m in zip(names, got["grads"][step], want["mean"][step]):
                assert _same(g, m), (r, step, name)
        # (c) module state (amax histories, weights after two steps) and statistics
        hist = tt.amax_histories(got["state"])       # kept in the state_dict's metadata
        assert hist and hist == tt.amax_histories(want["state"][r]), r
        assert len(hist["2"]["x"]) == STEPS              # the delayed layer's history
        assert got["state"].keys() == want["state"][r].keys()
        for k, v in got["state"].items():
            assert _same(v, want["state"][r][k]), (r, k)
        # per step: three GEMMs of layer 2, fprop and wgrad of layer 0 (its input needs no dx)
        assert len(got["stats"]) == len(want["stats"][r]) == 5 * STEPS
        for row, ref in zip(got["stats"], want["stats"][r]):
            assert row.keys() == ref.keys()
            assert all(_same(np.float64(row[c]), np.float64(ref[c])) if isinstance(ref[c], float)
                       else row[c] == ref[c] for c in ref), (r, row)
    # the shards differ, so each check above compared different numbers on the two ranks
    assert not _same(ranks[0]["y"][0], ranks[1]["y"][0])
    # and the gradients really are the mean, not one rank's own
    assert not _same(want["mean"][0][0], want["grads"][0][0][0])
