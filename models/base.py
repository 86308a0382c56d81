"""The shared plumbing of every preference model: the pair plate, the label site, outputs.

A preference model is a Pyro program ``model(prompt, response_a, response_b, label=None,
*, size=None)`` over a minibatch of ``B`` pairs given as embeddings ``(B, E)``; ``label``
is ``(B,)`` with P(a preferred) in [0, 1]. ``size`` is the number of pairs in the whole
dataset: the ``pairs`` plate scales the minibatch log-likelihood and KL to it. Subclasses
implement :meth:`PreferenceModel.pair_logits` (sampling whatever latents they have) and
:meth:`PreferenceModel.reward`; the guide takes the same arguments.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pyro
import torch
from pyro import distributions as dist
from torch import nn


@dataclass
class RewardOutput:
    """Scores of ``B`` (prompt, response) rows.

    reward: ``(B,)`` posterior mean reward ``E_q[w . g(z)]``.
    reward_std: ``(B,)`` posterior standard deviation of the reward, or None (no latents).
    weights: ``(B, K)`` posterior mean objective weights ``E_q[w | x]``, or None.
    scores: ``(B, K)`` posterior mean per-objective scores ``E_q[g(z)]``, or None.
    """

    reward: torch.Tensor
    reward_std: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None


def pairs_plate(prompt_emb: torch.Tensor, size: int | None) -> pyro.plate:
    """The ``pairs`` plate over a minibatch of ``B`` pairs out of ``size`` (default ``B``)."""
    batch = prompt_emb.shape[0]
    return pyro.plate("pairs", size=size or batch,
                      subsample=torch.arange(batch, device=prompt_emb.device))


@contextlib.contextmanager
def fixed_rng(seed: int, device: torch.device):
    """Run a block with torch's RNG seeded to ``seed`` and restore the outer state after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(seed)
        yield


def standard_normal_noise(num_samples: int, dim: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Fixed ``(num_samples, dim)`` N(0, 1) noise shared by all rows (common random numbers):
    Monte Carlo estimates then do not depend on the batch a row is scored in."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_samples, dim, generator=gen).to(device)


class PreferenceModel(nn.Module):
    """Base class of preference programs: ``label ~ Bernoulli(logits = r(x, a) - r(x, b))``."""

    #: names of the latent sample sites the guide must provide
    latent_sites: tuple[str, ...] = ()
    max_plate_nesting = 1

    def pair_logits(self, prompt: torch.Tensor, response_a: torch.Tensor,
                    response_b: torch.Tensor) -> torch.Tensor:
        """Sample latents (inside the ``pairs`` plate) and return ``r_a - r_b``: ``(..., B)``."""
        raise NotImplementedError

    def forward(self, prompt, response_a, response_b, label=None, *, size=None):
        with pairs_plate(prompt, size):
            logits = self.pair_logits(prompt, response_a, response_b)
            # soft labels in [0, 1] are valid Bernoulli "observations" of the log-likelihood
            # l log sigma(d) + (1 - l) log sigma(-d); the support check would reject them.
            pyro.sample("label", dist.Bernoulli(logits=logits, validate_args=False), obs=label)
        return logits

    def reward(self, guide: nn.Module, prompt: torch.Tensor, response: torch.Tensor, *,
               num_samples: int = 32) -> RewardOutput:
        """Posterior reward of single responses ``(B, E)`` to prompts ``(B, E)``."""
        raise NotImplementedError

    def difference_samples(self, guide: nn.Module, prompt: torch.Tensor, response_a: torch.Tensor,
                           response_b: torch.Tensor, *, num_samples: int = 32, seed: int = 0) -> torch.Tensor:
        """Draws of the reward difference ``r_a - r_b`` under the guide: ``(S, B)`` (``S = 1`` without latents)."""
        raise NotImplementedError

    def pair_probability(self, guide: nn.Module, prompt: torch.Tensor, response_a: torch.Tensor,
                         response_b: torch.Tensor, *, num_samples: int = 32, seed: int = 0) -> torch.Tensor:
        """Posterior predictive P(a preferred) ``E_q[sigmoid(r_a - r_b)]``: ``(B,)``."""
        d = self.difference_samples(guide, prompt, response_a, response_b, num_samples=num_samples, seed=seed)
        return torch.sigmoid(d).mean(0)
