"""Training the GGDRM and its baselines on a synthetic pair of related feature sets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.config import TrainGgdrmParams
from pipeline.ggdrm.training import (
    Standardizer,
    finetune,
    fit_ridge,
    pretrain,
    train_dnn,
)


@pytest.fixture
def related(deterministic_rng, one_torch_thread):
    """Image-like x (4 dims) and speech-like y (6 dims) driven by 2 shared latent factors."""
    rng = deterministic_rng
    n = 600
    latent = rng.normal(size=(n, 2))
    x = np.c_[latent, 0.3 * rng.normal(size=(n, 2))] @ rng.normal(size=(4, 4))
    y = np.tanh(latent) @ rng.normal(size=(2, 6)) + 0.3 * rng.normal(size=(n, 6))
    scale_x, scale_y = Standardizer.fit(x[:500]), Standardizer.fit(y[:500])
    return ((scale_x.forward(x[:500]), scale_y.forward(y[:500])),
            (scale_x.forward(x[500:]), scale_y.forward(y[500:])))


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


@pytest.mark.parametrize("hidden", [(32,), (16, 16)])
def test_fine_tuned_ggdrm_predicts_both_ways(related, hidden):
    (x, y), (test_x, test_y) = related
    params = replace(TrainGgdrmParams(), hidden=hidden, pretrain_epochs=10, pretrain_lr=0.01,
                     finetune_epochs=40, finetune_lr=3e-3, inference_steps=20)
    model = pretrain(x, y, params)
    assert model.sizes == [4, *hidden, 6]
    model = finetune(model, x, y, params)
    # The means score ~1 on standardised features; a ridge map about 0.5 for y.
    assert mse(model.predict_y(test_x, params.inference_steps), test_y) < 0.85
    assert mse(model.predict_x(test_y, params.inference_steps), test_x) < 0.85
    assert torch.isfinite(model.x_log_var).all() and torch.isfinite(model.y_log_var).all()


def test_pretraining_and_fine_tuning_are_reproducible(related):
    (x, y), _ = related
    params = replace(TrainGgdrmParams(), hidden=(8, 8), pretrain_epochs=2, finetune_epochs=2)
    first = finetune(pretrain(x, y, params), x, y, params).state_dict()
    second = finetune(pretrain(x, y, params), x, y, params).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_baselines_beat_the_mean(related):
    (x, y), (test_x, test_y) = related
    params = replace(TrainGgdrmParams(), hidden=(16, 16), dnn_epochs=30)
    dnn = train_dnn(x, y, params, "dnn_lips_to_speech")
    assert [m.out_features for m in dnn if isinstance(m, torch.nn.Linear)] == [16, 16, 6]
    with torch.no_grad():
        assert mse(dnn(test_x), test_y) < 0.7
    ridge = fit_ridge(x, y, alpha=1.0)
    assert mse(torch.as_tensor(ridge.predict(test_x.numpy())), test_y) < 0.8


def test_standardizer_round_trip_and_constant_dimension():
    data = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    scale = Standardizer.fit(data)
    standard = scale.forward(data)
    assert standard[:, 1].abs().max() == 0
    assert np.allclose(scale.inverse(standard), data)
