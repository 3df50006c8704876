"""The trip home from the device machine: the prepared device script, dry-run on this CPU with
tcsim answering for the GPU, must leave $OUT within the device tool's limits (at most 8 files,
2 folders down, plain names), and its parts must unpack into records that replay bit for bit."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from gpu_validate import bundle, replay
from gpu_validate.gemm import replay_gemm_record, write_gemm_inputs
from gpu_validate.records import find_records, load_record
from gpu_validate.runner import gpu_folder, run_suites
from gpu_validate.simulated import SimulatedBackend
from gpu_validate.suites import write_suites

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suites")
    write_suites(folder, rows=16, seed=11)
    write_gemm_inputs(folder / "gemm", seed=11)
    return folder


def test_device_script_dry_run_comes_back_whole_and_replays(suites, tmp_path):
    out = tmp_path / "OUT"
    env = dict(os.environ, OUT=str(out), GPU_VALIDATE_SIMULATE="h100", PYTHON=sys.executable,
               GPU_VALIDATE_SUITES=str(suites))
    res = subprocess.run(["bash", str(ROOT / "gpu_validate" / "device_check.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert bundle.check_out_tree(out) == []
    parts = sorted(out.glob("records-*.tar"))
    assert parts and (out / "summary.json").is_file() and (out / "run.log").is_file()
    assert "runner exit status 0" in (out / "run.log").read_text()

    home = tmp_path / "records"
    files = bundle.unpack(parts, into=home)
    gpu = gpu_folder("synthetic (tcsim h100 model)")
    assert {f.relative_to(home).parts[0] for f in files} == {gpu}
    records = find_records([home])
    assert len(records) == 24 * 6            # 24 suite files x (4 wgmma + 2 mma.sync) kernels
    for path in records:
        rec = load_record(path)
        assert rec.synthetic
        result = replay.replay_record(rec)
        assert result.status == "ok" and result.mismatches == 0, result
    gemm = find_records([home], gemm=True)
    assert len(gemm) == 8 and all(p.parent == home / gpu / "gemm" for p in gemm)
    assert all(replay_gemm_record(p)["mismatches"] == 0 for p in gemm)


def test_device_script_reports_a_failing_kernel_and_still_packs(suites, tmp_path):
    """A kernel that raises is reported (exit 1), the other kernels' records still come back."""
    out = tmp_path / "OUT"
    code = (
        "import sys; from gpu_validate import runner, simulated\n"
        "class Broken(simulated.SimulatedBackend):\n"
        "    def run(self, spec, *a):\n"
        "        if spec.form == 'rega': raise RuntimeError('illegal instruction')\n"
        "        return super().run(spec, *a)\n"
        "runner.make_backend = lambda build, simulate=None: Broken('h100', (9, 0))\n"
        f"sys.exit(runner.main(['--suites', {str(suites)!r}, '--suite', 'probes', "
        f"'--out', {str(tmp_path / 'rec')!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "illegal instruction" in res.stderr
    parts = bundle.pack(tmp_path / "rec", out)
    names = [n for p in parts for n in bundle.list_members(p)]
    assert names and not any("rega" in n for n in names)
    assert any("smem" in n for n in names) and "summary.json" in names


def _files(folder: Path, sizes: dict) -> Path:
    for rel, size in sizes.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(np.random.default_rng(len(rel)).bytes(size))
    return folder


def test_pack_splits_into_parts_and_round_trips(tmp_path):
    src = _files(tmp_path / "src", {f"GPU/r{i}.npz": 3000 + i for i in range(10)} |
                 {"GPU/gemm/g.npz": 5000})
    parts = bundle.pack(src, tmp_path / "out", part_bytes=16384)
    assert len(parts) > 1 and all(p.stat().st_size <= 16384 for p in parts)
    got = bundle.unpack(parts, into=tmp_path / "home")
    assert len(got) == 11
    for f in got:
        rel = f.relative_to(tmp_path / "home")
        assert f.read_bytes() == (src / rel).read_bytes()
    with pytest.raises(bundle.BundleError, match="exists"):       # nothing replaced silently
        bundle.unpack(parts, into=tmp_path / "home")
    assert bundle.unpack(parts, into=tmp_path / "home", overwrite=True)
    with pytest.raises(bundle.BundleError, match="come back"):
        bundle.pack(src, tmp_path / "out2", part_bytes=10240, max_parts=2)
    with pytest.raises(bundle.BundleError, match="no files"):
        bundle.pack(tmp_path / "empty-does-not-exist", tmp_path / "out3")


@pytest.mark.parametrize("member", ["../escape.npz", "/abs/escape.npz"])
def test_unpack_refuses_unsafe_paths(tmp_path, member):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo(member)          # written as given (tar.add strips a leading /)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(bundle.BundleError, match="unsafe"):
        bundle.unpack([bad], into=tmp_path / "home")
    assert not (tmp_path / "escape.npz").exists()


def test_unpack_refuses_links(tmp_path):
    bad = tmp_path / "link.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("GPU/r.npz")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(bundle.BundleError, match="not a plain file"):
        bundle.unpack([bad], into=tmp_path / "home")


def test_check_out_tree_names_each_limit(tmp_path):
    out = _files(tmp_path / "OUT", {f"f{i}.tar": 10 for i in range(9)} |
                 {"a/b/c/deep.npz": 10, "odd name(1).txt": 10})
    problems = "\n".join(bundle.check_out_tree(out))
    assert "11 files" in problems and "folders down" in problems and "odd name(1)" in problems
    assert bundle.check_out_tree(_files(tmp_path / "ok", {"records-1.tar": 10,
                                                          "a/b/x.json": 5})) == []


def test_gpu_folder_names_survive_the_trip():
    assert gpu_folder("NVIDIA H200") == "NVIDIA_H200"
    assert gpu_folder("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert gpu_folder("synthetic (tcsim h100 model)") == "synthetic_tcsim_h100_model"
    assert bundle.NAME_OK.match(gpu_folder("GeForce RTX 4090/Ti (x)"))


def test_runner_records_match_direct_run(suites, tmp_path):
    """run_suites through the simulated backend writes the same bits the model gives directly."""
    summary = run_suites(SimulatedBackend("h100", (9, 0)), suites, tmp_path / "out",
                         only="specials", progress=False)
    assert summary["kernel_errors"] == [] and summary["self_check_failures"] == []
    assert len(summary["records"]) == 4 * 6


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tcsim.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_cli_run_simulate_then_unpack(suites, tmp_path):
    res = _cli("validate", "run", "--suite", "c-only", "--suites", str(suites), "--out",
               str(tmp_path / "rec"), "--simulate", "h100")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "24 record(s) written" in res.stdout
    parts = bundle.pack(tmp_path / "rec", tmp_path / "OUT")
    res = _cli("validate", "unpack", *map(str, parts), "--into", str(tmp_path / "home"))
    assert res.returncode == 0, res.stderr
    assert "next: tcsim validate replay" in res.stdout
    again = _cli("validate", "unpack", *map(str, parts), "--into", str(tmp_path / "home"))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    res = _cli("validate", "replay", "--quiet", str(tmp_path / "home"))
    assert res.returncode == 0 and "0 mismatches" in res.stdout, res.stdout[-2000:]


# ---- where `tcsim validate unpack` puts records without --into ---------------------------------

@pytest.fixture
def parts_and_package(tmp_path, monkeypatch):
    """Two records packed into parts, and the installed package's records folder pointed at a
    folder of tmp_path (so that code writing there writes nothing into this checkout)."""
    src = _files(tmp_path / "src", {"GPU/r0.npz": 100, "GPU/gemm/g.npz": 200})
    parts = bundle.pack(src, tmp_path / "OUT")
    package = tmp_path / "site-packages" / "gpu_validate" / "records"
    monkeypatch.setattr(bundle, "RECORDS_INTO", package)
    return parts, package


@pytest.fixture(params=["tcsim validate unpack", "python -m gpu_validate.bundle unpack"])
def unpack_command(request):
    """Both command lines that unpack records take the same default folder."""
    return request.param


def _unpack_without_into(parts, capsys, command="tcsim validate unpack") -> str:
    if command.startswith("tcsim"):
        from tcsim.cli import main
        assert main(["validate", "unpack", *map(str, parts)]) == 0
    else:
        assert bundle.main(["unpack", *map(str, parts)]) == 0
    return capsys.readouterr().out


def test_unpack_defaults_to_the_current_folder_not_the_installed_package(
        parts_and_package, tmp_path, monkeypatch, capsys, unpack_command):
    """After a non-editable install the package's folder is in site-packages: records went
    there. Outside a checkout they go to ./gpu_validate_records, and the output says so."""
    parts, package = parts_and_package
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    out = _unpack_without_into(parts, capsys, unpack_command)
    home = here / "gpu_validate_records"
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*.npz")) == \
        ["GPU/gemm/g.npz", "GPU/r0.npz"]
    assert not package.exists()
    if unpack_command.startswith("tcsim"):
        assert f"unpacked into {home / 'GPU'}, {home / 'GPU' / 'gemm'}" in out
        assert f"records folder {home}" in out
    else:
        assert f"files under {home}" in out


def test_unpack_inside_a_checkout_defaults_to_its_records_folder(parts_and_package, tmp_path,
                                                                 monkeypatch, capsys,
                                                                 unpack_command):
    """Run from a checkout (its root or a folder below it): the repository's
    gpu_validate/records, where the README says records go and are committed from."""
    parts, package = parts_and_package
    repo = tmp_path / "checkout"
    (repo / "gpu_validate").mkdir(parents=True)
    (repo / "gpu_validate" / "bundle.py").write_text("")
    (repo / "pyproject.toml").write_text("")
    (repo / "tests").mkdir()
    monkeypatch.chdir(repo / "tests")
    out = _unpack_without_into(parts, capsys, unpack_command)
    home = repo / "gpu_validate" / "records"
    assert (home / "GPU" / "r0.npz").is_file() and not package.exists()
    assert str(home) in out


def test_readme_dry_run_writes_the_suites_it_runs():
    """The README's dry run, as written, needs the input suites where device_check.sh and
    `tcsim validate run` read them by default: its block writes them there first (it listed
    only device_check.sh, which then found no suite files; running the block as written takes
    about 25 s, so this checks its order and paths instead)."""
    import re

    from gpu_validate.compile import BUILD_DIR
    text = (ROOT / "gpu_validate" / "README.md").read_text()
    section = text.split("## Dry run on a CPU", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [code for code in (line.split("#")[0].strip() for line in block.splitlines())
             if code]
    written = [i for i, line in enumerate(lines) if line.startswith("tcsim validate suites")]
    runs = [i for i, line in enumerate(lines)
            if "device_check.sh" in line or line.startswith("tcsim validate run")]
    assert written and runs and written[0] < min(runs), lines
    folder = re.search(r"--out (\S+)", lines[written[0]]).group(1)
    script = (ROOT / "gpu_validate" / "device_check.sh").read_text()
    build = re.search(r'BUILD="\$\{GPU_VALIDATE_BUILD:-([^}]+)\}"', script).group(1)
    assert re.search(r'SUITES="\$\{GPU_VALIDATE_SUITES:-\$BUILD/suites\}"', script)
    assert folder == f"{build}/suites"                       # device_check.sh's default
    assert (ROOT / folder).resolve() == (BUILD_DIR / "suites").resolve()   # validate run's
