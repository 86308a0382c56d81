"""Neural amortised guides on encoder embeddings.

``q(w | x)`` is a Dirichlet (or logistic-normal) whose parameters come from a network on
the prompt embedding; ``q(z | x, y)`` is a diagonal Gaussian from a network on the prompt
and response embeddings. Positivity by construction: ``softplus(clamp(raw)) + floor``.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from torch.distributions.transforms import StickBreakingTransform
from vrm_pyro.guides.base import (
    DirichletWeightGuide,
    FeatureGuide,
    WeightGuide,
    sample_moments,
)
from vrm_pyro.models.base import STREAMS, local_noise
from vrm_pyro.models.nets import bounded, mlp, positive

from vrm_pyro.config import ModelConfig


class AmortisedDirichletWeightGuide(DirichletWeightGuide):
    """``q(w | x) = Dirichlet(softplus(f(e_x)) + floor)``."""

    def __init__(self, emb_dim: int, num_objectives: int, hidden_dim: int = 256, floor: float = 1e-2):
        super().__init__()
        self.num_objectives, self.floor = num_objectives, floor
        self.net = mlp(emb_dim, hidden_dim, num_objectives)
        # start near a moderately concentrated, uniform posterior: alpha ~ 2 per objective
        torch.nn.init.zeros_(self.net[-1].weight)
        torch.nn.init.constant_(self.net[-1].bias, 1.85)

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int) -> AmortisedDirichletWeightGuide:
        return cls(prompt_dim, cfg.num_objectives, cfg.hidden_dim, cfg.concentration_floor)

    def concentration(self, prompt: torch.Tensor) -> torch.Tensor:
        return positive(self.net(prompt), self.floor)


class AmortisedLogisticNormalWeightGuide(WeightGuide):
    """``q(w | x) = LogisticNormal(mu(e_x), sigma(e_x))`` (stick-breaking of a Gaussian in R^{K-1})."""

    def __init__(self, emb_dim: int, num_objectives: int, hidden_dim: int = 256, floor: float = 1e-3):
        super().__init__()
        if num_objectives < 2:
            raise ValueError("a logistic-normal weight guide needs num_objectives >= 2")
        self.num_objectives, self.floor = num_objectives, floor
        self.net = mlp(emb_dim, hidden_dim, 2 * (num_objectives - 1))

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int) -> AmortisedLogisticNormalWeightGuide:
        return cls(prompt_dim, cfg.num_objectives, cfg.hidden_dim, cfg.scale_floor)

    def _params(self, prompt):
        loc, raw = self.net(prompt).chunk(2, dim=-1)
        return bounded(loc), positive(raw, self.floor)

    def forward(self, prompt):
        return dist.LogisticNormal(*self._params(prompt))

    def draws(self, prompt, num_samples, *, seed=0, keys=None):
        loc, scale = self._params(prompt)
        eps = local_noise(keys, num_samples, prompt.shape[0], self.num_objectives - 1, prompt.device, seed,
                          STREAMS["w"])
        return StickBreakingTransform()(loc + scale * eps)

    def moments(self, prompt, *, num_samples=32, seed=0):
        return sample_moments(self.draws(prompt, num_samples, seed=seed))


class AmortisedFeatureGuide(FeatureGuide):
    """``q(z | x, y) = N(mu(e_x, h_y), diag sigma(e_x, h_y)^2)``."""

    def __init__(self, prompt_dim: int, feature_dim: int, hidden_dim: int = 256, floor: float = 1e-3,
                 response_dim: int | None = None):
        super().__init__()
        self.feature_dim, self.floor = feature_dim, floor
        self.net = mlp(prompt_dim + (response_dim or prompt_dim), hidden_dim, 2 * feature_dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int) -> AmortisedFeatureGuide:
        return cls(prompt_dim, cfg.feature_dim, cfg.hidden_dim, cfg.scale_floor, response_dim)

    def forward(self, prompt, response):
        loc, raw = self.net(torch.cat([prompt, response], dim=-1)).chunk(2, dim=-1)
        return dist.Normal(bounded(loc), positive(raw, self.floor)).to_event(1)
