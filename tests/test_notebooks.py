"""The notebooks in notebooks/ run end to end (small sizes) and are stored without outputs.

Each notebook is executed with nbclient in a fresh ``python3`` kernel (ipykernel, in the same
interpreter as the tests), with cwd = notebooks/ and TCSIM_NOTEBOOK_SMALL=1, as CI runs them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01_datapath_anatomy.ipynb", "02_deepseek_accumulation.ipynb",
            "03_design_space.ipynb", "04_validation.ipynb", "05_training.ipynb")
NEEDS_TORCH = ("05_training.ipynb",)   # tcsim.torch: skipped where PyTorch is not installed
CELL_TIMEOUT = 600

try:
    import nbformat
except ImportError:  # pragma: no cover - nbformat comes with the test extra
    nbformat = None


def _runner_missing() -> str:
    """Why notebooks cannot be executed here ("" when they can)."""
    missing = []
    for mod in ("nbformat", "nbclient", "ipykernel", "jupyter_client"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        return (f"{', '.join(missing)} not importable: install the test extra "
                f"(pip install '.[test]') to run the notebooks")
    return ""


def _kernel_manager():
    """A kernel manager for ipykernel's ``python3`` kernel in *this* interpreter.

    Only ipykernel's own spec is looked up (no kernel_dirs), so a ``python3`` kernel registered
    elsewhere (``~/.local/share/jupyter``) cannot substitute another interpreter; nothing needs
    ``ipykernel install``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    ksm = KernelSpecManager(kernel_dirs=[])
    spec = ksm.get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, spec.argv
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def _import_path() -> str:
    """PYTHONPATH for the kernel: the folders this test process imports tcsim and gpu_validate
    from first, so the notebooks run the same code as the rest of the tests (the source tree
    under ``python -m pytest`` from the repository root) and share its numba cache."""
    import gpu_validate
    import tcsim
    roots = []
    for mod in (tcsim, gpu_validate):
        root = str(Path(mod.__file__).resolve().parent.parent)
        if root not in roots:
            roots.append(root)
    rest = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(roots + ([rest] if rest else []))


def test_all_notebooks_present():
    missing = set(EXPECTED) - {p.name for p in NOTEBOOKS}
    assert not missing, f"notebooks missing from {NOTEBOOK_DIR}: {sorted(missing)}"


@pytest.mark.skipif(nbformat is None, reason="nbformat not importable: install the test extra")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells and nb.cells[0].cell_type == "markdown", "must open with a markdown cell"
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; strip them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    reason = _runner_missing()
    if reason:
        pytest.skip(reason)
    if path.name in NEEDS_TORCH:
        pytest.importorskip("torch")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    client = NotebookClient(nb, km=_kernel_manager(), kernel_name="python3",
                            timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    env = dict(os.environ, TCSIM_NOTEBOOK_SMALL="1", PYTHONPATH=_import_path())
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell raised\n{exc}")
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, \
        f"{path.name} wrote into notebooks/ (figures belong in a temp dir)"
