r"""The Variational Reward Model as a Pyro program.

For a pair ``(x, a, b)`` with label ``l`` = P(a preferred)::

    w    ~ p(w | x)                      objective weights on the K-simplex
    z_a  ~ p(z | x, a),  z_b ~ p(z | x, b)   semantic features in R^D
    r_y  = w . u(z_y, y),  u(z, y) = g(z) [+ s(e_y)]
    l    ~ Bernoulli(logits = r_a - r_b)

``g`` is a small decoder from features to K per-objective scores. The optional
deterministic path ``s(e_y)`` (a linear map of the response embedding to K scores)
keeps the reward tied to the response when the KL pulls ``q(z)`` onto the prior; the
objective weights still mix its scores per prompt. ``w`` is drawn per pair (pairs that
share a prompt share its amortised posterior ``q(w | x)``), so minibatches need no
grouping by prompt.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn
from vrm_pyro.models.base import PreferenceModel, RewardOutput, fixed_rng, standard_normal_noise
from vrm_pyro.models.nets import mlp
from vrm_pyro.models.priors import (
    DirichletWeightPrior,
    FeaturePrior,
    StandardNormalFeaturePrior,
    WeightPrior,
)

from vrm_pyro.config import ModelConfig


class VariationalRewardModel(PreferenceModel):
    """VRM: ``forward(prompt, response_a, response_b, label=None, *, size=None)``.

    Args:
        emb_dim: E, embedding dimension.
        num_objectives: K.
        feature_dim: D.
        hidden_dim: width of the decoder ``g``.
        weight_prior: a :class:`~vrm_pyro.models.priors.WeightPrior` (default fixed Dirichlet(1)).
        feature_prior: a :class:`~vrm_pyro.models.priors.FeaturePrior` (default N(0, I)).
        deterministic_path: add ``s(e_y)`` to the decoded scores.
    """

    latent_sites = ("w", "z_a", "z_b")

    def __init__(self, emb_dim: int, *, num_objectives: int = 8, feature_dim: int = 16,
                 hidden_dim: int = 256, weight_prior: WeightPrior | None = None,
                 feature_prior: FeaturePrior | None = None, deterministic_path: bool = True):
        super().__init__()
        self.emb_dim, self.num_objectives, self.feature_dim = emb_dim, num_objectives, feature_dim
        self.weight_prior = weight_prior or DirichletWeightPrior(num_objectives)
        self.feature_prior = feature_prior or StandardNormalFeaturePrior(feature_dim)
        if self.weight_prior.num_objectives != num_objectives:
            raise ValueError(f"weight prior has K={self.weight_prior.num_objectives}, model has K={num_objectives}")
        if self.feature_prior.feature_dim != feature_dim:
            raise ValueError(f"feature prior has D={self.feature_prior.feature_dim}, model has D={feature_dim}")
        self.decoder = mlp(feature_dim, hidden_dim, num_objectives, input_norm=False)
        self.direct = nn.Linear(emb_dim, num_objectives) if deterministic_path else None

    @classmethod
    def from_config(cls, cfg: ModelConfig, emb_dim: int, *, weight_prior: WeightPrior,
                    feature_prior: FeaturePrior) -> VariationalRewardModel:
        return cls(emb_dim, num_objectives=cfg.num_objectives, feature_dim=cfg.feature_dim,
                   hidden_dim=cfg.hidden_dim, weight_prior=weight_prior, feature_prior=feature_prior,
                   deterministic_path=cfg.deterministic_path)

    def objective_scores(self, z: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """``u(z, y)``: ``z (..., B, D)``, ``response (B, E)`` -> ``(..., B, K)``."""
        u = self.decoder(z)
        if self.direct is not None:
            u = u + self.direct(response)
        return u

    def pair_logits(self, prompt, response_a, response_b):
        w = pyro.sample("w", self.weight_prior(prompt))
        z_a = pyro.sample("z_a", self.feature_prior(prompt, response_a))
        z_b = pyro.sample("z_b", self.feature_prior(prompt, response_b))
        u_diff = self.objective_scores(z_a, response_a) - self.objective_scores(z_b, response_b)
        return (w * u_diff).sum(-1)

    def _feature_samples(self, guide, prompt, response, num_samples):
        """``(S, B, D)`` reparameterised samples of q(z | x, y) with fixed noise."""
        q = guide.feature_guide(prompt, response).base_dist
        eps = standard_normal_noise(num_samples, self.feature_dim, prompt.device)
        return q.loc + q.scale * eps[:, None, :]

    def reward(self, guide, prompt, response, *, num_samples=32):
        """``E_q[w . u(z, y)]`` and its standard deviation, exactly for ``w`` (analytic moments
        where available) and with ``num_samples`` fixed-noise draws for ``z``."""
        w_mean, w_second = guide.weight_guide.moments(prompt, num_samples=num_samples)
        u = self.objective_scores(self._feature_samples(guide, prompt, response, num_samples), response)
        u_mean = u.mean(0)
        u_second = torch.einsum("sbi,sbj->bij", u, u) / u.shape[0]
        mean = (w_mean * u_mean).sum(-1)
        second = (w_second * u_second).sum((-2, -1))
        std = (second - mean.square()).clamp_min(0.0).sqrt()
        return RewardOutput(reward=mean, reward_std=std, weights=w_mean, scores=u_mean)

    def difference_samples(self, guide, prompt, response_a, response_b, *, num_samples=32, seed=0):
        """``w . (u_a - u_b)`` for ``num_samples`` seeded draws of q(w|x), q(z_a|x,a), q(z_b|x,b): ``(S, B)``."""
        with fixed_rng(seed, prompt.device):
            w = guide.weight_guide(prompt).rsample((num_samples,))
        u_a = self.objective_scores(self._feature_samples(guide, prompt, response_a, num_samples), response_a)
        u_b = self.objective_scores(self._feature_samples(guide, prompt, response_b, num_samples), response_b)
        return (w * (u_a - u_b)).sum(-1)
