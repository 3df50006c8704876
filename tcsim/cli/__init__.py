"""The ``tcsim`` command line.

    tcsim demo [--out PNG]                                  DeepSeek-V3 GEMM error table + plot
    tcsim mma A.npy B.npy [--c C.npy] [--out D.npy]          one bit-exact MMA
    tcsim gemm [--x X.npy --w W.npy | --m --n --k --dist]    an FP8 GEMM with a recipe
    tcsim corpus PATH... [--model NAME|FILE] [--json | --csv] replay recorded hardware outputs
    tcsim fit PATH... [--out DIR] [--probes-out NPZ]         identify a datapath from records
    tcsim explain [--example | --a .. --b ..] [--png F]      trace one output term by term
    tcsim sweep GRID.toml --out DIR [--scheduler ADDR]       design-space sweep to Parquet
    tcsim train CONFIG.toml [--out DIR] [--workers N]       FP8 training runs, loss curves
    tcsim models [NAME] [--json]                            list presets and their datapaths
    tcsim validate replay PATH... [--json]                  replay gpu_validate records (bits)
    tcsim validate suites --out DIR [--seed N]              write the GPU runner's input suites
    tcsim validate run --suite NAME --out PATH [--simulate P] run a suite on this machine's GPU
    tcsim validate unpack ARCHIVE... [--into DIR]           bring a device run's records home
    tcsim validate questions PATH... [--json]               open hardware questions answered

One module per command (``add_parser`` and its handler); ``common``: what several commands
share; ``parser``: the whole parser; ``entry``: ``main``, which turns bad input into one line.
"""

from .entry import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
