"""Every ```python block of README.md runs, in order, in one namespace (as a reader would paste
them into one session), from the repository root.

A block that must not run is preceded by the line ``<!-- readme-test: skip (reason) -->``; the
reason is required. The shapes in the README are kept small so that the whole file runs in
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


def test_readme_python_blocks_run_in_order(monkeypatch, tmp_path):
    pytest.importorskip("ml_dtypes")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(REPO)
    blocks = code_blocks(README.read_text(), "python")
    assert len(blocks) >= 4
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
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"README.md python block at line {line} raised "
                        f"{type(exc).__name__}: {exc}")
        ran += 1
    assert ran == len(blocks) - sum(1 for *_, s in blocks if s) - skipped
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
    """The README's table of what the proposal example prints: (label, K) -> "4.50e-04"."""
    section = text.split("It prints (relative Frobenius error", 1)[1].split("\n\n", 2)[1]
    table = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[PROPOSAL_ROWS[cells[0]], 1024] = cells[1]
        table[PROPOSAL_ROWS[cells[0]], 4096] = cells[2]
    return table


def _check_proposal_claims(output: str) -> None:
    """What the README says the proposal example prints is what it prints (the inputs are
    seeded, the simulation bit-exact: every digit), and the ratios the text draws from it."""
    text = README.read_text()
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
    assert claims, "the README states the proposal's ratios"
    r1024, r4096, g16, g13 = (float(v) for v in claims.groups())
    assert f"{err['h100-f16', 1024] / err['h100', 1024]:.1f}" == f"{r1024:.1f}"
    assert f"{err['h100-f16', 4096] / err['h100', 4096]:.1f}" == f"{r4096:.1f}"
    assert f"{err['h100-f16', 4096] / err['h100-f16', 1024]:.1f}" == f"{g16:.1f}"
    assert f"{err['h100', 4096] / err['h100', 1024]:.1f}" == f"{g13:.1f}"
    for k in (1024, 4096):        # the conclusions the README draws
        assert printed["h100, 17-bit write-back", k] == printed["h100", k]
        assert err["h100-f16", k] > err["h100", k] > 4 * err["h100-f16, RNE write-back", k]
        assert err["h100-f16, RNE write-back", k] > err["h100-f16, 17-bit write-back", k]
        assert err["h100", k] > 13 * err["h100-f16, 17-bit write-back", k]


def test_readme_proposal_toml_is_the_shipped_example():
    """The worked proposal in the README is examples/h100_f16_proposal.toml (same keys/values)."""
    tomls = [code for _, code, _ in code_blocks(README.read_text(), "toml")
             if 'extends = "h100"' in code]
    assert len(tomls) == 1
    example = (REPO / "examples" / "h100_f16_proposal.toml").read_text()
    assert tomllib.loads(tomls[0]) == tomllib.loads(example)


def _github_anchors(text: str) -> set:
    """The ids GitHub gives the headings of a Markdown file, and explicit ``<a id>`` anchors."""
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', text))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        anchors.add(re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_readme_links_to_its_own_sections_resolve():
    """Every ``](#anchor)`` link in README.md names one of its headings."""
    text = README.read_text()
    links = set(re.findall(r"\]\(#([A-Za-z0-9-]+)\)", text))
    assert "measured-times" in links
    assert links <= _github_anchors(text), links - _github_anchors(text)
