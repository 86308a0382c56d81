r"""The shared plumbing of every preference model: global latents, the pair plate, the label site.

A preference model is a Pyro program over a minibatch of ``B`` pairs, called with the fields
of a :class:`~vrm_pyro.data.PairBatch`::

    model(prompt, response_a, response_b, label=None, nuisance_a=None, nuisance_b=None, junk=None, *, size=None)

``prompt`` is ``(B, E)``, the responses ``(B, F)``, ``label`` ``(B,)`` P(a preferred) in [0, 1],
the nuisance covariates ``(B, C)``; ``size`` is the number of pairs in the whole dataset. The
program is

.. code-block:: text

    globals ~ p(globals)                       outside the plate: counted once per dataset
    for each pair in plate("pairs", size):     local terms scaled by size / B
        d   = authentic_logits(globals, x, a, b)        r(x, a) - r(x, b), subclass-specific
        d  += gamma . (phi(a) - phi(b))                  the judge's nuisance term, if any
        l   ~ Bernoulli(logits = d)                      a cross-entropy factor for soft labels
        valid_y ~ Bernoulli(sigma(t_y)), observed        with a validity gate and the junk flag (``gate``)

so each step's loss is an unbiased estimate of the full-data negative ELBO. Subclasses
implement :meth:`PreferenceModel.authentic_logits` (sampling their local latents) and the
posterior summaries (:meth:`reward`, :meth:`difference_samples`); the guide takes the same
arguments.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pyro
import torch
from pyro import distributions as dist
from torch import nn
from torch.nn import functional as F


@dataclass
class RewardOutput:
    """Scores of ``B`` (prompt, response) rows.

    reward: ``(B,)`` posterior mean of the authentic reward ``E_q[w . u(z, y)]``.
    reward_std: ``(B,)`` epistemic standard deviation: how much the expected reward varies under the
        posterior of the *global* latents (the path weights). It grows away from the training data;
        None for a model without global latents.
    local_std: ``(B,)`` standard deviation from the local latents (``w``, ``z``): the spread of the
        judgment for this prompt and response, or None (no local latents).
    weights: ``(B, K)`` posterior mean objective weights ``E_q[w | x]``, or None.
    scores: ``(B, K)`` posterior mean per-objective scores ``E_q[u(z, y)]``, or None.
    nuisance: ``(B,)`` the judge's nuisance part ``E_q[gamma(x)] . φ(y)`` (standardised covariates), when
        asked for: ``reward + nuisance`` is what the judge would reward.
    """

    reward: torch.Tensor
    reward_std: torch.Tensor | None = None
    local_std: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    nuisance: torch.Tensor | None = None

    def lcb(self, kappa: float) -> torch.Tensor:
        """The pessimistic reward ``reward - kappa * reward_std`` (the reward itself without global latents)."""
        return self.reward if self.reward_std is None else self.reward - kappa * self.reward_std


def pairs_plate(prompt_emb: torch.Tensor, size: int | None, indices: torch.Tensor | None = None) -> pyro.plate:
    """The ``pairs`` plate over a minibatch of ``B`` pairs out of ``size`` (default ``B``).

    The minibatch rows are handed in already chosen by the trainer, with ``indices`` ``(B,)``, their
    positions in the training set (Pyro's subsampling idiom: ``subsample`` is the real indices), so Pyro
    scales every local term by ``size / B``. Without ``indices`` (evaluation) the rows are the whole set."""
    batch = prompt_emb.shape[0]
    if indices is None:
        indices = torch.arange(batch)
    elif indices.shape[0] != batch:
        raise ValueError(f"pairs_plate: {indices.shape[0]} indices for a batch of {batch} pairs")
    return pyro.plate("pairs", size=size or batch, subsample=indices.to(prompt_emb.device))


def observe_label(logits: torch.Tensor, label: torch.Tensor | None) -> None:
    """The label site ``l ~ Bernoulli(logits = r_a - r_b)``, inside the ``pairs`` plate.

    A hard label (0 or 1) is an observed Bernoulli. A soft label ``l`` in [0, 1] (a judge's
    probability) is not a Bernoulli outcome; its log-likelihood is the cross-entropy
    ``l log sigmoid(d) + (1 - l) log sigmoid(-d)``, written as an explicit factor. Both have the
    same value and gradient on hard labels; without a label the site is sampled (prior predictive).
    """
    if label is None:
        pyro.sample("label", dist.Bernoulli(logits=logits))
    elif bool(((label == 0) | (label == 1)).all()):
        pyro.sample("label", dist.Bernoulli(logits=logits), obs=label)
    else:
        pyro.factor("label", -F.binary_cross_entropy_with_logits(logits, label.expand_as(logits), reduction="none"))


def linear_scores(x: torch.Tensor, weight: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``x (B, F)`` times a weight of event shape ``(F, K)`` (``event_dims=2``) or ``(F,)`` (``1``), or a stack
    of draws of it (``(S, ...)``, or ``(P, 1, ...)`` under vectorised ELBO particles; flattened to ``S``):
    ``(B[, K])`` for one weight, ``(S, B[, K])`` for draws."""
    if weight.dim() == event_dims:
        return x @ weight
    w = weight.reshape(-1, *weight.shape[weight.dim() - event_dims:])
    return torch.einsum("bf,sfk->sbk", x, w) if event_dims == 2 else torch.einsum("bf,sf->sb", x, w)


@contextlib.contextmanager
def fixed_rng(seed: int, device: torch.device):
    """Run a block with torch's RNG seeded to ``seed`` and restore the outer state after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        # torch.manual_seed seeds every backend; on CPU only the CPU generator (see dirichlet_draws for why)
        torch.manual_seed(seed) if devices else torch.default_generator.manual_seed(seed)
        yield


#: independent noise streams of the posterior-predictive draws
STREAMS = {"w": 0, "z_a": 1, "z_b": 2, "theta": 3, "gamma": 4, "gamma_prompt": 5, "gate_weight": 6, "gate_bias": 7,
           "gate_prompt": 8}


def standard_normal_noise(num_samples: int, shape, device: torch.device, seed: int = 0, stream: int = 0) -> torch.Tensor:
    """Fixed ``(num_samples, *shape)`` N(0, 1) noise from ``(seed, stream)``: for **global** latents, whose
    draws every row shares (different streams are independent). Local latents use :func:`row_normal_noise`."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 104_729 * int(stream) + 1)
    return torch.randn(num_samples, *shape, generator=gen).to(device)


_PRIME = 2_147_483_629  # below 2^31: products of two residues fit in int64
_COEFFICIENTS: dict[int, torch.Tensor] = {}


def row_keys(*tensors: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 key of each row's contents (the bits of its float32 values less the lowest 8 of the
    mantissa, so that last-bit differences of a matrix product computed in another batch do not change it;
    all tensors together): equal rows get equal keys in any batch, different rows independent-looking keys.

    A polynomial hash mod a prime in integer arithmetic: exact, and the same on every device."""
    key = None
    for t in tensors:
        t = t.detach().reshape(t.shape[0], -1).float().cpu().contiguous()
        bits = t.view(torch.int32).to(torch.int64) & 0x7FFFFF00
        width = bits.shape[1]
        if width not in _COEFFICIENTS:
            gen = torch.Generator().manual_seed(104_729 + width)
            _COEFFICIENTS[width] = torch.randint(1, _PRIME, (width,), generator=gen, dtype=torch.int64)
        h = ((bits % _PRIME) * _COEFFICIENTS[width] % _PRIME).sum(1) % _PRIME
        key = h if key is None else (key * 1_000_003 + h) % _PRIME
    return key


def local_noise(keys: torch.Tensor | None, num_samples: int, batch: int, dim: int, device: torch.device,
                seed: int = 0, stream: int = 0) -> torch.Tensor:
    """``(num_samples, B, dim)`` noise of a local latent: per row from ``keys`` (:func:`row_normal_noise`), or,
    with ``keys=None``, one draw shared by every row (common random numbers: a response's score is then a
    smooth, deterministic function of its features, which ranking and scoring want; pair probabilities
    pass keys, so that no Monte Carlo error is shared across pairs)."""
    if keys is None:
        return standard_normal_noise(num_samples, dim, device, seed=seed, stream=stream)[:, None, :].expand(
            num_samples, batch, dim)
    return row_normal_noise(keys, num_samples, dim, device, seed, stream)


def row_normal_noise(keys: torch.Tensor, num_samples: int, dim: int, device: torch.device, seed: int = 0,
                     stream: int = 0) -> torch.Tensor:
    """``(num_samples, B, dim)`` N(0, 1) noise for **local** latents: row ``b``'s draws come from its own
    generator seeded by ``(seed, stream, keys[b])``, so they depend on that row and the seed only (never on
    the batch), and different rows, streams and seeds are independent. (Sharing one noise draw across
    rows would add the same error to every row's estimate: a systematic offset, e.g. towards the first
    response of every pair.)"""
    out = torch.empty(num_samples, keys.shape[0], dim)
    gen = torch.Generator()
    cache: dict[int, torch.Tensor] = {}
    for i, k in enumerate(keys.tolist()):
        if k not in cache:
            gen.manual_seed(hash((int(seed), int(stream), k)) & 0x7FFF_FFFF_FFFF_FFFF)
            cache[k] = torch.randn(num_samples, dim, generator=gen)
        out[:, i] = cache[k]
    return out.to(device)


class PreferenceModel(nn.Module):
    """Base class of preference programs: ``l ~ Bernoulli(logits = r(x, a) - r(x, b) [+ nuisance])``.

    Args:
        nuisance: a :class:`~vrm_pyro.models.nuisance.NuisanceTerm` (the judge's reaction to
            observable covariates), or None.
        decorrelation: weight of a penalty on the squared batch correlation between the authentic
            reward differences and each covariate difference (as ODIN does for length), over the batch's real
            pairs (not the junk made by construction); 0 = off.
        gate: a :class:`~vrm_pyro.models.paths.ValidityGate` (``log P(valid | y)`` added to the reward), or None.
    """

    #: names of the local (per-pair) latent sample sites the guide must provide
    latent_sites: tuple[str, ...] = ()
    max_plate_nesting = 1

    def __init__(self, *, nuisance: nn.Module | None = None, decorrelation: float = 0.0,
                 gate: nn.Module | None = None):
        super().__init__()
        self.nuisance = nuisance
        self.decorrelation = decorrelation
        self.gate = gate

    def global_modules(self) -> list[nn.Module]:
        """The parts of the program that sample global latents (``sample()`` and ``global_sites``)."""
        return [m for m in (self.gate, self.nuisance) if m is not None]

    def gate_difference(self, globals_: dict, prompt: torch.Tensor, response_a: torch.Tensor,
                        response_b: torch.Tensor):
        """The validity gate's part of ``r_a - r_b`` (:class:`~vrm_pyro.models.paths.ValidityGate`): ``(B,)`` or
        ``(S, B)`` for draws of the global sites; 0 without a gate."""
        if self.gate is None:
            return 0.0
        return self.gate.logits(globals_, response_a, prompt) - self.gate.logits(globals_, response_b, prompt)

    def gate_moments(self, guide, prompt: torch.Tensor, response: torch.Tensor, num_samples: int, seed: int):
        """Posterior mean and variance of the gate's term of single responses ``(B, F)`` to prompts ``(B, E)``, from
        ``num_samples`` seeded draws of its sites (the same draws for every row): ``((B,), (B,))``, or ``(0, 0)``
        without a gate."""
        if self.gate is None:
            return 0.0, 0.0
        g = self.gate.logits(guide.global_samples(num_samples, seed), response, prompt)
        return g.mean(0), g.var(0, unbiased=False)

    def global_priors(self) -> dict[str, tuple[tuple[int, ...], float]]:
        """``{site: (event shape, prior std)}`` of the global latents, which the guide must provide outside
        the plate (all have zero-mean Gaussian priors)."""
        priors: dict = {}
        for m in self.global_modules():
            priors.update(m.priors)
        return priors

    def global_sites(self) -> dict[str, tuple[int, ...]]:
        """``{site: event shape}`` of the global latents."""
        return {name: shape for name, (shape, _) in self.global_priors().items()}

    @property
    def has_globals(self) -> bool:
        return bool(self.global_sites())

    def authentic_logits(self, globals_: dict, prompt: torch.Tensor, response_a: torch.Tensor,
                         response_b: torch.Tensor) -> torch.Tensor:
        """Sample local latents (inside the plate) and return ``r_a - r_b``: ``(..., B)``, without the validity gate's
        term (:meth:`gate_difference`), which :meth:`forward` adds when the gate is in the label."""
        raise NotImplementedError

    def forward(self, prompt, response_a, response_b, label=None, nuisance_a=None, nuisance_b=None, junk=None, *,
                size=None, indices=None):
        globals_ = {}
        for m in self.global_modules():
            globals_.update(m.sample())
        with pairs_plate(prompt, size, indices):
            authentic = self.authentic_logits(globals_, prompt, response_a, response_b)
            if self.gate is not None:  # the gate's logits once per step, for the label and the validity sites
                t_a, t_b = (self.gate.validity_logits(globals_, r, prompt) for r in (response_a, response_b))
                if self.gate.in_label:
                    authentic = authentic + self.gate.term(t_a) - self.gate.term(t_b)
            logits = authentic
            if self.nuisance is not None:
                logits = logits + self.nuisance.logits(globals_, prompt, nuisance_a - nuisance_b)
            observe_label(logits, label)
            if self.gate is not None and junk is not None:
                self.gate.observe(t_a, t_b, junk)
        if self.decorrelation > 0 and label is not None and nuisance_a is not None and nuisance_a.shape[-1]:
            # not part of the generative story: a penalty on the ELBO, scaled to the dataset like it; over the
            # judge's pairs only (junk made by construction differs in length on purpose: a truncation is shorter)
            real = torch.ones_like(label, dtype=torch.bool) if junk is None else ~junk
            if int(real.sum()) >= 2:  # a correlation needs two pairs
                penalty = squared_correlation(authentic[..., real], (nuisance_a - nuisance_b)[real])
                pyro.factor("decorrelation", -self.decorrelation * (size or prompt.shape[0]) * penalty)
        return logits

    # -- posterior summaries (no gradients; used by scoring and evaluation) -------------------------
    def reward(self, guide: nn.Module, prompt: torch.Tensor, response: torch.Tensor, *,
               num_samples: int = 32, seed: int = 0) -> RewardOutput:
        """Posterior authentic reward of single responses ``(B, F)`` to prompts ``(B, E)``."""
        raise NotImplementedError

    def difference_samples(self, guide: nn.Module, prompt, response_a, response_b, nuisance_a=None,
                           nuisance_b=None, *, num_samples: int = 32, seed: int = 0,
                           include_nuisance: bool = True) -> torch.Tensor:
        """Draws of the logit ``r_a - r_b [+ gamma . (phi(a) - phi(b))]`` under the guide: ``(S, B)``.

        Every row's draws depend on that row and ``seed`` only (not on the batch), and the draws of
        ``z_a``, ``z_b``, ``w`` and the global latents are independent, as the guide says."""
        raise NotImplementedError

    def _nuisance_draws(self, guide, prompt, nuisance_a, nuisance_b, num_samples, seed):
        """Draws of the nuisance term ``(S, B)``, or 0 when the model has none."""
        if self.nuisance is None or nuisance_a is None or not nuisance_a.shape[-1]:
            return 0.0
        draws = guide.global_samples(num_samples, seed) if guide is not None else {}
        return self.nuisance.logits(draws, prompt, nuisance_a - nuisance_b)


def squared_correlation(d: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Sum over covariates of the squared correlation, across the batch (last dim of ``d``), between
    ``d (..., B)`` and each column of ``phi (B, C)``: ``(..., 1)``."""
    dc = d - d.mean(-1, keepdim=True)
    pc = phi - phi.mean(0, keepdim=True)
    cov = torch.einsum("...b,bc->...c", dc, pc) / d.shape[-1]
    var = dc.square().mean(-1, keepdim=True) * pc.square().mean(0)
    return (cov.square() / var.clamp_min(1e-12)).sum(-1, keepdim=True)
