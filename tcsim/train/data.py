"""The training text: the standard library's own source files, byte by byte (no download).

The top-level ``*.py`` files of the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``), in sorted order, are concatenated until
``corpus_bytes``; the last ``val_fraction`` of it is the validation text. Tokens are bytes
(a vocabulary of 256: character level for this ASCII text). Batches are drawn from a generator
seeded with (seed, step), so every run of a grid sees the same batches and a resumed run the
same ones it would have seen.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import numpy as np

from ..errors import ConfigError

VOCAB = 256


def stdlib_text(n_bytes: int) -> tuple[bytes, list[str]]:
    """The first ``n_bytes`` of the stdlib's top-level .py files; (text, files used)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    chunks, used, size = [], [], 0
    for p in files:
        if size >= n_bytes:
            break
        data = p.read_bytes()
        chunks.append(data)
        used.append(p.name)
        size += len(data)
    text = b"".join(chunks)[:n_bytes]
    if len(text) < n_bytes:
        raise ConfigError(f"data.corpus_bytes: the standard library at {root} holds only "
                          f"{len(text)} bytes of top-level .py files (Python "
                          f"{sys.version.split()[0]})")
    return text, used


class Corpus:
    """Train / validation token arrays and the deterministic batches drawn from them."""

    def __init__(self, n_bytes: int, val_fraction: float):
        text, self.files = stdlib_text(n_bytes)
        tokens = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
        cut = int(len(tokens) * (1 - val_fraction))
        self.train, self.val = tokens[:cut], tokens[cut:]

    def batch(self, split: str, seed: int, index: int, batch_size: int, seq_len: int):
        """(inputs, targets), int64 arrays (batch_size, seq_len): batch ``index`` of ``split``
        for ``seed``; targets are the inputs shifted by one byte."""
        data = self.train if split == "train" else self.val
        hi = len(data) - seq_len - 1
        if hi <= 0:
            raise ConfigError(f"data: the {split} text ({len(data)} bytes) is shorter than "
                              f"model.seq_len + 1")
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
        starts = rng.integers(0, hi, size=batch_size)
        idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
        win = data[idx]
        return win[:, :-1], win[:, 1:]
