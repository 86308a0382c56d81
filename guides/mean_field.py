"""Non-amortised (mean-field) guides for ablations.

:class:`MeanFieldWeightGuide` learns one free Dirichlet ``q(w)`` shared by every prompt.
Against the amortised guide it answers: does it help that the posterior objective
weights depend on the prompt? (A per-prompt table of parameters would not score prompts
unseen in training, which is all the evaluation does; features ``z`` of new responses
likewise need an amortised guide.)
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from vrm_pyro.guides.base import WeightGuide, dirichlet_moments
from vrm_pyro.models.nets import positive

from vrm_pyro.config import ModelConfig


class MeanFieldWeightGuide(WeightGuide):
    """``q(w) = Dirichlet(softplus(theta) + floor)`` with free parameters ``theta (K,)``."""

    def __init__(self, num_objectives: int, floor: float = 1e-2):
        super().__init__()
        self.num_objectives, self.floor = num_objectives, floor
        self.raw_concentration = torch.nn.Parameter(torch.full((num_objectives,), 1.85))

    @classmethod
    def from_config(cls, cfg: ModelConfig, emb_dim: int) -> MeanFieldWeightGuide:
        return cls(cfg.num_objectives, cfg.concentration_floor)

    def concentration(self, prompt):
        return positive(self.raw_concentration, self.floor).expand(prompt.shape[0], -1)

    def forward(self, prompt):
        return dist.Dirichlet(self.concentration(prompt))

    def moments(self, prompt, *, num_samples=32):
        return dirichlet_moments(self.concentration(prompt))
