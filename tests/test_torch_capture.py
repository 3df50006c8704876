"""tcsim.torch.OperandRecorder: real training operands saved at chosen steps."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim.torch as tt  # noqa: E402


def test_recorder_saves_x_w_dy_at_sampled_steps(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 128))
    tt.convert(model, tt.TrainingRecipe.torchao_tensorwise())
    stats = tt.GemmStats(every=2)
    rec = tt.OperandRecorder(tmp_path, layers=["2"], steps=[2]).attach(model, stats)
    xs = []
    for step in range(4):
        stats.begin_step(step)
        x = torch.randn(128, 128)
        h = model[1](model[0](x))
        xs.append(h.detach().numpy())
        out = model[2](h)
        out.backward(torch.ones_like(out))
    assert [p.name for p in rec.written] == ["2_step2.npz"]
    data = np.load(rec.written[0])
    assert np.array_equal(data["x"], xs[2])                       # layer 2's input at step 2
    assert np.array_equal(data["w"], model[2].weight.detach().numpy().T)
    assert np.array_equal(data["dy"], np.ones((128, 128), np.float32))
    assert model[0].capture is None                               # layer "0" not matched
