"""Non-amortised (mean-field) guides: global latents, and a shared weight posterior for ablations.

:class:`MeanFieldGlobalGuide` is the guide of every global latent (path weights ``theta``,
nuisance coefficients ``gamma``): an independent Normal per coordinate, its parameters free.

:class:`MeanFieldWeightGuide` learns one free Dirichlet ``q(w)`` shared by every prompt.
Against the amortised guide it answers: does it help that the posterior objective weights
depend on the prompt?
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import distributions as dist
from torch import nn
from vrm_pyro.guides.base import DirichletWeightGuide
from vrm_pyro.models.base import STREAMS, standard_normal_noise
from vrm_pyro.models.nets import positive

from vrm_pyro.config import ModelConfig


class MeanFieldGlobalGuide(nn.Module):
    """``q(theta) = N(loc, diag scale^2)`` for each global site ``{name: (shape, prior_std)}``.

    Locations start at 0 and scales at ``init_scale * prior_std`` (a tight start, as in Bayes by
    Backprop); scales are ``softplus(raw) + 1e-3 * prior_std``."""

    def __init__(self, sites: dict[str, tuple[tuple[int, ...], float]], init_scale: float = 0.1):
        super().__init__()
        self.shapes = {name: tuple(shape) for name, (shape, _) in sites.items()}
        self.floors = {name: 1e-3 * std for name, (_, std) in sites.items()}
        self.loc = nn.ParameterDict({n: nn.Parameter(torch.zeros(s)) for n, s in self.shapes.items()})
        raw = {n: math.log(math.expm1(max(init_scale * std - self.floors[n], 1e-12))) for n, (_, std) in sites.items()}
        self.raw_scale = nn.ParameterDict({n: nn.Parameter(torch.full(s, raw[n])) for n, s in self.shapes.items()})

    def distribution(self, name: str) -> dist.Distribution:
        scale = positive(self.raw_scale[name], self.floors[name])
        return dist.Normal(self.loc[name], scale).to_event(len(self.shapes[name]))

    def forward(self) -> dict[str, torch.Tensor]:
        return {name: pyro.sample(name, self.distribution(name)) for name in self.shapes}

    def draws(self, num_samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
        out = {}
        for name, shape in self.shapes.items():
            q = self.distribution(name).base_dist
            eps = standard_normal_noise(num_samples, shape, q.loc.device, seed=seed, stream=STREAMS.get(name, 9))
            out[name] = q.loc + q.scale * eps
        return out


class MeanFieldWeightGuide(DirichletWeightGuide):
    """``q(w) = Dirichlet(softplus(theta) + floor)`` with free parameters ``theta (K,)``."""

    def __init__(self, num_objectives: int, floor: float = 1e-2):
        super().__init__()
        self.num_objectives, self.floor = num_objectives, floor
        self.raw_concentration = torch.nn.Parameter(torch.full((num_objectives,), 1.85))

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int) -> MeanFieldWeightGuide:
        return cls(cfg.num_objectives, cfg.concentration_floor)

    def concentration(self, prompt):
        return positive(self.raw_concentration, self.floor).expand(prompt.shape[0], -1)

