"""gpu_validate without a GPU: the probe kernels compile for sm_90a / sm_89 and use the FP8
tensor core (QGMMA on Hopper wgmma, QMMA on Ada mma.sync; HMMA where Hopper emulates FP8
mma.sync with FP16). GPU runs skip with a reason when no device is present."""

from __future__ import annotations

import pytest

from gpu_validate import compile as kcompile
from gpu_validate.runner import kernel_specs

needs_tools = pytest.mark.skipif(
    kcompile.find_nvcc() is None or kcompile.find_nvdisasm() is None,
    reason="nvcc or nvdisasm missing (pip install nvidia-cuda-nvdisasm; nvcc from the CUDA "
           "toolkit)")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return kcompile.build_all(tmp_path_factory.mktemp("build"))


@needs_tools
def test_hopper_wgmma_kernels_compile_to_qgmma(manifest):
    sass = manifest["fp8_wgmma.cu:sm_90a"]["sass"]
    specs = [s for s in kernel_specs((9, 0)) if s.source == "fp8_wgmma.cu"]
    assert len(specs) == 16
    for spec in specs:
        ops = sass[spec.name]
        acc = "F32" if spec.acc == "fp32" else "F16"
        want = f"QGMMA.64x8x32.{acc}.{spec.a_format.upper()}.{spec.b_format.upper()}"
        assert ops == [want], (spec.name, ops)


@needs_tools
def test_ada_mma_sync_is_qmma_and_hopper_emulates_it(manifest):
    ada = manifest["fp8_mma_sync.cu:sm_89"]["sass"]
    for spec in kernel_specs((8, 9)):
        acc = "F32" if spec.acc == "fp32" else "F16"
        assert ada[spec.name] == [f"QMMA.16832.{acc}.{spec.a_format.upper()}."
                                  f"{spec.b_format.upper()}"], spec.name
    hopper = manifest["fp8_mma_sync.cu:sm_90a"]["sass"]
    for name, ops in hopper.items():
        assert ops and all(op.startswith("HMMA.16816") for op in ops), (name, ops)


@needs_tools
def test_manifest_records_hashes_and_instructions(manifest):
    for key, entry in manifest.items():
        assert len(entry["source_sha256"]) == 64
        assert entry["instruction"].startswith(("wgmma", "mma.sync"))


def test_gpu_run_skips_without_device():
    cupy = pytest.importorskip("cupy", reason="CuPy not installed: GPU runs need a CUDA machine")
    if not cupy.cuda.is_available():
        pytest.skip("no CUDA device present")
    from gpu_validate.runner import CupyBackend
    assert CupyBackend().cc >= (8, 9)


@needs_tools
def test_gemm_kernel_uses_qgmma_and_ieee_fp32(manifest, tmp_path):
    cubin = kcompile.compile_cubin("fp8_gemm.cu", "sm_90a", tmp_path)
    assert kcompile.flushing_fp_ops(cubin) == []        # promotion keeps subnormals
    sass = manifest["fp8_gemm.cu:sm_90a"]["sass"]
    for a in ("e4m3", "e5m2"):
        for b in ("e4m3", "e5m2"):
            assert sass[f"gemm_f32_{a}_{b}"] == [f"QGMMA.64x8x32.F32.{a.upper()}.{b.upper()}"]
