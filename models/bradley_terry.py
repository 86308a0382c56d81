r"""The Bradley–Terry baseline as the same kind of Pyro program, with no local latent variables::

    r_y = h(e_y) [+ log sigma(v . h_G + c)]        a linear, MLP or Bayesian linear head [+ validity gate]
    l   ~ Bernoulli(logits = r_a - r_b [+ gamma . (φ(a) - φ(b))])

With a point head and no nuisance term the guide is empty and ``Trace_ELBO`` is exactly the
negative log-likelihood (the logistic loss of a reward model); a Bayesian head or a nuisance
term adds global latents, as in VRM. VRM and the baseline share one trainer, one checkpoint
format and one evaluation path; only the head differs.
"""

from __future__ import annotations

import torch
from torch import nn
from vrm_pyro.models.base import PreferenceModel, RewardOutput
from vrm_pyro.models.paths import BayesianLinearPath, LinearPath, MLPPath

from vrm_pyro.config import ModelConfig


class BradleyTerryModel(PreferenceModel):
    """Scalar reward head on the response features: ``head`` is ``"linear"``, ``"mlp"`` or
    ``"bayesian_linear"`` (or a path module with ``out_dim=None``)."""

    latent_sites = ()

    def __init__(self, response_dim: int, *, head: str | nn.Module = "linear", hidden_dim: int = 256,
                 prior_scale: float = 1.0, feature_groups: tuple[int, ...] | None = None,
                 orientation: tuple[int, ...] | None = None, nuisance: nn.Module | None = None,
                 decorrelation: float = 0.0, gate: nn.Module | None = None):
        super().__init__(nuisance=nuisance, decorrelation=decorrelation, gate=gate)
        self.response_dim = response_dim
        if isinstance(head, str):
            head = {"linear": lambda: LinearPath(response_dim, None),
                    "mlp": lambda: MLPPath(response_dim, None, hidden_dim),
                    "bayesian_linear": lambda: BayesianLinearPath(
                        response_dim, None, prior_scale, groups=feature_groups, orientation=orientation),
                    }[head]()
        self.head = head

    @classmethod
    def from_config(cls, cfg: ModelConfig, prompt_dim: int, response_dim: int, *,
                    nuisance: nn.Module | None = None,
                    feature_groups: tuple[int, ...] | None = None,
                    orientation: tuple[int, ...] | None = None,
                    gate: nn.Module | None = None) -> BradleyTerryModel:
        scale = cfg.path_prior_scale if cfg.bt_prior_scale is None else cfg.bt_prior_scale
        return cls(response_dim, head=cfg.bt_head, hidden_dim=cfg.bt_hidden_dim, prior_scale=scale,
                   feature_groups=feature_groups, orientation=orientation, nuisance=nuisance,
                   decorrelation=cfg.decorrelation, gate=gate)

    def score(self, response: torch.Tensor) -> torch.Tensor:
        """A point head's reward ``h(e_y)``: ``(B, F)`` -> ``(B,)``."""
        return self.head.scores(response, {})

    def global_modules(self) -> list[nn.Module]:
        return ([self.head] if self.head.global_sites else []) + super().global_modules()

    def authentic_logits(self, globals_, prompt, response_a, response_b):
        return self.head.scores(response_a, globals_) - self.head.scores(response_b, globals_)

    def reward(self, guide, prompt, response, *, num_samples=32, seed=0):
        posterior = guide.posterior(self.head.site) if self.head.global_sites else None
        mean, var = self.head.moments(response, posterior)
        gate_mean, gate_var = self.gate_moments(guide, prompt, response, num_samples, seed)
        epistemic = bool(self.head.global_sites) or self.gate is not None
        return RewardOutput(reward=mean + gate_mean, reward_std=(var + gate_var).sqrt() if epistemic else None)

    def difference_samples(self, guide, prompt, response_a, response_b, nuisance_a=None, nuisance_b=None, *,
                           num_samples=32, seed=0, include_nuisance=True):
        draws = guide.global_samples(num_samples, seed) if self.has_globals else {}
        d = (self.authentic_logits(draws, prompt, response_a, response_b)
             + self.gate_difference(draws, prompt, response_a, response_b))
        if include_nuisance:
            d = d + self._nuisance_draws(guide, prompt, nuisance_a, nuisance_b, num_samples, seed)
        return d if d.dim() == 2 else d.unsqueeze(0)
