"""The device runner end to end without a GPU: suite files -> kernel table -> self-checks ->
records, with tcsim answering in place of the device; the records replay bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_validate import replay
from gpu_validate.records import find_records, load_record
from gpu_validate.runner import (
    kernel_specs,
    permute_k_within_blocks,
    permute_k_within_groups,
    run_suites,
)
from gpu_validate.simulated import SimulatedBackend
from gpu_validate.suites import write_suites


def test_runner_writes_replayable_records(tmp_path):
    write_suites(tmp_path / "suites", rows=24, seed=3)
    summary = run_suites(SimulatedBackend("h100", (9, 0)), tmp_path / "suites", tmp_path / "out",
                         only="probes", progress=False)
    assert summary["self_check_failures"] == []
    paths = find_records([tmp_path / "out"])
    # 4 format pairs x (8 wgmma kernels + 4 mma.sync) per pair / 4 = 12 records per pair
    assert len(paths) == 4 * 6
    for path in paths:
        rec = load_record(path)
        # made by tcsim, so marked synthetic, naming the model that answered
        assert rec.meta["synthetic"] == "true" and rec.meta["instruction"]
        assert rec.meta["gpu_name"].startswith("synthetic")
        assert rec.meta["model"] == ("h100:mma.sync" if "mma_sync" in path.name else "h100:wgmma")
        res = replay.replay_record(rec)
        assert res.status == "ok" and res.mismatches == 0, res


def test_kernel_table_and_k_permutation():
    hopper, ada = kernel_specs((9, 0)), kernel_specs((8, 9))
    assert len(hopper) == 16 + 8 and len(ada) == 8
    assert all(s.arch == "sm_89" for s in ada)
    x = np.arange(2 * 64, dtype=np.uint8).reshape(2, 64)
    p = permute_k_within_blocks(x)
    assert not np.array_equal(p, x)
    for k0 in (0, 32):       # a permutation inside each block, never across blocks
        assert sorted(p[0, k0:k0 + 32]) == sorted(x[0, k0:k0 + 32])
    # mma.sync on Hopper runs as two FP16 HMMA steps (k mod 4 in {0, 1}, then the rest): the
    # self-check permutes inside each step's products only; on Ada inside each 16-half
    hop = next(s for s in hopper if s.form == "mma_sync")
    lo, hi = hop.k_groups
    assert lo == tuple(k for k in range(32) if k % 4 < 2) and len(hi) == 16
    assert next(s for s in ada if s.form == "mma_sync").k_groups == (tuple(range(16)),
                                                                     tuple(range(16, 32)))
    q = permute_k_within_groups(x, hop.k_groups)
    assert not np.array_equal(q, x)
    for k0 in (0, 32):
        for group in (lo, hi):
            idx = [k0 + j for j in group]
            assert sorted(q[0, idx]) == sorted(x[0, idx])


class _SwappedB(SimulatedBackend):
    """A 'kernel' with a layout bug: B's K order reversed inside each 32-block."""

    def run(self, spec, a_codes, b_codes, c, k):
        flipped = b_codes.reshape(b_codes.shape[0], -1, 32)[:, :, ::-1].reshape(b_codes.shape)
        return super().run(spec, a_codes, np.ascontiguousarray(flipped), c, k)


def test_self_check_catches_a_layout_bug(tmp_path):
    write_suites(tmp_path / "suites", rows=24, seed=3)
    summary = run_suites(_SwappedB("h100", (9, 0)), tmp_path / "suites", tmp_path / "out",
                         only="random-narrow", progress=False)
    assert any("K permutation" in f for f in summary["self_check_failures"])


def test_gemm_kernel_path_and_committed_gemm_records(tmp_path):
    """GEMM inputs -> (simulated) multi-instruction kernel -> GEMM records -> tcsim.gemm replay;
    and every committed GEMM record replays bit for bit."""
    from pathlib import Path

    from gpu_validate.gemm import replay_gemm_record, write_gemm_inputs
    from gpu_validate.gemm_device import run_gemm_inputs
    inputs = write_gemm_inputs(tmp_path / "gemm", seed=5)
    assert len(inputs) == 8
    paths = run_gemm_inputs(SimulatedBackend("h100"), tmp_path / "gemm", tmp_path / "out")
    for p in paths:
        r = replay_gemm_record(p)
        assert r["mismatches"] == 0 and r["outputs"] == 64 * 16, r
    committed = find_records([Path(__file__).resolve().parent.parent / "gpu_validate" /
                              "records"], gemm=True)
    assert len(committed) >= 8
    for p in committed:
        assert replay_gemm_record(p)["mismatches"] == 0, p


