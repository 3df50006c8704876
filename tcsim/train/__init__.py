"""``tcsim.train``: FP8 training runs of a small character-level GPT on the modelled tensor core.

    tcsim train CONFIG.toml --out DIR [--workers N]      (or python -m tcsim.train ...)
    from tcsim.train import load_config, run_grid, load_losses, load_gemm_stats

The config (tcsim.train.config) names a grid of training recipes and GPU models; each run
trains the same GPT from the same seed on the same batches of the standard library's source
text, with its Linear layers converted by tcsim.torch. Needs PyTorch (the ``torch`` extra).
"""

from .config import Config, RunSpec, load_config, parse_config


def __getattr__(name):          # the runner imports torch: load it only when asked for
    if name in ("run_grid", "run_one", "load_losses", "load_gemm_stats", "plot_losses"):
        from . import runner
        return getattr(runner, name)
    raise AttributeError(name)


__all__ = ["Config", "RunSpec", "load_config", "parse_config", "run_grid", "run_one",
           "load_losses", "load_gemm_stats", "plot_losses"]
