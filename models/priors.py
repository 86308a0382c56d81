"""Priors over the objective weights ``w`` (on the K-simplex) and the features ``z`` (in R^D).

A prior is an ``nn.Module`` that maps embeddings to a ``pyro.distributions`` object with
batch shape ``(B,)``: weight priors are called as ``prior(prompt_emb)`` and give event
shape ``(K,)``; feature priors are called as ``prior(prompt_emb, response_features)`` and give
event shape ``(D,)``. The model samples from whatever the prior returns, so swapping a
prior is passing another object (see :mod:`vrm_pyro.registry` for the names).

A prior that sees what its guide sees can copy it and make its KL free: the fixed priors
(``dirichlet``, ``standard_normal``) see nothing, ``prompt_*`` priors see the prompt only while
``q(z | x, y)`` also sees the response; ``response_gaussian`` sees the same as ``q(z | x, y)`` and
so offers the features a free route (kept for ablations).

All build from a :class:`~vrm_pyro.config.ModelConfig` with ``from_config(cfg, prompt_dim, response_dim)``.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from torch import nn
from vrm_pyro.models.nets import bounded, mlp, positive

from vrm_pyro.config import ModelConfig


class WeightPrior(nn.Module):
    """Base class: ``forward(prompt_emb (B, E)) -> distribution over the K-simplex, batch (B,)``."""

    num_objectives: int

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int) -> WeightPrior:
        raise NotImplementedError


class DirichletWeightPrior(WeightPrior):
    """Fixed symmetric ``Dirichlet(alpha_0 * 1_K)``; ``alpha_0 = 1`` is uniform on the simplex."""

    def __init__(self, num_objectives: int, concentration: float = 1.0):
        super().__init__()
        self.num_objectives = num_objectives
        self.register_buffer("concentration", torch.full((num_objectives,), float(concentration)))

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(cfg.num_objectives, cfg.weight_concentration)

    def forward(self, prompt_emb: torch.Tensor) -> dist.Dirichlet:
        return dist.Dirichlet(self.concentration.expand(prompt_emb.shape[0], self.num_objectives))


class PromptDirichletWeightPrior(WeightPrior):
    """``Dirichlet(alpha(x))`` with ``alpha(x) = softplus(f(e_x)) + floor`` from a prompt network."""

    def __init__(self, emb_dim: int, num_objectives: int, hidden_dim: int = 256, floor: float = 1e-2):
        super().__init__()
        self.num_objectives, self.floor = num_objectives, floor
        self.net = mlp(emb_dim, hidden_dim, num_objectives)

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(prompt_dim, cfg.num_objectives, cfg.hidden_dim, cfg.concentration_floor)

    def forward(self, prompt_emb):
        return dist.Dirichlet(positive(self.net(prompt_emb), self.floor))


class LogisticNormalWeightPrior(WeightPrior):
    """Fixed logistic-normal: ``w = stick_breaking(v)``, ``v ~ N(0, I_{K-1})`` (``LogisticNormal``)."""

    def __init__(self, num_objectives: int):
        super().__init__()
        if num_objectives < 2:
            raise ValueError("a logistic-normal weight prior needs num_objectives >= 2")
        self.num_objectives = num_objectives
        self.register_buffer("loc", torch.zeros(num_objectives - 1))

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(cfg.num_objectives)

    def forward(self, prompt_emb):
        loc = self.loc.expand(prompt_emb.shape[0], -1)
        return dist.LogisticNormal(loc, torch.ones_like(loc))


class PromptLogisticNormalWeightPrior(WeightPrior):
    """Logistic-normal with ``v ~ N(mu(x), sigma(x))`` from a prompt network."""

    def __init__(self, emb_dim: int, num_objectives: int, hidden_dim: int = 256, floor: float = 1e-3):
        super().__init__()
        self.num_objectives, self.floor = num_objectives, floor
        self.net = mlp(emb_dim, hidden_dim, 2 * (num_objectives - 1))

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(prompt_dim, cfg.num_objectives, cfg.hidden_dim, cfg.scale_floor)

    def forward(self, prompt_emb):
        loc, raw = self.net(prompt_emb).chunk(2, dim=-1)
        return dist.LogisticNormal(bounded(loc), positive(raw, self.floor))


class FeaturePrior(nn.Module):
    """Base class: ``forward(prompt_emb, response_emb) -> Normal(.).to_event(1)``, batch (B,), event (D,)."""

    feature_dim: int

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int) -> FeaturePrior:
        raise NotImplementedError


class StandardNormalFeaturePrior(FeaturePrior):
    """``z ~ N(0, I_D)`` for every response."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.register_buffer("zero", torch.zeros(feature_dim))

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(cfg.feature_dim)

    def forward(self, prompt_emb, response_emb):
        loc = self.zero.expand(prompt_emb.shape[0], self.feature_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)


class _ConditionalGaussian(FeaturePrior):
    def __init__(self, in_dim: int, feature_dim: int, hidden_dim: int, floor: float):
        super().__init__()
        self.feature_dim, self.floor = feature_dim, floor
        self.net = mlp(in_dim, hidden_dim, 2 * feature_dim)

    def _normal(self, h):
        loc, raw = self.net(h).chunk(2, dim=-1)
        return dist.Normal(bounded(loc), positive(raw, self.floor)).to_event(1)


class PromptGaussianFeaturePrior(_ConditionalGaussian):
    """``z ~ N(mu(x), diag sigma(x)^2)``: what features to expect for this prompt."""

    def __init__(self, emb_dim: int, feature_dim: int, hidden_dim: int = 256, floor: float = 1e-3):
        super().__init__(emb_dim, feature_dim, hidden_dim, floor)

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(prompt_dim, cfg.feature_dim, cfg.hidden_dim, cfg.scale_floor)

    def forward(self, prompt_emb, response_emb):
        return self._normal(prompt_emb)


class ResponseGaussianFeaturePrior(_ConditionalGaussian):
    """``z ~ N(mu(x, y), diag sigma(x, y)^2)``: a conditional-VAE prior network on the response (it sees what
    ``q(z | x, y)`` sees, so its KL can be driven to zero: a free route, for ablations)."""

    def __init__(self, prompt_dim: int, feature_dim: int, hidden_dim: int = 256, floor: float = 1e-3,
                 response_dim: int | None = None):
        super().__init__(prompt_dim + (response_dim or prompt_dim), feature_dim, hidden_dim, floor)

    @classmethod
    def from_config(cls, cfg, prompt_dim, response_dim):
        return cls(prompt_dim, cfg.feature_dim, cfg.hidden_dim, cfg.scale_floor, response_dim)

    def forward(self, prompt_emb, response_emb):
        return self._normal(torch.cat([prompt_emb, response_emb], dim=-1))
