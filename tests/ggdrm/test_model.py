"""The GGDRM's energy, conditionals, likelihood gradient and sampler on a tiny model.

A model with 2 image units, 1 speech unit and hidden layers of 2 + 2 binary units has 16
hidden states: its log-likelihood is exact in closed form (Gaussian integrals per hidden
state), so the training gradient can be checked against finite differences of it, and its
moments against a long Gibbs run.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline.ggdrm.model import GGDRM

HIDDEN = (2, 2)


@pytest.fixture
def tiny() -> GGDRM:
    torch.manual_seed(3)
    model = GGDRM(2, 1, HIDDEN).double()
    with torch.no_grad():
        for weight in model.weights:
            weight.copy_(torch.randn_like(weight) * 0.8)
        for bias in model.hidden_bias:
            bias.copy_(torch.randn_like(bias) * 0.5)
        model.x_bias.copy_(torch.tensor([0.3, -0.2]))
        model.y_bias.copy_(torch.tensor([0.1]))
        model.x_log_var.copy_(torch.tensor([-0.3, 0.2]))
        model.y_log_var.copy_(torch.tensor([-0.5]))
    return model


def hidden_states() -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (h1, h2) of the tiny model."""
    bits = list(itertools.product((0.0, 1.0), repeat=sum(HIDDEN)))
    return [(np.array(b[:HIDDEN[0]]), np.array(b[HIDDEN[0]:])) for b in bits]


def numpy_params(model: GGDRM) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in model.named_parameters()}


def energy_by_hand(p: dict[str, np.ndarray], x, h1, h2, y) -> float:
    """001 section 3's energy, written out for L = 2."""
    sx, sy = np.exp(p["x_log_var"]), np.exp(p["y_log_var"])
    return float(np.sum((x - p["x_bias"]) ** 2 / (2 * sx)) - (x / sx) @ p["weights.0"] @ h1
                 - p["hidden_bias.0"] @ h1 - p["hidden_bias.1"] @ h2 - h1 @ p["weights.1"] @ h2
                 - h2 @ p["weights.2"] @ (y / sy) + np.sum((y - p["y_bias"]) ** 2 / (2 * sy)))


def log_terms(p: dict[str, np.ndarray]) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Per hidden state: log of its weight after integrating x and y, and their means."""
    sx, sy = np.exp(p["x_log_var"]), np.exp(p["y_log_var"])
    terms = []
    for h1, h2 in hidden_states():
        mx = p["x_bias"] + p["weights.0"] @ h1
        my = p["y_bias"] + h2 @ p["weights.2"]
        log_weight = (p["hidden_bias.0"] @ h1 + p["hidden_bias.1"] @ h2 + h1 @ p["weights.1"] @ h2
                      + np.sum((mx ** 2 - p["x_bias"] ** 2) / (2 * sx))
                      + np.sum((my ** 2 - p["y_bias"] ** 2) / (2 * sy))
                      + 0.5 * np.sum(np.log(2 * np.pi * sx)) + 0.5 * np.sum(np.log(2 * np.pi * sy)))
        terms.append((float(log_weight), mx, my))
    return terms


def log_likelihood(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Return the exact mean log p(x, y) over the rows of ``x``, ``y``."""
    log_z = np.logaddexp.reduce([t[0] for t in log_terms(p)])
    total = 0.0
    for xi, yi in zip(x, y, strict=True):
        total += np.logaddexp.reduce([-energy_by_hand(p, xi, h1, h2, yi)
                                      for h1, h2 in hidden_states()]) - log_z
    return total / len(x)


def units(model: GGDRM, x, h1, h2, y) -> list[torch.Tensor]:
    return [torch.as_tensor(np.atleast_2d(v), dtype=torch.float64) for v in (x, h1, h2, y)]


def test_energy_is_001s(tiny):
    p = numpy_params(tiny)
    rng = np.random.default_rng(0)
    for h1, h2 in hidden_states()[::3]:
        x, y = rng.normal(size=2), rng.normal(size=1)
        assert tiny.energy(units(tiny, x, h1, h2, y)).item() == pytest.approx(
            energy_by_hand(p, x, h1, h2, y), rel=1e-12, abs=1e-12)


def test_conditionals_match_energy_differences(tiny):
    p = numpy_params(tiny)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=2), rng.normal(size=1)
    h1, h2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    state = units(tiny, x, h1, h2, y)
    # Binary units: p(h = 1 | rest) = sigmoid(E(h = 0) - E(h = 1)).
    for layer, h in ((1, h1), (2, h2)):
        for j in range(len(h)):
            on, off = h.copy(), h.copy()
            on[j], off[j] = 1.0, 0.0
            args = [(x, on, h2, y), (x, off, h2, y)] if layer == 1 else [(x, h1, on, y),
                                                                       (x, h1, off, y)]
            gap = energy_by_hand(p, *args[1]) - energy_by_hand(p, *args[0])
            expected = 1.0 / (1.0 + np.exp(-gap))
            got = torch.sigmoid(tiny.hidden_input(layer, state))[0, j].item()
            assert got == pytest.approx(expected, rel=1e-10)
    # Gaussian units: the energy is quadratic in x_i; its minimum is the conditional mean and
    # its curvature the inverse variance (central finite differences).
    step = 1e-3
    for k, vector, mean in ((0, x, tiny.x_mean(state[1])), (3, y, tiny.y_mean(state[2]))):
        for i in range(len(vector)):
            def energy_at(value, i=i, k=k, vector=vector):
                moved = vector.copy()
                moved[i] = value
                return energy_by_hand(p, *((moved, h1, h2, y) if k == 0 else (x, h1, h2, moved)))
            centre = vector[i]
            slope = (energy_at(centre + step) - energy_at(centre - step)) / (2 * step)
            curvature = (energy_at(centre + step) - 2 * energy_at(centre)
                         + energy_at(centre - step)) / step ** 2
            assert centre - slope / curvature == pytest.approx(mean[0, i].item(), abs=1e-6)
            assert 1.0 / curvature == pytest.approx(tiny.visible_std(k)[i].item() ** 2, rel=1e-5)