def test_gemm_replay_catches_a_wrong_recipe(tmp_path):
    """A record replayed with the wrong promotion interval disagrees: the replay can fail."""
    import numpy as np

    from gpu_validate.gemm import replay_gemm_record, write_gemm_inputs
    from gpu_validate.gemm_device import run_gemm_inputs
    from gpu_validate.records import read_npz, write_npz
    write_gemm_inputs(tmp_path / "gemm", seed=6)
    (path,) = [p for p in run_gemm_inputs(SimulatedBackend("h100"), tmp_path / "gemm",
                                          tmp_path / "out") if "cublas_split" in p.name]
    z = read_npz(path)
    z["promotion"] = np.array(str(z["x_bits"].shape[1]))      # claim fast accumulation
    write_npz(path, z)
    assert replay_gemm_record(path)["mismatches"] > 0


def test_device_side_imports_without_tcsim():
    """The GPU machine has numpy, ml_dtypes and CuPy but no pydantic: the runner, the compiler
    driver and the GEMM device path import without tcsim, and fail clearly without a GPU."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tcsim", "pydantic", "cupy"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from gpu_validate import bundle, compile, device, gemm, gemm_device, records, runner
        print(runner.main(["--out", "/tmp/tcsim-no-gpu"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2" and "no CUDA device" in out.stderr


def test_scaled_mm_record_readings_name_where_the_scales_go(tmp_path):
    """A torch._scaled_mm record (cuBLASLt) is read under each promotion interval with the
    per-tensor scales per partial or at the end; a record made one way is explained by exactly
    that reading (the scales here are not powers of two, so the two placements differ)."""
    import numpy as np

    from gpu_validate.gemm import (
        format_gemm_table,
        replay_gemm_record,
        simulate_gemm,
        write_gemm_inputs,
    )
    from gpu_validate.records import read_npz, write_npz
    (src,) = [p for p in write_gemm_inputs(tmp_path / "in", seed=2) if "split" in p.name]
    z = read_npz(src)
    assert z["sa"].shape[1] == 1 and np.log2(float(z["sa"][0, 0] * z["sb"][0, 0])) % 1 != 0
    partials = simulate_gemm(str(z["a_format"]), str(z["b_format"]), z["x_bits"], z["w_bits"],
                             np.ones_like(z["sa"]), np.ones_like(z["sb"]), 64, "2d2d", "h100")
    alpha = np.float32(np.float32(z["sa"][0, 0]) * np.float32(z["sb"][0, 0]))
    z["y_bits"] = (alpha * partials.astype(np.float32)).astype(np.float32).view(np.uint32)
    z.update(recipe=np.array("torch_scaled_mm_fast0"), promotion=np.array("128"),
             epilogue=np.array("2d2d"), gpu_name=np.array("NVIDIA H100 80GB HBM3"),
             synthetic=np.array("false"))
    path = write_npz(tmp_path / "gemm__x__scaled_mm_fast0__record.npz", z)
    r = replay_gemm_record(path)
    explained = [k for k, v in r["interpretations"].items() if v == 0]
    assert explained == ["promotion every 64, scales at the end"], r["interpretations"]
    assert r["mismatches"] > 0                     # the recorded guess (128, per partial) fails
    assert "cuBLASLt reading: promotion every 64, scales at the end" in format_gemm_table([r])


class _FakeTensor:
    """Just enough of a torch tensor for gpu_validate.gemm_device.run_scaled_mm_inputs (no torch
    here: the device machine has the real one)."""

    def __init__(self, array, dtype="float32"):
        self.array, self.dtype = array, dtype

    def cuda(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array

    def t(self):
        return _FakeTensor(self.array.T, self.dtype)

    def contiguous(self):
        return _FakeTensor(self.array.copy(), self.dtype)

    def to(self, dtype):
        return _FakeTensor(self.array, dtype)

    @property
    def shape(self):
        return self.array.shape


def _fake_torch(calls):
    """A torch module whose _scaled_mm answers with tcsim: fast accumulation, or promotion every
    128 with the scales at the end (one reading of cuBLASLt)."""
    import types

    import numpy as np

    from gpu_validate.gemm import simulate_gemm

    fmt = {"e4m3": "e4m3", "e5m2": "e5m2"}

    def scaled_mm(xa, wb, scale_a, scale_b, out_dtype, use_fast_accum):
        calls.append((xa.dtype, wb.dtype, xa.shape, wb.shape, use_fast_accum))
        x = xa.array.astype(np.float32).view(np.uint32)
        w = wb.array.astype(np.float32).view(np.uint32)
        k = x.shape[1]
        one = np.ones((1, 1), np.float32)
        p = simulate_gemm(fmt[xa.dtype], fmt[wb.dtype], x, w, one, one,
                          k if use_fast_accum else 128, "2d2d", "h100")
        alpha = np.float32(np.float32(scale_a.array) * np.float32(scale_b.array))
        return _FakeTensor((alpha * p.astype(np.float32)).astype(np.float32))

    torch = types.ModuleType("torch")
    torch.__version__ = "fake"
    torch.float8_e4m3fn, torch.float8_e5m2, torch.float32 = "e4m3", "e5m2", "float32"
    torch.cuda = types.SimpleNamespace(is_available=lambda: True)
    torch.from_numpy = lambda a: _FakeTensor(a)
    torch.tensor = lambda v: _FakeTensor(np.float32(v))
    torch._scaled_mm = scaled_mm
    return torch


def test_scaled_mm_path_writes_records_that_replay(tmp_path, monkeypatch):
    """run_scaled_mm_inputs end to end with a stand-in torch: per-tensor inputs only, both
    fast-accumulation settings, column-major B, records that the GEMM replay reads."""
    import sys

    from gpu_validate.gemm import replay_gemm_record, write_gemm_inputs
    from gpu_validate.gemm_device import run_scaled_mm_inputs
    from gpu_validate.records import read_npz
    write_gemm_inputs(tmp_path / "in", seed=4)
    calls = []
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(calls))
    meta = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "x",
            "cuda_version": "x", "cupy_version": "x"}
    paths = run_scaled_mm_inputs(tmp_path / "in", tmp_path / "out", meta)
    # the per-tensor inputs (cublas_fast_accum, cublas_split_accum, promote32) x fast on/off
    assert len(paths) == 6 and len(calls) == 6
    assert all(p.parent == tmp_path / "out" / "NVIDIA_H100_80GB_HBM3" / "gemm" for p in paths)
    assert {c[4] for c in calls} == {True, False} and all(c[2] == (64, 256) for c in calls)
    for p in paths:
        z = read_npz(p)
        assert str(z["synthetic"]) == "false" and "use_fast_accum" in str(z["kernel"])
        r = replay_gemm_record(p)
        fast = "fast1" in p.name
        if fast:               # one partial: scales per partial and at the end are the same
            assert r["mismatches"] == 0
        want = "fast accumulation" if fast else "promotion every 128"
        assert r["interpretations"][f"{want}, scales at the end"] == 0, r["interpretations"]


def test_read_npz_garbage_member_header_is_one_value_error(tmp_path):
    """A member whose .npy header numpy's tokenizer cannot parse (an unclosed bracket) or whose
    shape overflows is a ValueError naming the file, as tcsim.npzfile.read_npz gives."""
    import zipfile

    from gpu_validate.records import read_npz
    for name, header in (("bracket", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,"),
                         ("huge", "{'descr': '<f4', 'fortran_order': False, "
                                  "'shape': (99999999999999999999999,), }")):
        body = header.ljust(118) + "\n"
        npy = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode() + b"\0" * 8
        path = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.npy", npy)
        with pytest.raises(ValueError, match=f"{name}.npz: not a readable .npz file"):
            read_npz(path)
