"""A preference model, its guide and its config, as one ``nn.Module``.

This is what the trainer optimises, what a checkpoint stores and what the scorer calls;
it is the same class for VRM and the Bradley–Terry baseline.
"""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from vrm_pyro.config import ModelConfig
from vrm_pyro.data import check_embeddings
from vrm_pyro.models.base import PreferenceModel, RewardOutput

ELBOS = {"trace": Trace_ELBO, "mean_field": TraceMeanField_ELBO}


class RewardModel(nn.Module):
    """``model`` (a :class:`~vrm_pyro.models.PreferenceModel`) + ``guide`` + ``config``.

    ``state_dict()`` holds every trainable tensor of both (keys ``model.*``, ``guide.*``).
    """

    def __init__(self, model: PreferenceModel, guide: nn.Module, config: ModelConfig, emb_dim: int):
        super().__init__()
        self.model, self.guide, self.config, self.emb_dim = model, guide, config, emb_dim

    @property
    def kind(self) -> str:
        return self.config.model

    @property
    def has_latents(self) -> bool:
        return bool(self.model.latent_sites)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def elbo(self, name: str = "trace", *, num_particles: int = 1) -> nn.Module:
        """The ELBO as an ``nn.Module``: ``elbo(prompt, a, b, label, size=N)`` is the loss."""
        cls = ELBOS[name]
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1,
                   max_plate_nesting=self.model.max_plate_nesting)(self.model, self.guide)

    def _batched(self, fn, tensors, batch_size):
        n = tensors[0].shape[0]
        dev = self.device
        outs = [fn(*(t[i:i + batch_size].to(dev) for t in tensors)) for i in range(0, n, batch_size)]
        return outs

    @torch.no_grad()
    def reward(self, prompt: torch.Tensor, response: torch.Tensor, *, num_samples: int = 32,
               batch_size: int = 4096) -> RewardOutput:
        """Posterior reward of responses ``(N, E)`` to prompts ``(N, E)`` (any device; result on CPU)."""
        check_embeddings(prompt, "prompt", "RewardModel.reward")
        check_embeddings(response, "response", "RewardModel.reward")
        was_training = self.training
        self.eval()
        try:
            outs = self._batched(lambda p, r: self.model.reward(self.guide, p, r, num_samples=num_samples),
                                 (prompt, response), batch_size)
        finally:
            self.train(was_training)

        def cat(name):
            parts = [getattr(o, name) for o in outs]
            return None if parts[0] is None else torch.cat(parts).float().cpu()

        return RewardOutput(reward=cat("reward"), reward_std=cat("reward_std"),
                            weights=cat("weights"), scores=cat("scores"))

    @torch.no_grad()
    def pair_probability(self, prompt, response_a, response_b, *, num_samples: int = 32,
                         batch_size: int = 4096, seed: int = 0) -> torch.Tensor:
        """Posterior predictive P(a preferred) ``E_q[sigmoid(r_a - r_b)]``, ``(N,)`` on CPU."""
        return torch.sigmoid(self.difference_samples(prompt, response_a, response_b, num_samples=num_samples,
                                                     batch_size=batch_size, seed=seed)).mean(0)

    @torch.no_grad()
    def difference_samples(self, prompt, response_a, response_b, *, num_samples: int = 32,
                           batch_size: int = 4096, seed: int = 0) -> torch.Tensor:
        """Seeded draws of ``r_a - r_b`` under the guide, ``(S, N)`` on CPU (``S = 1`` without latents)."""
        for name, t in (("prompt", prompt), ("response_a", response_a), ("response_b", response_b)):
            check_embeddings(t, name, "RewardModel.difference_samples")
        was_training = self.training
        self.eval()
        try:
            outs = self._batched(
                lambda p, a, b: self.model.difference_samples(self.guide, p, a, b, num_samples=num_samples, seed=seed),
                (prompt, response_a, response_b), batch_size)
        finally:
            self.train(was_training)
        return torch.cat(outs, dim=1).float().cpu()
