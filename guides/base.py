"""Guide plumbing: the composite guide, base classes, exact moments and per-row draws.

A guide takes the model's arguments ``(prompt, response_a, response_b, label=None,
nuisance_a=None, nuisance_b=None, *, size=None)``, samples the model's global latents outside
the ``pairs`` plate and its local latents inside it.

Posterior-predictive draws (``draws``, ``global_samples``) are *per row*: a row's draws depend on
that row and the seed only, never on the batch it is scored in (common random numbers across
rows; independent streams for independent latents).
"""

from __future__ import annotations

import pyro
import torch
from pyro import distributions as dist
from torch import nn
from vrm_pyro.models.base import STREAMS, local_noise, pairs_plate, row_keys


class WeightGuide(nn.Module):
    """``q(w | x)``: ``forward(prompt (B, E)) -> distribution on the K-simplex``, batch (B,).

    ``moments(prompt)`` returns ``E[w] (B, K)`` and ``E[w w^T] (B, K, K)``; ``draws(prompt, S, seed)``
    returns ``(S, B, K)`` draws, each row's depending on the row and the seed only.
    """

    num_objectives: int

    def moments(self, prompt: torch.Tensor, *, num_samples: int = 32, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def draws(self, prompt: torch.Tensor, num_samples: int, *, seed: int = 0,
              keys: torch.Tensor | None = None) -> torch.Tensor:
        """``(S, B, K)`` draws of ``q(w | x)``; ``keys``: per-row noise (:func:`row_keys`), or None for shared."""
        raise NotImplementedError


class DirichletWeightGuide(WeightGuide):
    """A ``q(w | x) = Dirichlet(alpha(x))`` family: subclasses give ``concentration(prompt (B, E)) -> (B, K)``;
    the moments are exact and the draws per row (:func:`dirichlet_draws`)."""

    def concentration(self, prompt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, prompt):
        return dist.Dirichlet(self.concentration(prompt))

    def moments(self, prompt, *, num_samples=32, seed=0):
        return dirichlet_moments(self.concentration(prompt))

    def draws(self, prompt, num_samples, *, seed=0, keys=None):
        return dirichlet_draws(self.concentration(prompt), num_samples, seed, keys)


class FeatureGuide(nn.Module):
    """``q(z | x, y)``: ``forward(prompt (B, E), response (B, F)) -> Normal(.).to_event(1)``."""

    feature_dim: int

    def draws(self, prompt: torch.Tensor, response: torch.Tensor, num_samples: int, *, seed: int = 0,
              stream: int = STREAMS["z_a"], keys: torch.Tensor | None = None) -> torch.Tensor:
        """``(S, B, D)`` reparameterised draws: row ``b``'s noise seeded by ``(seed, stream, keys[b])``, or shared
        by all rows with ``keys=None`` (see :func:`~vrm_pyro.models.base.local_noise`)."""
        q = self(prompt, response).base_dist
        eps = local_noise(keys, num_samples, prompt.shape[0], self.feature_dim, prompt.device, seed, stream)
        return q.loc + q.scale * eps

    def hide_columns(self, columns: torch.Tensor) -> FeatureGuide:
        """Let the guide see 0 (the training mean of a feature, with the default ``standardize`` transform; monotone
        features refuse ``whiten``) in the response columns marked True
        ``(F,)``: the path's monotone ones (``ModelConfig.monotone``), which through ``z`` and the decoder could
        otherwise reach the reward with either sign. Saved with the weights (buffer ``monotone``)."""
        self.register_buffer("monotone", columns.bool().clone())
        self.register_forward_pre_hook(_hide_monotone)
        return self


def _hide_monotone(guide: FeatureGuide, args: tuple) -> tuple:
    prompt, response, *rest = args
    return (prompt, response.masked_fill(guide.monotone, 0.0), *rest)


def dirichlet_moments(concentration: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``E[w]`` and ``E[w w^T]`` of ``Dirichlet(alpha)``: ``(B, K)``, ``(B, K, K)``.

    ``E[w_i w_j] = (alpha_i alpha_j + delta_ij alpha_i) / (alpha_0 (alpha_0 + 1))``.
    """
    a0 = concentration.sum(-1, keepdim=True)
    mean = concentration / a0
    outer = concentration.unsqueeze(-1) * concentration.unsqueeze(-2) + torch.diag_embed(concentration)
    second = outer / (a0 * (a0 + 1)).unsqueeze(-1)
    return mean, second


def dirichlet_draws(concentration: torch.Tensor, num_samples: int, seed: int,
                    keys: torch.Tensor | None = None) -> torch.Tensor:
    """``(S, B, K)`` draws of ``Dirichlet(alpha_b)`` per row ``b``, each row from its own generator seeded by
    ``(seed, keys[b])`` (:func:`row_keys` of the rows), or by ``(seed, alpha_b)`` with ``keys=None`` (a batched
    draw would make a row's sample depend on the rows before it: gamma variates are drawn by rejection)."""
    if keys is None:
        keys = row_keys(concentration)
    unique, first, inverse = _unique_rows(keys)
    concentration = concentration[first]
    out = concentration.new_empty(num_samples, unique.shape[0], concentration.shape[1])
    keys = unique.tolist()
    # One CPU generator reseeded per row (as row_normal_noise), so a row's draws are the same on every device.
    # Not torch.manual_seed: it seeds every backend, and where CUDA is not initialised each call records a stack
    # trace per backend (~3 ms a row: most of a validation pass on CPU). ``Dirichlet.sample`` has no generator
    # argument; ``_sample_dirichlet`` is what it calls.
    gen = torch.Generator()
    for i, alpha in enumerate(concentration.detach().cpu()):
        gen.manual_seed(hash((int(seed), STREAMS["w"], keys[i])) & 0x7FFF_FFFF_FFFF_FFFF)
        out[:, i] = torch._sample_dirichlet(alpha.expand(num_samples, -1), generator=gen).to(out.device)
    return out[:, inverse]


def _unique_rows(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct keys, the first row of each, and each row's index into the distinct keys."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((unique.shape[0],), keys.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(keys.shape[0]), reduce="amin")
    return unique, first, inverse


def sample_moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo ``E[w]``, ``E[w w^T]`` from samples ``(S, B, K)``."""
    return samples.mean(0), torch.einsum("sbi,sbj->bij", samples, samples) / samples.shape[0]


class VariationalGuide(nn.Module):
    """``q(globals) prod_pairs q(w | x) q(z_a | x, a) q(z_b | x, b)``, composed of guide objects.

    Any part may be absent: the Bradley–Terry baseline has at most the global part (a Bayesian head,
    a nuisance term), and with nothing at all this is the empty guide (``Trace_ELBO`` is then the
    negative log-likelihood).
    """

    def __init__(self, weight_guide: WeightGuide | None = None, feature_guide: FeatureGuide | None = None,
                 global_guide: nn.Module | None = None):
        super().__init__()
        self.weight_guide = weight_guide
        self.feature_guide = feature_guide
        self.global_guide = global_guide

    def forward(self, prompt, response_a, response_b, label=None, nuisance_a=None, nuisance_b=None, junk=None, *,
                size=None, indices=None):
        if self.global_guide is not None:
            self.global_guide()
        if self.weight_guide is None and self.feature_guide is None:
            return
        with pairs_plate(prompt, size, indices):
            if self.weight_guide is not None:
                pyro.sample("w", self.weight_guide(prompt))
            if self.feature_guide is not None:
                pyro.sample("z_a", self.feature_guide(prompt, response_a))
                pyro.sample("z_b", self.feature_guide(prompt, response_b))

    def posterior(self, site: str):
        """The guide's distribution of a global site."""
        if self.global_guide is None:
            raise KeyError(f"the guide has no global site {site!r}")
        return self.global_guide.distribution(site)

    def global_samples(self, num_samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """``{site: (S, *shape)}`` seeded draws of every global latent (empty without any)."""
        return {} if self.global_guide is None else self.global_guide.draws(num_samples, seed)


EmptyGuide = VariationalGuide