def exact_gradient(model: GGDRM, x: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
    """Return the likelihood gradient as training computes it, with exact expectations.

    Training descends ``E(data, q) - E(model samples)`` with the states held fixed. Here the
    positive phase weights every hidden state by its exact posterior and the negative phase
    integrates the visible layers exactly (Gauss-Hermite, exact for the energy's quadratic
    dependence) over every hidden state weighted by its exact prior.
    """
    p = numpy_params(model)
    states = hidden_states()
    surrogate = torch.zeros((), dtype=torch.float64)
    for xi, yi in zip(x, y, strict=True):
        log_post = np.array([-energy_by_hand(p, xi, h1, h2, yi) for h1, h2 in states])
        post = np.exp(log_post - np.logaddexp.reduce(log_post))
        for weight, (h1, h2) in zip(post, states, strict=True):
            surrogate = surrogate + weight * model.energy(units(model, xi, h1, h2, yi))[0] / len(x)
    terms = log_terms(p)
    prior = np.exp(np.array([t[0] for t in terms]) - np.logaddexp.reduce([t[0] for t in terms]))
    nodes, node_weights = np.polynomial.hermite_e.hermegauss(3)  # N(0, 1) quadrature
    node_weights = node_weights / node_weights.sum()
    sx, sy = np.exp(0.5 * p["x_log_var"]), np.exp(0.5 * p["y_log_var"])
    for weight, (h1, h2), (_, mx, my) in zip(prior, states, terms, strict=True):
        quadrature = zip(nodes, node_weights, strict=True)
        for (a, wa), (b, wb), (c, wc) in itertools.product(quadrature, repeat=3):
            xq, yq = mx + sx * np.array([a, b]), my + sy * np.array([c])
            surrogate = surrogate - weight * wa * wb * wc * model.energy(
                units(model, xq, h1, h2, yq))[0]
    model.zero_grad()
    surrogate.backward()
    return {name: -param.grad.clone() for name, param in model.named_parameters()}


def test_training_gradient_is_the_log_likelihood_gradient(tiny):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(3, 2)), rng.normal(size=(3, 1))
    gradient = exact_gradient(tiny, x, y)
    p = numpy_params(tiny)
    step = 1e-5
    for name, value in p.items():
        for index in np.ndindex(value.shape):
            up, down = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
            up[name][index] += step
            down[name][index] -= step
            numeric = (log_likelihood(up, x, y) - log_likelihood(down, x, y)) / (2 * step)
            assert gradient[name][index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7), (
                name, index)


def test_mean_field_is_the_exact_posterior_with_one_hidden_layer():
    torch.manual_seed(0)
    model = GGDRM(3, 2, (4,)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    expected = torch.sigmoid(model.hidden_bias[0] + (x * torch.exp(-model.x_log_var))
                             @ model.weights[0]
                             + (y * torch.exp(-model.y_log_var)) @ model.weights[1].T)
    assert torch.allclose(model.mean_field(x, y, 1)[1], expected, atol=1e-12)


def test_gibbs_sampling_recovers_the_models_moments(tiny):
    terms = log_terms(numpy_params(tiny))
    log_w = np.array([t[0] for t in terms])
    prior = np.exp(log_w - np.logaddexp.reduce(log_w))
    mx = np.array([t[1] for t in terms])
    my = np.array([t[2] for t in terms])
    h = np.array([np.concatenate(s) for s in hidden_states()])
    mean_x, mean_y, mean_h = prior @ mx, prior @ my, prior @ h
    var_x = prior @ (mx - mean_x) ** 2 + np.exp(numpy_params(tiny)["x_log_var"])
    torch.manual_seed(5)
    chains = 4000
    state = [torch.zeros(chains, size, dtype=torch.float64) for size in tiny.sizes]
    samples = []
    for sweep in range(60):
        state = tiny.gibbs_sweep(state)
        if sweep >= 20:
            samples.append(torch.cat([state[0], state[1], state[2], state[3]], dim=1))
    drawn = torch.cat(samples).numpy()
    # 40 sweeps x 4000 chains: standard errors ~0.01 (the sweeps are correlated).
    assert drawn[:, :2].mean(0) == pytest.approx(mean_x, abs=0.04)
    assert drawn[:, 2:6].mean(0) == pytest.approx(mean_h, abs=0.03)
    assert drawn[:, 6:].mean(0) == pytest.approx(mean_y, abs=0.04)
    assert drawn[:, :2].var(0) == pytest.approx(var_x, rel=0.05)


def test_inference_in_both_directions_clamps_one_layer(tiny):
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    y = torch.tensor([[0.7]], dtype=torch.float64)
    forward = tiny.mean_field(x, None, 20)
    assert torch.equal(forward[0], x)
    assert torch.allclose(forward[-1], tiny.y_mean(forward[-2]))
    backward = tiny.mean_field(None, y, 20)
    assert torch.equal(backward[-1], y)
    assert torch.allclose(backward[0], tiny.x_mean(backward[1]))
    with pytest.raises(ValueError, match="clamp"):
        tiny.mean_field(None, None, 1)
