"""Benchmark: one training step of the small GPT with simulated FP8 GEMMs against float32.

    python benchmarks/bench_train.py [--recipe deepseek_v3 --model h100 --repeat 3] [--tiny]

The 2-layer, width-128 character-level GPT of tcsim.train at 1024 tokens per step (8 sequences
of 128), its Linear layers converted with the training recipe (DeepSeek-V3 on h100 by default:
8 converted layers, 24 simulated GEMMs per step), against the same step of the unconverted model
(torch float32 matmuls), in the same process, same threads. --tiny: a 1-layer, width-32 GPT at
2 sequences of 16 tokens. Prints where the simulated step's time goes (wrapping the stages of
tcsim.gemm) and a last line of JSON: {"sim_step_s": ..., "f32_step_s": ..., "ratio": ...}.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

import tcsim.torch as tt
import tcsim.torch.linear as linear_module
from _timing import GEMM_STAGE_LABELS, gemm_stages, parse_with_tiny, timed_stages
from tcsim.train.config import ModelConfig
from tcsim.train.data import VOCAB, Corpus
from tcsim.train.model import GPT

# (model config, sequences per step, corpus bytes)
SIZES = {"default": (ModelConfig(n_layer=2, d_model=128, n_head=4, seq_len=128), 8, 200_000),
         "tiny": (ModelConfig(n_layer=1, d_model=32, n_head=2, seq_len=16), 2, 20_000)}
GEMM_TOTAL = "tcsim.gemm (all stages)"
COPIES = "torch <-> numpy copies"


def _step(model, opt, x, y) -> float:
    t0 = time.perf_counter()
    loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def _best(model, x, y, repeat: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    _step(model, opt, x, y)                     # warm-up (numba compiles / loads its cache)
    return min(_step(model, opt, x, y) for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="deepseek_v3", help="a tcsim.torch.TrainingRecipe name")
    ap.add_argument("--model", default="h100")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.set_defaults(size="default")
    args = parse_with_tiny(ap, repeat=1, size="tiny")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, n_seq, corpus_bytes = SIZES[args.size]
    corpus = Corpus(corpus_bytes, 0.1)
    x, y = map(torch.from_numpy, corpus.batch("train", 0, 0, n_seq, cfg.seq_len))

    torch.manual_seed(0)
    f32_model = GPT(cfg, VOCAB)
    t_f32 = _best(f32_model, x, y, max(args.repeat, 5))

    torch.manual_seed(0)
    sim_model = GPT(cfg, VOCAB)
    kwargs = {} if args.recipe in ("bf16", "fp32") else {"model": args.model}
    report = tt.convert(sim_model, tt.TrainingRecipe.named(args.recipe, **kwargs))
    t_sim = _best(sim_model, x, y, args.repeat)

    # where the time goes: one more step with tcsim.gemm and its stages wrapped
    times = defaultdict(float)
    stages = [(linear_module, "fp8_gemm", GEMM_TOTAL), (linear_module, "_np32", COPIES)]
    opt = torch.optim.AdamW(sim_model.parameters(), lr=1e-4)
    with timed_stages(stages + gemm_stages(), times):
        t_profiled = _step(sim_model, opt, x, y)
    n_gemms = 3 * len(report.converted)

    print(f"model: {cfg.n_layer} layers, width {cfg.d_model}, {n_seq * cfg.seq_len} tokens/step; "
          f"recipe {args.recipe} on {args.model}; {len(report.converted)} converted layers, "
          f"{n_gemms} simulated GEMMs per step; torch threads {torch.get_num_threads()}")
    print(f"float32 step        {t_f32 * 1e3:9.1f} ms")
    print(f"simulated step      {t_sim * 1e3:9.1f} ms  ({t_sim / t_f32:.1f}x)")
    print(f"profiled step       {t_profiled * 1e3:9.1f} ms, of which:")
    gemm_total = times[GEMM_TOTAL]
    print(f"  {GEMM_TOTAL:34s} {gemm_total * 1e3:8.1f} ms  {gemm_total / t_profiled:6.1%}")
    for label in GEMM_STAGE_LABELS:
        seconds = times[label]
        print(f"    {label:32s} {seconds * 1e3:8.1f} ms  {seconds / t_profiled:6.1%}")
    staged = sum(times[label] for label in GEMM_STAGE_LABELS)
    print(f"    {'other tcsim.gemm overhead':32s} {(gemm_total - staged) * 1e3:8.1f} ms")
    copies = times[COPIES]
    print(f"  {COPIES:34s} {copies * 1e3:8.1f} ms  {copies / t_profiled:6.1%}")
    rest = t_profiled - gemm_total - copies
    print(f"  {'rest of the step (torch)':34s} {rest * 1e3:8.1f} ms  {rest / t_profiled:6.1%}")
    print(json.dumps({"sim_step_s": t_sim, "f32_step_s": t_f32, "ratio": t_sim / t_f32}))

if __name__ == "__main__":
    main()
