"""Shared test fixtures: where the hardware corpus lives (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("TCSIM_CORPUS",
                             REPO.parent / "shared" / "corpora" / "khattak-mikaitis-2025"))
# The B200 sets of the same data, kept in a folder of their own beside CORPUS.
CORPUS_B200 = Path(os.environ.get("TCSIM_CORPUS_B200",
                                  REPO.parent / "shared" / "corpora" / "khattak-mikaitis-2025-b200"))


@pytest.fixture(scope="session")
def corpus_root() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"hardware corpus not found at {CORPUS} (set TCSIM_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def b200_root() -> Path:
    if not (CORPUS_B200 / "B200").is_dir():
        pytest.skip(f"B200 hardware corpus not found at {CORPUS_B200} (set TCSIM_CORPUS_B200)")
    return CORPUS_B200


MMASIM = Path(os.environ.get("TCSIM_MMASIM", REPO.parent / "shared" / "corpora" / "mmasim-2026"))


@pytest.fixture(scope="session")
def mmasim_root() -> Path:
    if not (MMASIM / "manifest.json").is_file():
        pytest.skip(f"MMA-Sim vectors not found at {MMASIM} (set TCSIM_MMASIM)")
    return MMASIM
