r"""The Bradley–Terry baseline as the same kind of Pyro program, with no latent variables::

    r_y = h(e_y)
    l   ~ Bernoulli(logits = r_a - r_b)

With the empty guide (:class:`vrm_pyro.guides.EmptyGuide`), ``Trace_ELBO`` is exactly the
negative log-likelihood (the logistic loss of a reward model), so VRM and the baseline
share one trainer, one checkpoint format and one evaluation path.
"""

from __future__ import annotations

import torch
from torch import nn
from vrm_pyro.models.base import PreferenceModel, RewardOutput
from vrm_pyro.models.nets import mlp

from vrm_pyro.config import ModelConfig


class BradleyTerryModel(PreferenceModel):
    """Scalar reward head ``h`` on the response embedding: linear (``hidden_dim=0``) or an MLP."""

    latent_sites = ()

    def __init__(self, emb_dim: int, *, hidden_dim: int = 0):
        super().__init__()
        self.emb_dim = emb_dim
        self.head = nn.Linear(emb_dim, 1) if hidden_dim <= 0 else mlp(emb_dim, hidden_dim, 1)

    @classmethod
    def from_config(cls, cfg: ModelConfig, emb_dim: int) -> BradleyTerryModel:
        return cls(emb_dim, hidden_dim=cfg.bt_hidden_dim)

    def score(self, response: torch.Tensor) -> torch.Tensor:
        """``h(e_y)``: ``(B, E)`` -> ``(B,)``."""
        return self.head(response).squeeze(-1)

    def pair_logits(self, prompt, response_a, response_b):
        return self.score(response_a) - self.score(response_b)

    def reward(self, guide, prompt, response, *, num_samples=32):
        return RewardOutput(reward=self.score(response))

    def difference_samples(self, guide, prompt, response_a, response_b, *, num_samples=32, seed=0):
        return self.pair_logits(prompt, response_a, response_b).unsqueeze(0)
