"""A tcsim.torch training step on the GPU backend (device="cuda": numba's CUDA simulator here,
CPU tensors) gives the CPU backend's bits: forward outputs, input and weight gradients, and the
weights after an optimizer step. (DDP with the GPU backend: tests/test_torch_ddp.py.)"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba.cuda.extending", reason="the GPU backend needs numba-cuda")

import tcsim.torch as tt  # noqa: E402
from helpers import bits  # noqa: E402


def _tiny_step(device, recipe_name):
    """One forward / backward / SGD step of a tiny converted MLP; returns (y, x.grad, weight
    grads, weights after the step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.GELU(),
                                torch.nn.Linear(24, 16))
    tt.convert(model, tt.TrainingRecipe.named(recipe_name, model="h100"), exclude=(),
               device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = model(x)
    y.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    return y.detach(), x.grad, grads, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("recipe_name", ["deepseek_v3", "torchao_tensorwise"])
def test_training_step_on_the_cuda_backend_equals_cpu_bits(recipe_name):
    """The three GEMMs of each layer (fprop, dgrad, wgrad) on the GPU backend (numba's CUDA
    simulator here: CPU tensors, device="cuda") give the CPU backend's bits: outputs, input and
    weight gradients, and the weights after an optimizer step."""
    cpu = _tiny_step("cpu", recipe_name)
    gpu = _tiny_step("cuda", recipe_name)
    assert (bits(gpu[0]) == bits(cpu[0])).all()
    assert (bits(gpu[1]) == bits(cpu[1])).all()
    for g, c in zip(gpu[2] + gpu[3], cpu[2] + cpu[3]):
        assert (bits(g) == bits(c)).all()


def _gpt_step(device):
    """One step of tcsim.train's GPT (1 layer, width 16, 8 tokens) with its Linear layers on
    the DeepSeek-V3 recipe: (loss, gradients)."""
    from tcsim.train.config import ModelConfig
    from tcsim.train.data import VOCAB, Corpus
    from tcsim.train.model import GPT
    cfg = ModelConfig(n_layer=1, d_model=16, n_head=2, seq_len=8)
    x, y = map(torch.from_numpy, Corpus(20_000, 0.1).batch("train", 0, 0, 1, cfg.seq_len))
    torch.manual_seed(0)
    model = GPT(cfg, VOCAB)
    tt.convert(model, tt.TrainingRecipe.named("deepseek_v3", model="h100"), device=device)
    loss = model(x, y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.slow
def test_tiny_gpt_step_on_the_cuda_backend_equals_cpu_bits():
    cpu_loss, cpu_grads = _gpt_step("cpu")
    gpu_loss, gpu_grads = _gpt_step("cuda")
    assert (bits(gpu_loss) == bits(cpu_loss)).all()
    assert len(gpu_grads) == len(cpu_grads) > 0
    for g, c in zip(gpu_grads, cpu_grads):
        assert (bits(g) == bits(c)).all()
