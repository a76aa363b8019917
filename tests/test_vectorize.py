"""vectorize equals a loop over the original modules, incl. dropout and BatchNorm statistics."""

import copy

import torch
from torch import nn

import deepens as d

M = 4


def make():
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)
    ).double()


def test_train_mode_equals_loop_with_dropout_and_batchnorm():
    modules = [make() for _ in range(M)]
    ens = d.vectorize(copy.deepcopy(modules))
    ens.train()
    x = torch.randn(M, 8, 6, dtype=torch.float64)
    torch.manual_seed(99)
    out = ens(x)
    torch.manual_seed(99)  # vmap draws each member's dropout mask in member order from the global RNG
    ref = torch.stack([m.train()(x[i]) for i, m in enumerate(modules)])
    assert torch.allclose(out, ref, atol=1e-12)
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        stacked = ens.stacked.get_buffer(name)
        for i, m in enumerate(modules):
            assert torch.allclose(stacked[i].double(), m.get_buffer(name).double(), atol=1e-12), name
    # the dropout masks really differ between members: zero patterns differ
    h = ens.stacked  # noqa: F841 - structure kept
    zeros = (out == 0).sum()
    assert zeros == (ref == 0).sum()


def test_eval_mode_and_gradients_equal_loop():
    modules = [make() for _ in range(M)]
    for m in modules:  # give BN non-trivial statistics
        m.train()(torch.randn(32, 6, dtype=torch.float64))
    ens = d.vectorize(copy.deepcopy(modules)).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    out = ens(x)
    ref = torch.stack([m.eval()(x) for m in modules])
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for name, p in ens.stacked.named_parameters():
        for i, m in enumerate(modules):
            assert torch.allclose(p.grad[i], m.get_parameter(name).grad, atol=1e-12)


def test_per_member_dropout_masks_differ():
    ens = d.vectorize(nn.Sequential(nn.Linear(3, 200), nn.Dropout(0.5)), 3, seed=0).train()
    out = ens(torch.ones(1, 3))
    pattern = out != 0
    assert not torch.equal(pattern[0], pattern[1]) and not torch.equal(pattern[1], pattern[2])


def test_trains_with_a_standard_optimizer_like_the_loop():
    modules = [nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double() for _ in range(3)]
    ens = d.vectorize(copy.deepcopy(modules))
    opt = torch.optim.SGD(ens.parameters(), lr=0.1, momentum=0.9)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in modules]
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    for _ in range(5):
        opt.zero_grad()
        ((ens(x) - y) ** 2).mean(dim=(1, 2)).sum().backward()
        opt.step()
        for m, o in zip(modules, opts, strict=True):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
    ref = torch.stack([m(x) for m in modules])
    assert torch.allclose(ens(x), ref, atol=1e-12)


def test_seeded_template_and_first_k():
    a = d.vectorize(d.MLP(4, [8], 2), 4, seed=1)
    b = d.vectorize(d.MLP(4, [8], 2), 4, seed=1)
    assert torch.equal(a.stacked.fc1.weight, b.stacked.fc1.weight)
    x = torch.randn(3, 4)
    assert torch.allclose(a.first(2)(x), a(x)[:2], atol=1e-6)
    assert a.first(2).stacked.fc1.weight.shape[0] == 2


def test_member_returns_the_original_module():
    modules = [make() for _ in range(M)]
    for m in modules:
        m.train()(torch.randn(32, 6, dtype=torch.float64))
    ens = d.vectorize(copy.deepcopy(modules)).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    for i, m in enumerate(modules):
        member = ens.member(i).eval()
        assert type(member) is type(m)
        assert torch.equal(member(x), m.eval()(x))
        for name, b in m.named_buffers():
            assert torch.equal(member.get_buffer(name), b)
    try:
        ens.member(M)
    except d.DeepensError as err:
        assert "index" in str(err)
    else:
        raise AssertionError("member(M) must raise")
