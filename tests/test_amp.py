"""Mixed precision, channels-last and torch.compile in the trainer: bf16 autocast on CPU agrees with fp32 within
its rounding, fp16 with a gradient scaler resumes bitwise, channels-last changes nothing but the layout, and an
unavailable compiler falls back to eager training with one message."""

import copy

import pytest
import torch

import deepens as d
from deepens.training import TrainConfig, train
from deepens.training.trainer import training_step


def _step(amp):
    torch.manual_seed(0)
    model = d.DeepEnsemble(d.ConvNet(1, 10, width=0.125, pool="avg"), 2, seed=0)
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    losses, out = training_step(model, opt, x, y, amp=amp)
    return losses, out, [p.detach().clone() for p in model.parameters()]


def test_bf16_autocast_agrees_with_fp32_within_its_rounding():
    """bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 % per operation); through four conv layers the
    logits and losses of one step stay within 2 % of fp32. The gradients pass the same layers backward, and small
    ones lose more (up to ~10 % per entry in the first layer here), so the update is compared as a direction: its
    cosine with the fp32 update is above 0.99."""
    ref_losses, ref_out, ref_params = _step(None)
    losses, out, params = _step("bf16")
    assert out.dtype == torch.float32
    assert torch.allclose(losses, ref_losses, rtol=2e-2)
    assert float((out - ref_out).abs().max()) <= 2e-2 * float(ref_out.abs().max())
    torch.manual_seed(0)
    init = [p.detach().clone() for p in d.DeepEnsemble(d.ConvNet(1, 10, width=0.125, pool="avg"), 2, seed=0)
            .parameters()]
    ref_update = torch.cat([(p - p0).ravel() for p0, p in zip(init, ref_params, strict=True)])
    amp_update = torch.cat([(p - p0).ravel() for p0, p in zip(init, params, strict=True)])
    assert float(torch.nn.functional.cosine_similarity(ref_update, amp_update, dim=0)) > 0.99


def test_fp16_with_a_gradient_scaler_resumes_bitwise(interrupted_and_resumed):
    cfg = dict(dataset="digits", model="mlp", widths=[64], members=2, epochs=2, batch_size=128, lr=0.1, seed=4,
               checkpoint_seconds=0, amp="fp16")
    ref, resumed = interrupted_and_resumed(cfg, after=15)
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fp32 = train(TrainConfig(**{**cfg, "amp": None}), progress=False)  # fp16 learns as fp32 does
    assert ref.metrics["test"]["nll"] == pytest.approx(fp32.metrics["test"]["nll"], rel=1e-2)
    with pytest.raises(d.DeepensError, match="amp"):
        TrainConfig(amp="fp8").validate()


def test_channels_last_and_compile_fallback(tmp_path, monkeypatch, capfd):
    cfg = dict(dataset="digits", model="convnet", pool="avg", width=0.0625, members=2, epochs=1, batch_size=256,
               lr=0.05, seed=4)
    plain = train(TrainConfig(**cfg), progress=False)
    last = train(TrainConfig(**cfg, channels_last=True), progress=False)
    for k, v in plain.model.state_dict().items():
        assert torch.allclose(v, last.model.state_dict()[k], atol=1e-5), k

    def broken(model, *args, **kwargs):
        def call(*a, **kw):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    compiled = train(TrainConfig(**cfg, compile=True), progress=False)
    assert "training eagerly" in capfd.readouterr().err
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, compiled.model.state_dict()[k]), k
