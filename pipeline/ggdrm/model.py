"""The Gaussian-Gaussian Deep Relational Model (GGDRM, 001 section 3).

Two Gaussian visible layers, ``x`` (image features, ``X``) and ``y`` (speech features,
``Y``), with binary hidden layers ``h_1 .. h_L`` between them; each layer is connected only
to its neighbours. 001 gives the energy in the form of Nakashika's GCDRM (its equations did
not survive the text extraction; this is that form, with the Gaussian-Bernoulli RBM's
variance convention of Cho et al. 2011):

    E(x, h, y) = || (x - b) / s_x ||^2 / 2 - (x / s_x^2)^T W_1 h_1
                 - sum_l c_l^T h_l - sum_{l<L} h_l^T W_{l+1} h_{l+1}
                 - h_L^T W_{L+1} (y / s_y^2) + || (y - d) / s_y ||^2 / 2,

    p(x | h_1) = N(b + W_1 h_1, s_x^2),           p(y | h_L) = N(d + W_{L+1}^T h_L, s_y^2),
    p(h_1 = 1 | x, h_2) = sigmoid(c_1 + W_1^T (x / s_x^2) + W_2 h_2),
    p(h_l = 1 | h_{l-1}, h_{l+1}) = sigmoid(c_l + W_l^T h_{l-1} + W_{l+1} h_{l+1}),
    p(h_L = 1 | h_{L-1}, y) = sigmoid(c_L + W_L^T h_{L-1} + W_{L+1} (y / s_y^2)).

The variances are learned through their logs, ``z = log s^2`` (001: kept positive so).
With one hidden layer ``h_1`` touches both visible layers. Maximum likelihood follows
``d log p(x, y) / d theta = <-dE/d theta>_{p(h | x, y)} - <-dE/d theta>_{p(x, h, y)}``:
:meth:`GGDRM.energy` is differentiable, so the gradient of ``E(data, q) - E(model sample)``
(hidden states held fixed) is that estimate; the tests check it against finite differences
of the exact log-likelihood of a tiny model.

Layers are indexed as ``units = [x, h_1, ..., h_L, y]``; ``weights[k]`` joins ``units[k]``
and ``units[k + 1]`` and has shape ``(size_k, size_{k+1})``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

INIT_WEIGHT_STD = 0.01
"""Standard deviation of the random initial weights (Hinton's RBM guide)."""
INIT_LOG_VAR = -1.0
"""Initial log variance of a Gaussian layer (standardised data: variance 0.37). Starting
below the data's variance makes the hidden units explain it: at 1 a Gaussian-Bernoulli
RBM on whitened features (the PCA image features) keeps its weights near 0, as the
Gaussian alone already fits the data's first two moments."""
Units = list[torch.Tensor]
"""Per-layer states ``[x, h_1, ..., h_L, y]``, each ``(B, size)``."""


class GGDRM(nn.Module):
    """Gaussian ``x`` - binary ``h_1 .. h_L`` - Gaussian ``y``.

    Args:
        x_dim: width of the first visible layer (image features).
        y_dim: width of the second visible layer (speech features).
        hidden: widths of the hidden layers, ``x`` side first (001: ``(100, 100)``).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("a GGDRM needs at least one hidden layer")
        self.sizes = [x_dim, *hidden, y_dim]
        self.weights = nn.ParameterList(
            nn.Parameter(INIT_WEIGHT_STD * torch.randn(a, b))
            for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))
        self.hidden_bias = nn.ParameterList(nn.Parameter(torch.zeros(j)) for j in hidden)
        self.x_bias = nn.Parameter(torch.zeros(x_dim))
        self.y_bias = nn.Parameter(torch.zeros(y_dim))
        self.x_log_var = nn.Parameter(torch.full((x_dim,), INIT_LOG_VAR))
        self.y_log_var = nn.Parameter(torch.full((y_dim,), INIT_LOG_VAR))

    @property
    def n_hidden(self) -> int:
        """Return the number of hidden layers ``L``."""
        return len(self.hidden_bias)

    def _scaled(self, k: int, state: torch.Tensor) -> torch.Tensor:
        """Return what layer ``k`` sends through its weights: ``v / s^2`` for visible, ``h``."""
        if k == 0:
            return state * torch.exp(-self.x_log_var)
        if k == self.n_hidden + 1:
            return state * torch.exp(-self.y_log_var)
        return state

    def energy(self, units: Units) -> torch.Tensor:
        """Return ``E(x, h, y)`` per example, ``(B,)`` (001 section 3)."""
        x, y = units[0], units[-1]
        energy = (0.5 * ((x - self.x_bias) ** 2 * torch.exp(-self.x_log_var)).sum(-1)
                  + 0.5 * ((y - self.y_bias) ** 2 * torch.exp(-self.y_log_var)).sum(-1))
        for layer, bias in enumerate(self.hidden_bias, start=1):
            energy = energy - units[layer] @ bias
        for k, weight in enumerate(self.weights):
            below, above = self._scaled(k, units[k]), self._scaled(k + 1, units[k + 1])
            energy = energy - ((below @ weight) * above).sum(-1)
        return energy

    def hidden_input(self, layer: int, units: Units) -> torch.Tensor:
        """Return the total input of hidden layer ``layer`` (1..L) from its two neighbours."""
        below = self._scaled(layer - 1, units[layer - 1]) @ self.weights[layer - 1]
        above = self._scaled(layer + 1, units[layer + 1]) @ self.weights[layer].T
        return self.hidden_bias[layer - 1] + below + above

    def x_mean(self, h_first: torch.Tensor) -> torch.Tensor:
        """Return the mean of ``p(x | h_1)``: ``b + W_1 h_1``."""
        return self.x_bias + h_first @ self.weights[0].T

    def y_mean(self, h_last: torch.Tensor) -> torch.Tensor:
        """Return the mean of ``p(y | h_L)``: ``d + W_{L+1}^T h_L``."""
        return self.y_bias + h_last @ self.weights[-1]

    def visible_mean(self, k: int, units: Units) -> torch.Tensor:
        """Return the conditional mean of visible layer ``k`` (0: ``x``, L + 1: ``y``)."""
        return self.x_mean(units[1]) if k == 0 else self.y_mean(units[-2])

    def visible_std(self, k: int) -> torch.Tensor:
        """Return the standard deviations of visible layer ``k``."""
        return torch.exp(0.5 * (self.x_log_var if k == 0 else self.y_log_var))

    @torch.no_grad()
    def gibbs_sweep(self, units: Units) -> Units:
        """Return ``units`` after one block-Gibbs sweep: even layers, then odd layers."""
        units = list(units)
        last = len(units) - 1
        for parity in (0, 1):
            for k in range(parity, last + 1, 2):
                if k in (0, last):
                    units[k] = (self.visible_mean(k, units)
                                + self.visible_std(k) * torch.randn_like(units[k]))
                else:
                    units[k] = torch.bernoulli(torch.sigmoid(self.hidden_input(k, units)))
        return units

    def self_coupling(self, k: int) -> torch.Tensor:
        """Return ``sum_i W_ij^2 / s_i^2`` for the hidden units next to visible layer ``k``.

        Integrating a free Gaussian layer out of the energy couples the hidden units next to
        it through ``W^T diag(1 / s^2) W``; for a binary unit (``h^2 = h``) the diagonal of
        that matrix acts as half a bias, not as a coupling of the unit with itself.
        """
        if k == 0:
            return (self.weights[0] ** 2 * torch.exp(-self.x_log_var)[:, None]).sum(0)
        return (self.weights[-1] ** 2 * torch.exp(-self.y_log_var)).sum(1)

    @torch.no_grad()
    def mean_field(self, x: torch.Tensor | None, y: torch.Tensor | None, steps: int) -> Units:
        """Return mean-field states ``[x, mu_1, ..., mu_L, y]`` with the given layers clamped.

        A layer passed as None is inferred too. It is Gaussian given its hidden neighbour,
        so it is integrated out exactly: its state is its conditional mean given the hidden
        means, and the hidden layer next to it gets that mean's drive less its own
        self-coupling (:meth:`self_coupling` times ``mu - 1/2``), the mean-field equations
        of the hidden units' marginal. (Feeding the free layer's mean back unchanged makes a
        hidden unit excite itself through it; with the small variances maximum likelihood
        learns, that drives the units to saturation.) Hidden means start at 0 and each sweep
        updates them in order away from a clamped layer (``h_1 .. h_L`` when ``x`` is
        clamped, ``h_L .. h_1`` when only ``y`` is), so the first sweep is a feed-forward
        pass from the clamped side. With ``x`` clamped the returned ``y`` is the model's
        estimate of the speech features, and the other way round (001 section 3).
        """
        if x is None and y is None:
            raise ValueError("clamp at least one visible layer")
        like = x if x is not None else y
        batch = like.shape[0]
        last = self.n_hidden + 1
        units: Units = [like.new_zeros(batch, size) for size in self.sizes]
        units[0] = x if x is not None else units[0]
        units[last] = y if y is not None else units[last]
        free = {k: self.self_coupling(k) for k, v in ((0, x), (last, y)) if v is None}
        order = range(1, last) if x is not None else range(last - 1, 0, -1)
        for _ in range(steps):
            for k in free:
                units[k] = self.visible_mean(k, units)
            for layer in order:
                drive = self.hidden_input(layer, units)
                for k, coupling in free.items():
                    if abs(k - layer) == 1:
                        drive = drive - coupling * (units[layer] - 0.5)
                units[layer] = torch.sigmoid(drive)
        for k in free:
            units[k] = self.visible_mean(k, units)
        return units

    def predict_y(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Return the speech features inferred with the image features clamped, ``(B, Y)``."""
        return self.mean_field(x, None, steps)[-1]

    def predict_x(self, y: torch.Tensor, steps: int) -> torch.Tensor:
        """Return the image features inferred with the speech features clamped, ``(B, X)``."""
        return self.mean_field(None, y, steps)[0]
