"""Guide plumbing: the composite VRM guide, the empty guide of the baseline, base classes.

A guide takes the model's arguments ``(prompt, response_a, response_b, label=None, *,
size=None)`` and samples every latent site of the model inside the same ``pairs`` plate.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn
from vrm_pyro.models.base import pairs_plate


class WeightGuide(nn.Module):
    """``q(w | x)``: ``forward(prompt (B, E)) -> distribution on the K-simplex``, batch (B,).

    ``moments(prompt)`` returns ``E[w] (B, K)`` and ``E[w w^T] (B, K, K)``, used for the
    posterior mean and standard deviation of the reward.
    """

    num_objectives: int

    def moments(self, prompt: torch.Tensor, *, num_samples: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class FeatureGuide(nn.Module):
    """``q(z | x, y)``: ``forward(prompt (B, E), response (B, E)) -> Normal(.).to_event(1)``."""

    feature_dim: int


def dirichlet_moments(concentration: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``E[w]`` and ``E[w w^T]`` of ``Dirichlet(alpha)``: ``(B, K)``, ``(B, K, K)``.

    ``E[w_i w_j] = (alpha_i alpha_j + delta_ij alpha_i) / (alpha_0 (alpha_0 + 1))``.
    """
    a0 = concentration.sum(-1, keepdim=True)
    mean = concentration / a0
    outer = concentration.unsqueeze(-1) * concentration.unsqueeze(-2) + torch.diag_embed(concentration)
    second = outer / (a0 * (a0 + 1)).unsqueeze(-1)
    return mean, second


def sample_moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo ``E[w]``, ``E[w w^T]`` from samples ``(S, B, K)``."""
    return samples.mean(0), torch.einsum("sbi,sbj->bij", samples, samples) / samples.shape[0]


class VariationalGuide(nn.Module):
    """The VRM guide ``q(w | x) q(z_a | x, a) q(z_b | x, b)`` composed of two guide objects."""

    def __init__(self, weight_guide: WeightGuide, feature_guide: FeatureGuide):
        super().__init__()
        self.weight_guide = weight_guide
        self.feature_guide = feature_guide

    def forward(self, prompt, response_a, response_b, label=None, *, size=None):
        with pairs_plate(prompt, size):
            pyro.sample("w", self.weight_guide(prompt))
            pyro.sample("z_a", self.feature_guide(prompt, response_a))
            pyro.sample("z_b", self.feature_guide(prompt, response_b))


class EmptyGuide(nn.Module):
    """The guide of a model without latent variables (the Bradley–Terry baseline)."""

    def forward(self, prompt, response_a, response_b, label=None, *, size=None):
        return None
