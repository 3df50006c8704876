"""Every kernel of the GPU backend compiles to PTX and to a cubin for sm_80, sm_89 and sm_90 on
a machine without a GPU (numba-cuda + the nvcc / nvrtc wheels), and the check prints each
kernel's registers per thread, local-memory spills, stack and fma count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("numba.cuda.extending", reason="the GPU backend needs numba-cuda")


@pytest.mark.slow
def test_every_kernel_compiles_for_sm80_sm89_sm90(capsys):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    res = subprocess.run([sys.executable, "-m", "tcsim.cuda.compile_check"], env=env,
                         capture_output=True, text=True, timeout=1200)
    with capsys.disabled():
        print("\n" + res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if " sm_" in ln]
    for cc in ("sm_80", "sm_89", "sm_90"):
        assert any(f" {cc} " in ln for ln in lines), f"no kernel compiled for {cc}"
    assert not any("FAILED" in ln for ln in lines)
    # the kernels the GEMM path needs are all there
    for name in ("fused.", "staged.", "prep.", "epilogue.", "quantize."):
        assert any(ln.startswith(name) for ln in lines), f"no {name}* kernel compiled"
