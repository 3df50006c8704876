"""The documentation stands alone: the sweep result schema in docs/sweeps.md is what a sweep
writes, and nothing a user of the repository reads cites the team's notes in ../shared."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def documented_columns() -> list[str]:
    """The first-column names of the tables under "## Columns" in docs/sweeps.md."""
    text = (REPO / "docs" / "sweeps.md").read_text()
    section = text.split("## Columns", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def test_documented_sweep_columns_are_what_a_sweep_writes(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from tcsim.explore import load_results
    from tcsim.explore.grid import load_grid
    from tcsim.explore.sweep import SWAMP_SAMPLE_MAX_K, run_sweep
    grid = tmp_path / "tiny.toml"
    grid.write_text(f"""
[datapath]
base = "h100"
fraction_bits = [13]
block_size = [32]
output_precision = ["base"]
[recipe]
base = "cublas_split_accum"
promotion_interval = [0]
a_granularity = ["base", "group"]     # "group" with fast accumulation: an invalid point
[workload]
m = [1]
n = [1]
k = [128, {2 * SWAMP_SAMPLE_MAX_K}]
""")
    summary = run_sweep(load_grid(grid), tmp_path / "out", progress=False)
    assert summary["ok"] == 2 and summary["invalid"] == 2, summary
    df = load_results(tmp_path / "out")
    documented = documented_columns()
    assert len(documented) == len(set(documented))
    assert sorted(df.columns) == sorted(documented)
    ok = df[df.status == "ok"].set_index("workload.k")
    assert 0 <= ok.loc[128, "swamped_fraction"] <= 1
    assert math.isnan(ok.loc[2 * SWAMP_SAMPLE_MAX_K, "swamped_fraction"])   # as documented
    invalid = df[df.status == "invalid"]
    assert invalid["acc_rel_fro"].isna().all() and (invalid["reason"] != "").all()


def test_the_sweep_doc_states_the_nan_threshold():
    from tcsim.explore.sweep import SWAMP_SAMPLE_MAX_K
    text = (REPO / "docs" / "sweeps.md").read_text()
    assert f"K > {SWAMP_SAMPLE_MAX_K}" in text


# ---- no citation of files a user does not have (issue 16.4) -------------------------------------

SHARED_NOTES = re.compile(r"\.\./shared/(HARDWARE|GPU|DESIGN)"
                          r"|\b(HARDWARE(-MORE)?|GPU|DESIGN)\.md\b")
CHECKED = ("tcsim", "models", "gpu_validate", "notebooks", "examples", "benchmarks", "docs",
           "README.md")


def _user_facing_files():
    for name in CHECKED:
        root = REPO / name
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in files:
            if path.is_file() and path.suffix not in (".npz", ".npy", ".tar", ".png", ".cubin",
                                                      ".pyc", ".parquet") \
                    and "records" not in path.relative_to(REPO).parts[:2] \
                    and "build" not in path.parts and "__pycache__" not in path.parts:
                yield path


def test_nothing_cites_the_shared_hardware_notes():
    """Provenance notes, docstrings and docs cite docs/hardware.md (the project's own notes),
    never ../shared/HARDWARE.md, HARDWARE-MORE.md, GPU.md or DESIGN.md, which a user of the
    repository does not have. (Tests may read corpora from ../shared; they are not checked.)"""
    offenders = []
    for path in _user_facing_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for no, line in enumerate(text.splitlines(), 1):
            if SHARED_NOTES.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{no}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


def _anchors(doc: str) -> set:
    """The explicit ``<a id>`` anchors of a Markdown text and the ids GitHub gives its headings:
    lower case, punctuation other than ``-`` and ``_`` dropped, each space a ``-``; a repeated
    id gets ``-1``, ``-2``, ... (headings inside fenced code are no headings)."""
    anchors = set(re.findall(r'<a id="([a-z0-9_-]+)"></a>', doc))
    seen: dict = {}
    for heading in re.findall(r"^#+ (.+)$", _without_code_blocks(doc), flags=re.M):
        slug = re.sub(r"[^a-z0-9_ -]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _without_code_blocks(text: str) -> str:
    """``text`` with its fenced code blocks blanked (their lines kept, empty)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


@pytest.mark.parametrize("name", ["hardware", "gpu"])
def test_every_docs_anchor_cited_exists(name):
    """Every ``docs/<name>.md#anchor`` cited anywhere, and every ``(#anchor)`` link inside the
    file, names an anchor or heading of docs/<name>.md."""
    doc = (REPO / "docs" / f"{name}.md").read_text()
    anchors = _anchors(doc)
    cited = {a: f"docs/{name}.md" for a in re.findall(r"\]\(#([a-z0-9-]+)\)", doc)}
    for path in list(_user_facing_files()):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for anchor in re.findall(rf"\b{name}\.md#([A-Za-z0-9-]+)", text):
            cited.setdefault(anchor, str(path.relative_to(REPO)))
    assert cited, f"nothing cites docs/{name}.md"
    missing = {a: where for a, where in cited.items() if a not in anchors}
    assert not missing, missing


# ---- every relative link of the documentation resolves ------------------------------------------

LINKED_PAGES = ("README.md", "CHANGELOG.md", "docs/*.md", "notebooks/README.md",
                "gpu_validate/README.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _doc_pages() -> list[Path]:
    return sorted({p for pattern in LINKED_PAGES for p in REPO.glob(pattern)})


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links ``[text](target)`` of ``text`` that are not web
    addresses (fenced code and inline code spans are not read)."""
    prose = re.sub(r"`[^`\n]*`", "", _without_code_blocks(text))
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z]+:", t)]


def test_the_link_finder():
    text = ("[a](x.md) [`b`](../y/#z) [c](https://e.org/x) [d](#here)\n"
            "`[e](not/a/link)`\n```python\nf[0](1)\n```\n")
    assert relative_links(text) == ["x.md", "../y/#z", "#here"]
    assert _anchors("# A `b.c` (d_e)\n## A `b.c` (d_e)\n```\n# no\n```\n") == {
        "a-bc-d_e", "a-bc-d_e-1"}


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    """Each relative link of README.md, CHANGELOG.md, docs/*.md and the other READMEs names a
    file or folder of the repository and, for ``#anchor`` into Markdown, one of its headings or
    ``<a id>`` anchors."""
    links = relative_links(page.read_text())
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text()):
            broken.append(f"{link}: no such heading or anchor in {target.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_links_every_docs_page():
    """The README is the front door: every page of docs/ is one link away from it."""
    readme = (REPO / "README.md").read_text()
    linked = {(REPO / link.partition("#")[0]).resolve() for link in relative_links(readme)}
    missing = [p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked]
    assert not missing, missing


# ---- gpu_validate/README.md is written for a user with a GPU (issue 16.5) ----------------------

GPU_README = REPO / "gpu_validate" / "README.md"


def _bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.split("#")[0].strip()]


def test_gpu_readme_names_no_remote_execution_tool():
    text = GPU_README.read_text()
    for word in ("run(command", "carry=", "files_at", "device tool", "lent"):
        assert word not in text, word


def test_gpu_readme_commands_exist():
    """Every `python -m gpu_validate.X`, `tcsim validate X` and script the README tells a user
    to run exists, with the subcommands it names."""
    from tcsim.cli import build_parser
    lines = _bash_lines(GPU_README.read_text())
    assert any("device_check.sh" in line for line in lines)
    validate = next(a for a in build_parser()._subparsers._group_actions[0].choices.items()
                    if a[0] == "validate")[1]
    subcommands = set(validate._subparsers._group_actions[0].choices)
    seen = set()
    for line in lines:
        for module, rest in re.findall(r"python -m (gpu_validate\.\w+)\s*(\w*)", line):
            assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module
            seen.add(module)
            if module == "gpu_validate.bundle" and rest:
                assert rest in ("pack", "unpack", "check"), line
        for sub in re.findall(r"tcsim validate (\w+)", line):
            assert sub in subcommands, line
            seen.add(sub)
        for script in re.findall(r"bash (\S+\.sh)", line):
            assert (REPO / script).is_file(), script
    assert {"gpu_validate.compile", "gpu_validate.bundle", "unpack", "replay", "questions"} <= seen


def test_gpu_readme_states_the_packing_limits():
    from gpu_validate import bundle
    text = GPU_README.read_text()
    assert f"under {bundle.MAX_FILE_BYTES >> 20} MiB" in text
    assert f"under {bundle.MAX_TOTAL_BYTES >> 20} MiB" in text


# ---- the per-GPU tables of docs/hardware.md agree with the presets -----------------------------

SECTION_PRESETS = {"volta": ("v100",), "ampere": ("a100", "a2", "a30"), "ada": ("ada", "l40s"),
                   "hopper": ("h100", "h200"), "blackwell": ("b200",)}


def _table_rows(anchor: str) -> list[list[str]]:
    doc = (REPO / "docs" / "hardware.md").read_text()
    section = doc.split(f'<a id="{anchor}"></a>', 1)[1].split("<a id=", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip().replace("*", "").replace("`", "") for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == 6 and cells[0] not in ("path", "---"):
            rows.append(cells)
    return rows


def _number(cell: str) -> int:
    """'16', '>= 16', '16 x 2' -> 16."""
    return int(re.search(r"\d+", cell).group())


@pytest.mark.parametrize("anchor", sorted(SECTION_PRESETS))
def test_hardware_tables_match_the_presets(anchor):
    """Each row (path, formats, n, f) of a GPU's table is a path of that GPU's presets: the
    documentation and the models cannot drift apart."""
    import tcsim
    rows = _table_rows(anchor)
    assert rows, anchor
    checked = 0
    for path_cell, formats, n, f, _rounding, _evidence in rows:
        if "->" not in formats:          # "the same formats": a row about a family of paths
            continue
        name = path_cell.split()[0].split(".mma")[0]     # "tcgen05.mma kind::f8f6f4" -> tcgen05
        inputs_text, output = formats.split("->")
        inputs = {x.strip() for x in re.sub(r"\(.*?\)", "", inputs_text).split(",")}
        output = output.strip()
        for preset in SECTION_PRESETS[anchor]:
            model = tcsim.load_model(preset)
            paths = [p for p in model.paths if p.name == name and p.output == output
                     and inputs <= set(p.inputs)]
            assert paths, f"{anchor}: {preset} has no path {name} {inputs} -> {output}"
            assert any(p.block_size == _number(n) and p.fraction_bits == _number(f)
                       for p in paths), f"{anchor}: {preset} {name} {inputs}: n={n}, f={f}?"
            checked += 1
    assert checked >= len(SECTION_PRESETS[anchor]) * 2


def test_every_shipped_gpu_has_a_section():
    from tcsim.presets import preset_names
    doc = (REPO / "docs" / "hardware.md").read_text().lower()
    for name in preset_names():
        if name in ("ideal", "fp32-fma"):      # reference units, not hardware
            continue
        assert name in doc or name.upper() in doc.upper(), name


def test_sweeps_doc_snippet_runs_on_a_sweep(tmp_path, monkeypatch):
    """The 'Reading it' example of docs/sweeps.md runs on a real (tiny) result folder."""
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import tcsim
    import tcsim.explore
    from tcsim.explore.grid import load_grid
    from tcsim.explore.sweep import run_sweep
    grid = tmp_path / "g.toml"
    grid.write_text('[datapath]\nfraction_bits = [12, 13]\n[recipe]\nbase = "cublas_split_accum"\n'
                    'promotion_interval = [128]\n[workload]\nm = [1]\nn = [1]\nk = [256]\n')
    run_sweep(load_grid(grid), tmp_path / "results", progress=False)
    monkeypatch.chdir(tmp_path)
    code = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "sweeps.md").read_text(), re.S)
    assert len(code) == 1
    namespace = {"tcsim": tcsim}
    exec(code[0] + "\n_table = " + code[0].strip().splitlines()[-1], namespace)
    assert list(namespace["_table"].columns) == [12, 13]


def test_the_deepseek_numbers_in_the_hardware_notes_are_measured():
    """docs/hardware.md#published-numbers states four accumulation errors and one total error
    of the h100 preset at K = 4096; they are what tcsim.gemm gives."""
    import numpy as np

    import tcsim
    doc = (REPO / "docs" / "hardware.md").read_text()
    stated = re.search(r"is ([0-9.]+)% for N\(0, 1\) inputs and ([0-9.]+)% for U\(0, 1\) inputs"
                       r".*?to ([0-9.]+)% and ([0-9.]+)%\..*?inputs the error\s+is ([0-9.]+)%",
                       doc, flags=re.S)
    assert stated, "the numbers moved: update this test with the text"
    fast_n, fast_u, promoted_n, promoted_u, total_n = (float(v) / 100 for v in stated.groups())
    rng = np.random.default_rng(0)
    got = {}
    for dist in ("normal", "uniform"):
        draw = rng.standard_normal if dist == "normal" else rng.random
        x, w = draw((64, 4096)).astype(np.float32), draw((4096, 64)).astype(np.float32)
        for name, recipe in (("fast", tcsim.Recipe.cublas_fast_accum()),
                             ("promoted", tcsim.Recipe.cublas_split_accum())):
            y, det = tcsim.gemm(x, w, model="h100", recipe=recipe, return_details=True)
            ref = det.exact_product()
            got[name, dist] = np.linalg.norm(y - ref) / np.linalg.norm(ref)
            if dist == "normal":
                e2e = x.astype(np.float64) @ w.astype(np.float64)
                got[name, "total"] = np.linalg.norm(y - e2e) / np.linalg.norm(e2e)
    for key, value in ((("fast", "normal"), fast_n), (("fast", "uniform"), fast_u),
                       (("promoted", "normal"), promoted_n), (("promoted", "uniform"), promoted_u),
                       (("fast", "total"), total_n), (("promoted", "total"), total_n)):
        assert abs(got[key] / value - 1) < 0.1, (key, got[key], value)


def test_every_example_file_loads():
    """examples/: each TOML is a model file (it has ``extends`` or ``paths``) that load_model
    accepts, a training config (``train_*.toml``) that tcsim.train's loader accepts, or a sweep
    grid that load_grid accepts."""
    import tcsim
    from tcsim.explore.grid import load_grid
    from tcsim.train.config import load_config
    files = sorted((REPO / "examples").glob("*.toml"))
    assert len(files) >= 3
    for path in files:
        text = path.read_text()
        if re.search(r"^(extends|\[\[paths\]\])", text, flags=re.M):
            tcsim.load_model(path)
        elif path.name.startswith("train_"):
            assert load_config(path)
        else:
            assert load_grid(path).points()
