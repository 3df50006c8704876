"""Shared test fixtures: where the hardware corpus lives (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("TCSIM_CORPUS",
                             REPO.parent / "shared" / "corpora" / "khattak-mikaitis-2025"))


@pytest.fixture(scope="session")
def corpus_root() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"hardware corpus not found at {CORPUS} (set TCSIM_CORPUS)")
    return CORPUS
