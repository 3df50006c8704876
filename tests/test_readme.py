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


def _check_proposal_claims(output: str) -> None:
    """What the README says the proposal example prints is what it prints."""
    text = README.read_text()
    assert "16 32 14 proposal" in output.splitlines()
    assert "# 16 32 14 proposal" in text
    claimed = re.search(r"It prints about ([0-9e.-]+), ([0-9e.-]+) and ([0-9e.-]+):", text)
    assert claimed, "the README states the three errors of the proposal example"
    got = [float(line.split()[-1]) for line in output.splitlines()
           if line.startswith(("h100 ", "h100-f16"))]
    assert len(got) == 3
    for value, stated in zip(got, claimed.groups()):
        assert 0.7 < value / float(stated) < 1.4, (got, claimed.groups())
    assert got[1] > got[0] > 10 * got[2]       # the conclusion the README draws


def test_readme_proposal_toml_is_the_shipped_example():
    """The worked proposal in the README is examples/h100_f16_proposal.toml (same keys/values)."""
    tomls = [code for _, code, _ in code_blocks(README.read_text(), "toml")
             if 'extends = "h100"' in code]
    assert len(tomls) == 1
    example = (REPO / "examples" / "h100_f16_proposal.toml").read_text()
    assert tomllib.loads(tomls[0]) == tomllib.loads(example)
