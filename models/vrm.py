r"""The Variational Reward Model as a Pyro program.

For a pair ``(x, a, b)`` with label ``l`` = P(a preferred)::

    theta ~ N(0, sigma_theta^2 I)              global: path weights, (F, K)        [path="bayesian"]
    gamma ~ N(0, s^2 I)                        global: the judge's nuisance terms  [nuisance]
    v, c  ~ N(0, I), N(0, 3^2)                 global: the validity gate           [gate]
    for each pair:
        w    ~ p(w | x)                        objective weights on the K-simplex
        z_y  ~ p(z | x, y),  y in {a, b}       semantic features in R^D
        u_y  = g(z_y) + theta^T h_y            per-objective scores
        r_y  = w . u_y [+ log sigma(v . h_G,y + c)]
        l    ~ Bernoulli(logits = r_a - r_b + gamma . (φ(a) - φ(b)))
        [valid_y ~ Bernoulli(sigma(v . h_G,y + c)), observed: 0 for junk made by construction, else 1]

``h_y`` are the response features (:mod:`vrm_pyro.representations`), ``g`` a small decoder
from features to K scores. The authentic reward is ``r(x, y) = w . u_y``; the nuisance term is
the judge's, not the reward's. Every route from the response to the reward pays in the ELBO:
``z`` through its KL per response, ``theta`` through its KL once per dataset. ``w`` is drawn per
pair (pairs that share a prompt share its amortised posterior ``q(w | x)``; the trainer scales
the site by ``1 / (pairs of the prompt)``), so minibatches need no grouping by prompt.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn
from vrm_pyro.models.base import STREAMS, PreferenceModel, RewardOutput, row_keys
from vrm_pyro.models.nets import mlp
from vrm_pyro.models.paths import BayesianLinearPath, LinearPath
from vrm_pyro.models.priors import (
    DirichletWeightPrior,
    FeaturePrior,
    StandardNormalFeaturePrior,
    WeightPrior,
)

from vrm_pyro.config import ModelConfig


class VariationalRewardModel(PreferenceModel):
    """VRM: ``forward(prompt, response_a, response_b, label=None, nuisance_a=None, nuisance_b=None, *, size=None)``.

    Args:
        prompt_dim: E, width of the prompt embeddings.
        response_dim: F, width of the response features (default E).
        num_objectives: K.
        feature_dim: D.
        hidden_dim: width of the decoder ``g``.
        weight_prior: a :class:`~vrm_pyro.models.priors.WeightPrior` (default fixed Dirichlet(1)).
        feature_prior: a :class:`~vrm_pyro.models.priors.FeaturePrior` (default N(0, I)).
        path: ``"bayesian"`` (a :class:`~vrm_pyro.models.paths.BayesianLinearPath`), ``"point"``
            (a free linear map), ``"none"``, or a path module.
        path_prior_scale: prior std of a path score for unit-variance features.
        feature_groups: widths of the blocks of ``h`` that share the Bayesian path's prior variance equally
            (``None``: every dimension alike); see :class:`~vrm_pyro.models.paths.BayesianLinearPath`.
        orientation: per row of the path, 0 (free) or the code of a monotone prior, ``(F,)``; see
            :func:`vrm_pyro.representations.feature_orientation`.
        nuisance, decorrelation, gate: see :class:`~vrm_pyro.models.base.PreferenceModel`.
    """

    latent_sites = ("w", "z_a", "z_b")

    def __init__(self, prompt_dim: int, response_dim: int | None = None, *, num_objectives: int = 8,
                 feature_dim: int = 16, hidden_dim: int = 256, weight_prior: WeightPrior | None = None,
                 feature_prior: FeaturePrior | None = None, path: str | nn.Module = "bayesian",
                 path_prior_scale: float = 1.0, feature_groups: tuple[int, ...] | None = None,
                 orientation: tuple[int, ...] | None = None, nuisance: nn.Module | None = None,
                 decorrelation: float = 0.0, gate: nn.Module | None = None):
        super().__init__(nuisance=nuisance, decorrelation=decorrelation, gate=gate)
        response_dim = response_dim or prompt_dim
        self.prompt_dim, self.response_dim = prompt_dim, response_dim
        self.num_objectives, self.feature_dim = num_objectives, feature_dim
        self.weight_prior = weight_prior or DirichletWeightPrior(num_objectives)
        self.feature_prior = feature_prior or StandardNormalFeaturePrior(feature_dim)
        if self.weight_prior.num_objectives != num_objectives:
            raise ValueError(f"weight prior has K={self.weight_prior.num_objectives}, model has K={num_objectives}")
        if self.feature_prior.feature_dim != feature_dim:
            raise ValueError(f"feature prior has D={self.feature_prior.feature_dim}, model has D={feature_dim}")
        self.decoder = mlp(feature_dim, hidden_dim, num_objectives, input_norm=False)
        if isinstance(path, str):
            path = {"bayesian": lambda: BayesianLinearPath(response_dim, num_objectives, path_prior_scale,
                                                           groups=feature_groups, orientation=orientation),
                    "point": lambda: LinearPath(response_dim, num_objectives), "none": lambda: None}[path]()
        self.path = path

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int, *, weight_prior: WeightPrior,
                    feature_prior: FeaturePrior, nuisance: nn.Module | None = None,
                    feature_groups: tuple[int, ...] | None = None,
                    orientation: tuple[int, ...] | None = None,
                    gate: nn.Module | None = None) -> VariationalRewardModel:
        return cls(prompt_dim, response_dim, num_objectives=cfg.num_objectives, feature_dim=cfg.feature_dim,
                   hidden_dim=cfg.hidden_dim, weight_prior=weight_prior, feature_prior=feature_prior, path=cfg.path,
                   path_prior_scale=cfg.path_prior_scale, feature_groups=feature_groups,
                   orientation=orientation, nuisance=nuisance, decorrelation=cfg.decorrelation, gate=gate)

    def global_modules(self) -> list[nn.Module]:
        own = [self.path] if self.path is not None and self.path.global_sites else []
        return own + super().global_modules()

    def objective_scores(self, z: torch.Tensor, response: torch.Tensor, globals_: dict | None = None) -> torch.Tensor:
        """``u(z, y) = g(z) + theta^T h``: ``z (..., B, D)``, ``response (B, F)`` -> ``(..., B, K)``."""
        u = self.decoder(z)
        return u if self.path is None else u + self.path.scores(response, globals_ or {})

    def authentic_logits(self, globals_, prompt, response_a, response_b):
        w = pyro.sample("w", self.weight_prior(prompt))
        z_a = pyro.sample("z_a", self.feature_prior(prompt, response_a))
        z_b = pyro.sample("z_b", self.feature_prior(prompt, response_b))
        u_diff = self.decoder(z_a) - self.decoder(z_b)
        if self.path is not None:  # a difference of scores (not the score of a difference: a bias would favour a)
            u_diff = u_diff + self.path.scores(response_a, globals_) - self.path.scores(response_b, globals_)
        return (w * u_diff).sum(-1)

    # -- posterior summaries -------------------------------------------------------------------------
    def path_moments(self, guide, response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the path scores ``theta^T h``: ``(B, K)`` each (zeros without a path)."""
        if self.path is None:
            zero = response.new_zeros(response.shape[0], self.num_objectives)
            return zero, zero
        posterior = guide.posterior(self.path.site) if self.path.global_sites else None
        return self.path.moments(response, posterior)

    def reward(self, guide, prompt, response, *, num_samples=32, seed=0):
        r"""``E_q[w . u(z, y)]``, exact for ``w`` (analytic moments where available) and ``theta`` (mean-field
        Gaussian), with ``num_samples`` seeded draws of ``z``. ``reward_std`` is the epistemic part,
        ``Var_theta(E_{w,z}[r | theta]) = sum_k E[w_k]^2 Var((theta^T h)_k)`` (plus the validity gate's variance
        over draws of its sites, if any); ``local_std`` the rest of the total posterior variance (law of total
        variance)."""
        w_mean, w_second = guide.weight_guide.moments(prompt, num_samples=num_samples, seed=seed)
        z = guide.feature_guide.draws(prompt, response, num_samples, seed=seed, stream=STREAMS["z_a"])
        g = self.decoder(z)
        g_mean = g.mean(0)
        g_second = torch.einsum("sbi,sbj->bij", g, g) / g.shape[0]
        p_mean, p_var = self.path_moments(guide, response)
        u_mean = g_mean + p_mean
        cross = g_mean.unsqueeze(-1) * p_mean.unsqueeze(-2)
        u_second = (g_second + cross + cross.transpose(-1, -2) + p_mean.unsqueeze(-1) * p_mean.unsqueeze(-2)
                    + torch.diag_embed(p_var))
        mean = (w_mean * u_mean).sum(-1)
        total = ((w_second * u_second).sum((-2, -1)) - mean.square()).clamp_min(0.0)
        epistemic = (w_mean.square() * p_var).sum(-1)
        gate_mean, gate_var = self.gate_moments(guide, prompt, response, num_samples, seed)
        mean, total, epistemic = mean + gate_mean, total + gate_var, epistemic + gate_var
        has_globals = (self.path is not None and bool(self.path.global_sites)) or self.gate is not None
        return RewardOutput(reward=mean, reward_std=epistemic.sqrt() if has_globals else None,
                            local_std=(total - epistemic).clamp_min(0.0).sqrt(), weights=w_mean, scores=u_mean)

    def route_rewards(self, guide, prompt, response, *, num_samples=32, seed=0) -> dict[str, torch.Tensor]:
        """The posterior mean reward split by route: ``latent`` ``E[w] . E[g(z)]`` and ``path``
        ``E[w] . E[theta]^T h``, each ``(B,)``, and with a validity gate ``gate``, its mean term (their sum is
        :meth:`reward`'s mean)."""
        w_mean, _ = guide.weight_guide.moments(prompt, num_samples=num_samples, seed=seed)
        z = guide.feature_guide.draws(prompt, response, num_samples, seed=seed, stream=STREAMS["z_a"])
        p_mean, _ = self.path_moments(guide, response)
        routes = {"latent": (w_mean * self.decoder(z).mean(0)).sum(-1), "path": (w_mean * p_mean).sum(-1)}
        if self.gate is not None:
            routes["gate"] = self.gate_moments(guide, prompt, response, num_samples, seed)[0]
        return routes

    def difference_samples(self, guide, prompt, response_a, response_b, nuisance_a=None, nuisance_b=None, *,
                           num_samples=32, seed=0, include_nuisance=True):
        draws = guide.global_samples(num_samples, seed)
        keys = row_keys(prompt, response_a, response_b)  # each pair its own noise: no error shared across pairs
        w = guide.weight_guide.draws(prompt, num_samples, seed=seed, keys=keys)
        z_a = guide.feature_guide.draws(prompt, response_a, num_samples, seed=seed, stream=STREAMS["z_a"], keys=keys)
        z_b = guide.feature_guide.draws(prompt, response_b, num_samples, seed=seed, stream=STREAMS["z_b"], keys=keys)
        u_diff = self.decoder(z_a) - self.decoder(z_b)
        if self.path is not None:
            u_diff = u_diff + self.path.scores(response_a, draws) - self.path.scores(response_b, draws)
        d = (w * u_diff).sum(-1) + self.gate_difference(draws, prompt, response_a, response_b)
        if include_nuisance:
            d = d + self._nuisance_draws(guide, prompt, nuisance_a, nuisance_b, num_samples, seed)
        return d
