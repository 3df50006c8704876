"""Every ```python block of README.md and of each docs/*.md page runs, in order, in one namespace
per page (as a reader would paste a page's blocks into one session), from the repository root;
and the README's two commands are the ones CI runs.

A block that must not run is preceded by the line ``<!-- readme-test: skip (reason) -->``; the
reason is required. The shapes in the examples are kept small so that every page runs in
seconds once the kernels are compiled.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
PROPOSAL_DOC = REPO / "docs" / "datapath.md"      # the worked hardware proposal
SKIP = re.compile(r"<!-- readme-test: skip \((.+)\) -->")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def code_blocks(text: str, language: str) -> list[tuple[int, str, str]]:
    """(line number, code, skip reason or "") of every fenced block in ``language``."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = lines[start - 2] if start >= 2 else ""
            match = SKIP.search(before)
            blocks.append((start + 1, "\n".join(body), match.group(1) if match else ""))
        i += 1
    return blocks


def test_the_block_parser_finds_blocks_and_markers():
    text = "x\n```python\na = 1\n```\n<!-- readme-test: skip (needs a GPU) -->\n```python\nb\n```\n"
    assert code_blocks(text, "python") == [(3, "a = 1", ""), (7, "b", "needs a GPU")]


# the pages with at least one python block, the README first
CODE_PAGES = [p for p in PAGES if code_blocks(p.read_text(), "python")]


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_the_pages_hold_the_examples():
    """The pages the block runner is given hold the examples (a move of text that left them
    behind, or a parser that finds none, fails here instead of passing with nothing run)."""
    counts = {_page_id(p): len(code_blocks(p.read_text(), "python")) for p in PAGES}
    assert counts["README.md"] >= 1, counts
    for page in ("docs/datapath.md", "docs/gemm.md", "docs/cuda.md", "docs/training.md"):
        assert counts[page] >= 1, counts
    assert sum(counts.values()) >= 8, counts


@pytest.mark.parametrize("page", CODE_PAGES, ids=_page_id)
def test_python_blocks_run_in_order(page, monkeypatch):
    pytest.importorskip("ml_dtypes")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(REPO)
    name = _page_id(page)
    blocks = code_blocks(page.read_text(), "python")
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    printed = io.StringIO()
    skipped = 0
    for line, code, skip in blocks:
        if skip:
            continue
        if re.search(r"^import torch\b", code, flags=re.M) and not _has_torch():
            skipped += 1                 # the torch extra is not installed: that block only
            continue
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(code, f"{name}:{line}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"{name} python block at line {line} raised "
                        f"{type(exc).__name__}: {exc}")
        ran += 1
    assert ran == len(blocks) - sum(1 for *_, s in blocks if s) - skipped
    if page == PROPOSAL_DOC:
        _check_proposal_claims(printed.getvalue())


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


PROPOSAL_ROWS = {"h100": "h100", "h100-f16 (the proposal)": "h100-f16",
                 "h100, 17-bit write-back": "h100, 17-bit write-back",
                 "h100-f16, RNE write-back": "h100-f16, RNE write-back",
                 "h100-f16, 17-bit write-back": "h100-f16, 17-bit write-back"}


def _proposal_table(text: str) -> dict:
    """The table of what the proposal example prints: (label, K) -> "4.50e-04"."""
    section = text.split("It prints (relative Frobenius error", 1)[1].split("\n\n", 2)[1]
    table = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[PROPOSAL_ROWS[cells[0]], 1024] = cells[1]
        table[PROPOSAL_ROWS[cells[0]], 4096] = cells[2]
    return table


def _check_proposal_claims(output: str) -> None:
    """What docs/datapath.md says the proposal example prints is what it prints (the inputs are
    seeded, the simulation bit-exact: every digit), and the ratios the text draws from it."""
    text = PROPOSAL_DOC.read_text()
    assert "16 32 14 proposal" in output.splitlines()
    assert "# 16 32 14 proposal" in text
    printed = {}
    for line in output.splitlines():
        m = re.match(r"(.+?)\s+K = (\d+): ([0-9.e+-]+)$", line)
        if m:
            printed[m.group(1), int(m.group(2))] = m.group(3)
    stated = _proposal_table(text)
    assert len(printed) == 10 and printed == stated, (printed, stated)
    err = {key: float(v) for key, v in printed.items()}
    claims = re.search(r"worse than H100, not better: ([0-9.]+) times the error\s+at K = 1024 "
                       r"and ([0-9.]+) times at K = 4096.*?\(([0-9.]+) times from K = 1024 to "
                       r"4096, against ([0-9.]+) times for h100\)", text, flags=re.S)
    assert claims, "docs/datapath.md states the proposal's ratios"
    r1024, r4096, g16, g13 = (float(v) for v in claims.groups())
    assert f"{err['h100-f16', 1024] / err['h100', 1024]:.1f}" == f"{r1024:.1f}"
    assert f"{err['h100-f16', 4096] / err['h100', 4096]:.1f}" == f"{r4096:.1f}"
    assert f"{err['h100-f16', 4096] / err['h100-f16', 1024]:.1f}" == f"{g16:.1f}"
    assert f"{err['h100', 4096] / err['h100', 1024]:.1f}" == f"{g13:.1f}"
    for k in (1024, 4096):        # the conclusions the text draws
        assert printed["h100, 17-bit write-back", k] == printed["h100", k]
        assert err["h100-f16", k] > err["h100", k] > 4 * err["h100-f16, RNE write-back", k]
        assert err["h100-f16, RNE write-back", k] > err["h100-f16, 17-bit write-back", k]
        assert err["h100", k] > 13 * err["h100-f16, 17-bit write-back", k]


def test_the_proposal_toml_is_the_shipped_example():
    """The worked proposal in docs/datapath.md is examples/h100_f16_proposal.toml (same keys and
    values)."""
    tomls = [code for _, code, _ in code_blocks(PROPOSAL_DOC.read_text(), "toml")
             if 'extends = "h100"' in code]
    assert len(tomls) == 1
    example = (REPO / "examples" / "h100_f16_proposal.toml").read_text()
    assert tomllib.loads(tomls[0]) == tomllib.loads(example)


# The two commands of the README's front section: a fresh machine runs them as written, and CI
# (.ci/run) runs the test command's pytest.
DEMO_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install '.[demo]' "
                "&& tcsim demo")
TEST_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' "
                "&& python -m pytest -q tests")


def test_readme_states_the_two_commands():
    section = README.read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = [code.strip() for _, code, _ in code_blocks(section, "bash")]
    assert commands == [DEMO_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    """.ci/run installs the test extra and runs the README's pytest over tests/ (its own flags
    added: no cache, durations)."""
    ci = (REPO / ".ci" / "run").read_text()
    install, pytest_part = TEST_COMMAND.split(" && ")[2:]
    assert install.replace("pip install", "python -m pip install -q") in ci
    run = re.search(r"^python -m pytest -q (.*)$", ci, flags=re.M)
    assert run and "tests" in run.group(1).split() and "-m" not in run.group(1).split(), ci
    assert pytest_part.startswith("python -m pytest -q ") and pytest_part.endswith(" tests")
