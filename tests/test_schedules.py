"""Learning-rate schedules against their closed forms."""

import math

import pytest

from deepens.training.schedules import lr_factor


def test_constant_and_step():
    assert lr_factor("constant", 7.3, 10, lr=0.1) == 1.0
    assert lr_factor("step", 29.9, 100, lr=0.1, step_size=30, step_factor=0.1) == 1.0
    assert lr_factor("step", 30.0, 100, lr=0.1, step_size=30, step_factor=0.1) == pytest.approx(0.1)
    assert lr_factor("step", 65.0, 100, lr=0.1, step_size=30, step_factor=0.5) == pytest.approx(0.25)


def test_cosine():
    kw = dict(lr=0.1, final_lr=0.001)
    assert lr_factor("cosine", 0, 10, **kw) == pytest.approx(1.0)
    assert lr_factor("cosine", 10, 10, **kw) == pytest.approx(0.01)
    assert lr_factor("cosine", 5, 10, **kw) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor("cosine", 2.5, 10, **kw) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_ee_paper_schedule():
    # EE App. C: lr 0.01 for the first 500 of 1000 epochs, then linear decay to 1e-4
    kw = dict(lr=0.01, decay_start=0.5, final_lr=1e-4)
    assert lr_factor("ee", 0, 1000, **kw) == 1.0
    assert lr_factor("ee", 500, 1000, **kw) == 1.0
    assert 0.01 * lr_factor("ee", 1000, 1000, **kw) == pytest.approx(1e-4)
    assert 0.01 * lr_factor("ee", 750, 1000, **kw) == pytest.approx((0.01 + 1e-4) / 2)
