"""Two adjacent GGDRM layers as an RBM, for greedy pre-training (001 section 3, as for DBMs).

A :class:`LayerPair` has a lower and an upper layer, each Gaussian (with a learned log
variance) or binary, joined by one weight matrix, with the energy of the matching part of
:class:`~pipeline.ggdrm.model.GGDRM`. Pre-training fits, by one-step contrastive divergence
(:func:`contrastive_divergence`):

- the image side ``x - h_1`` and the speech side ``h_L - y`` (Gaussian-Bernoulli RBMs),
- for ``L > 2``, ``h_{l-1} - h_l`` stacked on the image side (binary RBMs on the layer
  below's posterior means, as in a DBN),
- the junction ``h_{L-1} - h_L`` between the two stacks, with both layers observed (their
  posterior means given the frame's image and its speech): this is where the two
  modalities meet.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.ggdrm.model import INIT_LOG_VAR, INIT_WEIGHT_STD


class LayerPair(nn.Module):
    """Lower and upper layer (``(A,)`` and ``(B,)`` units) joined by ``weight`` ``(A, B)``."""

    def __init__(self, lower: int, upper: int, lower_gaussian: bool, upper_gaussian: bool) -> None:
        super().__init__()
        self.gaussian = (lower_gaussian, upper_gaussian)
        self.weight = nn.Parameter(INIT_WEIGHT_STD * torch.randn(lower, upper))
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(lower)),
                                        nn.Parameter(torch.zeros(upper))])
        self.log_vars = nn.ParameterList([nn.Parameter(torch.full((lower,), INIT_LOG_VAR)),
                                          nn.Parameter(torch.full((upper,), INIT_LOG_VAR))])

    def _scaled(self, side: int, state: torch.Tensor) -> torch.Tensor:
        return state * torch.exp(-self.log_vars[side]) if self.gaussian[side] else state

    def energy(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Return the energy of each example, ``(B,)``."""
        energy = -(self._scaled(0, lower) @ self.weight * self._scaled(1, upper)).sum(-1)
        for side, state in enumerate((lower, upper)):
            bias = self.biases[side]
            if self.gaussian[side]:
                energy = energy + 0.5 * ((state - bias) ** 2
                                         * torch.exp(-self.log_vars[side])).sum(-1)
            else:
                energy = energy - state @ bias
        return energy

    def mean(self, side: int, other: torch.Tensor) -> torch.Tensor:
        """Return the conditional mean of ``side`` (0 lower, 1 upper) given the other layer."""
        if side == 0:
            total = self.biases[0] + self._scaled(1, other) @ self.weight.T
        else:
            total = self.biases[1] + self._scaled(0, other) @ self.weight
        return total if self.gaussian[side] else torch.sigmoid(total)

    def sample(self, side: int, other: torch.Tensor) -> torch.Tensor:
        """Return a sample of ``side`` given the other layer."""
        mean = self.mean(side, other)
        if self.gaussian[side]:
            return mean + torch.exp(0.5 * self.log_vars[side]) * torch.randn_like(mean)
        return torch.bernoulli(mean)


def contrastive_divergence(pair: LayerPair, lower: torch.Tensor | None,
                           upper: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Return CD-1's surrogate loss for a batch; its gradient is minus the CD-1 estimate.

    A layer given as None is latent (its posterior mean is the positive phase); both given
    means both are observed (the junction). The chain starts from an observed layer: the
    other layer is sampled, the observed one reconstructed (sampled when Gaussian, its mean
    when binary, Hinton's recipe) and the other layer's mean taken again.
    """
    with torch.no_grad():
        source = 0 if lower is not None else 1
        target = 1 - source
        states = [lower, upper]
        if states[target] is None:
            states[target] = pair.mean(target, states[source])
        drawn = pair.sample(target, states[source])
        rebuilt = (pair.sample(source, drawn) if pair.gaussian[source]
                   else pair.mean(source, drawn))
        negative = [None, None]
        negative[source], negative[target] = rebuilt, pair.mean(target, rebuilt)
    loss = pair.energy(*states).mean() - pair.energy(*negative).mean()
    return {"loss": loss}
