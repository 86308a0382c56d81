r"""Paths from the response features ``h(x, y)`` to scores, and the judge's nuisance term.

A *path* maps ``h (B, F)`` to ``K`` per-objective scores (VRM) or one reward (Bradley–Terry):

- :class:`BayesianLinearPath`: ``theta ~ N(0, sigma^2 I)`` is a **global** latent (one
  ``pyro.sample`` site outside the pair plate), so the ELBO charges its KL once per dataset and
  every bit the path carries is paid for; its posterior gives the epistemic uncertainty of the
  reward. ``sigma = prior_scale / sqrt(F)``: a unit-variance feature vector gets a prior score of
  standard deviation ``prior_scale``. With ``groups`` (widths of blocks of ``h`` that each carry one
  kind of evidence, e.g. 384 embedding dimensions, one cosine, 7 text statistics) the prior variance
  is shared by blocks, not dimensions: ``sigma_j = prior_scale / sqrt(G * F_g)`` for a row ``j`` of
  block ``g`` of ``G``, so the prior score keeps std ``prior_scale`` but a 7-wide block is not
  drowned by a 1,536-wide one.
  With ``orientation`` (1 on the columns whose direction is known, e.g. a language model's PMI), those rows
  weigh ``h`` with ``|theta|`` (a half-normal prior, mode 0) or ``sigma exp(theta / sigma)`` (log-normal,
  median ``sigma``: the column is believed to matter), and the reward can only rise with the column
  (VRM's objective weights are on the simplex, so every objective's score rising means the reward does).
- :class:`LinearPath`, :class:`MLPPath`: point-estimated maps (free in the ELBO).

:class:`ValidityGate` is a saturating term ``log sigma(v . h_G + c)`` added to the reward (VRM and BT alike):
the log-probability that a response is a valid answer at all, which junk loses and real answers barely feel.

:class:`NuisanceTerm` is the judge's reaction to observable covariates ``φ(y)`` (length,
formatting): ``gamma . (φ(a) − φ(b))`` with a global ``gamma ~ N(0, s^2 I_C)``, optionally
``gamma(x) = gamma + Gamma^T x̂`` with a global ``Gamma``. Each object declares its global sites
(``global_sites``), samples them in the model (``sample()``) and reads draws of them (``scores``,
``logits``) so the same code serves the ELBO and the posterior predictive.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import distributions as dist
from pyro import poutine
from torch import nn
from torch.nn import functional as F
from vrm_pyro.models.base import linear_scores
from vrm_pyro.models.nets import mlp

from vrm_pyro.config import MONOTONE_PRIORS

#: ``log_normal`` weights are capped at ``sigma e^20`` (a guard against overflow, never reached in practice)
MAX_LOG_WEIGHT = 20.0


class _GlobalGaussian(nn.Module):
    """Samples its global sites from zero-mean Gaussian priors ``{site: (shape, std)}`` (``std`` a float; a
    subclass may override :meth:`prior` with a per-coordinate std, as :class:`BayesianLinearPath` does)."""

    priors: dict[str, tuple[tuple[int, ...], float]]

    @property
    def global_sites(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for name, (shape, _) in self.priors.items()}

    def prior(self, name: str) -> dist.Distribution:
        shape, std = self.priors[name]
        zero = self._zero.new_zeros(shape)
        return dist.Normal(zero, std).to_event(len(shape))

    def sample(self) -> dict[str, torch.Tensor]:
        return {name: pyro.sample(name, self.prior(name)) for name in self.priors}


class BayesianLinearPath(_GlobalGaussian):
    """``scores = h theta`` with ``theta ~ N(0, sigma^2)`` of shape ``(F, K)``, or ``(F,)`` for a scalar
    reward (``out_dim=None``): a Bayesian linear map, site ``theta``. ``sigma = prior_scale / sqrt(F)``, or
    per block of ``groups`` (widths summing to ``F``) ``prior_scale / sqrt(G * F_g)`` (see the module
    docstring). ``orientation`` (``F`` codes): 0 a free row, 1 + the index of a prior in
    :data:`~vrm_pyro.config.MONOTONE_PRIORS` a row with a positive weight of that prior (see :meth:`weights`), so
    the scores can only rise with it."""

    def __init__(self, in_dim: int, out_dim: int | None, prior_scale: float = 1.0, site: str = "theta",
                 groups: tuple[int, ...] | None = None, orientation: tuple[int, ...] | None = None):
        super().__init__()
        self.in_dim, self.out_dim, self.site = in_dim, out_dim, site
        groups = tuple(groups or (in_dim,))
        if sum(groups) != in_dim or min(groups) < 1:
            raise ValueError(f"BayesianLinearPath: feature groups {groups} must be positive widths summing to the "
                             f"feature width F={in_dim} (see vrm_pyro.representations.feature_groups)")
        self.groups = groups
        shape = (in_dim,) if out_dim is None else (in_dim, out_dim)
        # ``priors`` carries the per-dimension std, which the mean-field guide uses for its starting scale and
        # floor (the same start for every coordinate, as before blocks existed); the prior itself is ``prior_std``,
        # saved with the weights so that a checkpoint keeps its prior whatever encoder config it records
        self.priors = {site: (shape, prior_scale / math.sqrt(in_dim))}
        std = torch.cat([torch.full((g,), prior_scale / math.sqrt(len(groups) * g)) for g in groups])
        self.register_buffer("prior_std", std if out_dim is None else std[:, None])
        self.register_buffer("_zero", torch.zeros(()), persistent=False)
        codes = set(range(len(MONOTONE_PRIORS) + 1))
        if orientation is not None and (len(orientation) != in_dim or set(orientation) - codes):
            raise ValueError(f"BayesianLinearPath: orientation must be {in_dim} codes in {sorted(codes)} (see "
                             "vrm_pyro.representations.feature_orientation)")
        # saved with the weights, like the prior, so that a checkpoint keeps its signs whatever encoder config it has
        mono = torch.tensor(orientation or (0,) * in_dim, dtype=torch.int8)
        self.register_buffer("monotone", mono if out_dim is None else mono[:, None])

    def prior(self, name: str) -> dist.Distribution:
        shape, _ = self.priors[name]
        return dist.Normal(self._zero.new_zeros(shape), self.prior_std.expand(shape)).to_event(len(shape))

    @property
    def event_dims(self) -> int:
        return 1 if self.out_dim is None else 2

    def _rows(self, prior: str) -> torch.Tensor:
        """``(F[, 1])`` bool: the rows whose weight has the monotone ``prior``."""
        return self.monotone == 1 + MONOTONE_PRIORS.index(prior)

    def weights(self, theta: torch.Tensor) -> torch.Tensor:
        """The weights ``h`` is multiplied by: ``theta`` on the free rows, ``|theta|`` on the ``half_normal`` rows and
        ``sigma exp(theta / sigma)`` on the ``log_normal`` ones (median ``sigma``, the row's prior std)."""
        out = torch.where(self._rows("half_normal"), theta.abs(), theta)
        sigma = self.prior_std
        return torch.where(self._rows("log_normal"), sigma * torch.exp((theta / sigma).clamp_max(MAX_LOG_WEIGHT)), out)

    def scores(self, h: torch.Tensor, globals_: dict) -> torch.Tensor:
        """``(B[, K])``, or ``(S, B[, K])`` for ``S`` draws of ``theta``."""
        return linear_scores(h, self.weights(globals_[self.site]), self.event_dims)

    def weight_moments(self, posterior: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of :meth:`weights` under a mean-field Normal ``posterior`` ``N(m, s^2)`` of ``theta``:
        on the monotone rows those of a folded normal, ``E|t| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s))``,
        ``Var|t| = m^2 + s^2 - (E|t|)^2``, or of a log-normal, ``sigma exp(m/sigma + s^2/2sigma^2)`` and
        ``sigma^2 (exp(s^2/sigma^2) - 1) exp(2m/sigma + s^2/sigma^2)``."""
        base = posterior.base_dist if isinstance(posterior, dist.Independent) else posterior
        m, s = base.loc, base.scale
        mean, var = m, s.square()
        if not self.monotone.any():
            return mean, var
        half, logn = self._rows("half_normal"), self._rows("log_normal")
        folded = (s * math.sqrt(2 / math.pi) * torch.exp(-0.5 * (m / s).square())
                  + m * (1 - 2 * torch.special.ndtr(-m / s)))
        mean = torch.where(half, folded, mean)
        var = torch.where(half, (m.square() + s.square() - folded.square()).clamp_min(0.0), var)
        mu, tau2 = m / self.prior_std, (s / self.prior_std).square()  # sigma exp(u), u ~ N(mu, tau2)
        mean = torch.where(logn, self.prior_std * torch.exp(mu + tau2 / 2), mean)
        var = torch.where(logn, self.prior_std.square() * torch.expm1(tau2) * torch.exp(2 * mu + tau2), var)
        return mean, var

    def moments(self, h: torch.Tensor, posterior: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the scores under a mean-field Normal ``posterior`` of ``theta``."""
        mean, var = self.weight_moments(posterior)
        return h @ mean, h.square() @ var


class LinearPath(nn.Module):
    """A point-estimated linear map ``h -> (K,)`` scores (or one reward with ``out_dim=None``)."""

    global_sites: dict = {}

    def __init__(self, in_dim: int, out_dim: int | None):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Linear(in_dim, out_dim or 1)

    def sample(self) -> dict:
        return {}

    def scores(self, h: torch.Tensor, globals_: dict | None = None) -> torch.Tensor:
        s = self.net(h)
        return s.squeeze(-1) if self.out_dim is None else s

    def moments(self, h: torch.Tensor, posterior=None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scores(h)
        return s, torch.zeros_like(s)


class MLPPath(LinearPath):
    """A point-estimated MLP ``h -> hidden -> (K,)`` (or one reward)."""

    def __init__(self, in_dim: int, out_dim: int | None, hidden_dim: int = 256):
        nn.Module.__init__(self)
        self.out_dim = out_dim
        self.net = mlp(in_dim, hidden_dim, out_dim or 1)


class ValidityGate(_GlobalGaussian):
    r"""A saturating validity term added to the reward: ``kappa log sigma(v . h_G + c)``, ``kappa`` times the
    log-probability that the response is a valid answer at all (on topic, coherent, complete), from the columns ``G``
    of ``h`` named by ``ModelConfig.gate`` (low-dimensional evidence: the cosine, the text statistics, a language
    model's). ``scale`` ``kappa`` (default 1) tempers the product of experts, ``P(valid)^kappa x exp(quality)``: the
    validity observations fit ``sigma(t)`` as before, and a rejected answer loses ``kappa`` times as much reward.

    Global sites ``gate_weight`` ``(G,)`` (prior std ``prior_scale`` per column, whose features arrive
    standardised) and ``gate_bias`` ``(K,)``, one per factor (``(1,)`` for a plain gate; prior std ``bias_scale``). A real answer sits where the term has
    saturated (``log sigma(t) -> 0``), so the judge's preferences among real answers move it little, while an
    answer the gate rejects loses ``|v . h_G + c|``: a product of experts, ``P(valid) x exp(quality)``, not one
    linear trade-off in which quality can outbid relevance. ``columns`` (``(F,)`` bool) is saved with the weights.
    ``in_label``: whether the term enters the preference label's logit in training as it enters the reward (True),
    or the gate is taught by the validity observations alone and the quality score by the labels alone (False).
    ``by_prompt`` (with ``prompt_dim`` E): the weights depend on the prompt, ``v(x) = v + V^T x̂`` (``x̂`` the
    unit-norm prompt embedding, site ``gate_prompt`` ``(E, G)``, prior std ``prior_scale``, as
    :class:`NuisanceTerm`'s ``by_prompt``), so what counts as valid can differ by task: copying the prompt is an
    echo for a question and the answer for "capitalise this sentence"; a repeated line is junk in an essay and a
    chorus in a song.
    ``clip`` ``c`` (0: off): each column is soft-clipped to ``c tanh(h / c)`` before the weights, so what one
    heavy-tailed statistic can take off an answer is bounded by ``c |v_j|`` (a song's chorus or a table's rule lines
    lie far out on the repetition columns; at c = 3 it lost on validation, ``benchmarks/README.md`` section 2v).
    ``pairwise``: junk made from an answer is also observed to be *less* valid than that answer,
    ``valid_order ~ Bernoulli(sigma(t_a - t_b))`` = 1 on the junk pairs: the comparison a shuffle (only worse than
    its own original) would need; with the text statistics and LM columns measured so far it changed nothing
    (benchmarks/README.md, section 2j).
    ``factors`` (``(G,)`` long, ``0..K-1`` per gate column; default all 0): a *conjunctive* gate, validity as
    ``K`` requirements that must all hold (a noisy AND), ``P(valid) = prod_k sigma(t_k)``, ``t_k = sum_{j in k}
    v_j h_j + c_k`` (site ``gate_bias`` ``(K,)``). Each factor's ``log sigma(t_k) <= 0``, so strength on one
    requirement cannot buy back a failure on another: with one linear logit, an answer's many list items or its
    copying nothing of the prompt offset its irrelevance (a content-free scaffold), with a relevance factor apart
    they cannot. The factors enter as the single logit ``logit(P(valid))``, so the reward's term, the validity
    observations and ``pairwise`` read them as they read one (``K = 1``: ``t`` itself).
    """

    def __init__(self, columns: torch.Tensor, prior_scale: float = 1.0, bias_scale: float = 3.0, in_label: bool = True,
                 pairwise: bool = False, prompt_dim: int | None = None, by_prompt: bool = False, scale: float = 1.0,
                 clip: float = 0.0, factors: torch.Tensor | None = None):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"ValidityGate: scale must be > 0 (got {scale}); 1 is the plain product of experts")
        if not clip >= 0:
            raise ValueError(f"ValidityGate: clip must be >= 0 (got {clip}); 0 leaves the columns as they are")
        self.in_label, self.pairwise, self.by_prompt, self.scale = in_label, pairwise, by_prompt, float(scale)
        self.clip = float(clip)
        columns = torch.as_tensor(columns, dtype=torch.bool)
        width = int(columns.sum())
        if columns.dim() != 1 or width < 1:
            raise ValueError("ValidityGate: columns must be an (F,) bool mask with at least one column (see "
                             "vrm_pyro.representations.part_columns)")
        factors = torch.zeros(width, dtype=torch.long) if factors is None else torch.as_tensor(factors).long()
        count = int(factors.max()) + 1 if len(factors) else 0
        if factors.shape != (width,) or factors.min() < 0 or set(factors.tolist()) != set(range(count)):
            raise ValueError(f"ValidityGate: factors must give each of the {width} gate columns a factor 0..K-1, every "
                             f"factor at least one column (got {factors.tolist()})")
        self.num_factors = count
        self.priors = {"gate_weight": ((width,), prior_scale), "gate_bias": ((count,), bias_scale)}
        if by_prompt:
            if not prompt_dim:
                raise ValueError("ValidityGate(by_prompt=True) needs prompt_dim, the prompt embedding's width E")
            self.priors["gate_prompt"] = ((prompt_dim, width), prior_scale)
        self.register_buffer("columns", columns)
        # which factor each column belongs to; saved only for a conjunctive gate (one factor: the checkpoints of before)
        self.register_buffer("factors", factors, persistent=count > 1)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def inputs(self, h: torch.Tensor) -> torch.Tensor:
        """The gate's columns of ``h`` ``(B, F)`` as its weights see them (soft-clipped with ``clip``): ``(B, G)``."""
        h_g = h[:, self.columns]
        return self.clip * torch.tanh(h_g / self.clip) if self.clip else h_g

    def validity_logits(self, globals_: dict, h: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """``logit P(valid)``, for one factor ``v(x) . h_G + c``: ``h (B, F)`` (and ``prompt (B, E)`` with
        ``by_prompt``) -> ``(B,)``, or ``(S, B)`` for ``S`` draws of the sites."""
        if self.num_factors > 1:
            log_valid = F.logsigmoid(self.factor_logits(globals_, h, prompt)).sum(-1)  # sum_k log sigma(t_k)
            # logit p = log p - log(1 - p); 1 - p = -expm1(log p), kept off 0 where every factor has saturated
            return log_valid - torch.log(-torch.expm1(log_valid).clamp_max(-torch.finfo(log_valid.dtype).tiny))
        h_g = self.inputs(h)
        t = linear_scores(h_g, globals_["gate_weight"], 1)
        if self.by_prompt:
            t = t + (self._prompt_weights(globals_, prompt) * h_g).sum(-1)
        bias = globals_["gate_bias"]
        return t + (bias.reshape(-1, 1) if t.dim() > 1 else bias)

    def factor_logits(self, globals_: dict, h: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Each factor's ``t_k = sum_{j in k} v_j(x) h_j + c_k``: ``(B, K)``, or ``(S, B, K)`` for draws: which
        requirement an answer fails (``K = 1``: the plain gate's logit)."""
        h_g = self.inputs(h)
        weight = globals_["gate_weight"]
        per_column = h_g * (weight if weight.dim() == 1 else weight.reshape(-1, 1, h_g.shape[-1]))  # (B, G) / (S, B, G)
        if self.by_prompt:
            per_column = per_column + self._prompt_weights(globals_, prompt) * h_g
        bias = globals_["gate_bias"]
        one_hot = F.one_hot(self.factors, self.num_factors).to(per_column.dtype)  # (G, K)
        return per_column @ one_hot + (bias if bias.dim() == 1 else bias.reshape(-1, 1, self.num_factors))

    def _prompt_weights(self, globals_: dict, prompt: torch.Tensor | None) -> torch.Tensor:
        """``V^T x̂``: ``(B, G)``, or ``(S, B, G)`` for draws."""
        if prompt is None:
            raise ValueError("ValidityGate(by_prompt=True): pass the prompts' embeddings")
        return linear_scores(F.normalize(prompt, dim=-1), globals_["gate_prompt"], 2)

    def term(self, t: torch.Tensor) -> torch.Tensor:
        """The reward's term of validity logits ``t``: ``kappa log sigma(t)`` (``kappa`` = ``scale``)."""
        return self.scale * F.logsigmoid(t)

    def logits(self, globals_: dict, h: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """The reward's term ``kappa log P(valid)``, ``kappa log sigma(v(x) . h_G + c)`` for one factor, ``kappa sum_k
        log sigma(t_k)`` for several: ``(B,)`` or ``(S, B)``."""
        return self.term(self.validity_logits(globals_, h, prompt))

    def observe(self, t_a: torch.Tensor, t_b: torch.Tensor, junk: torch.Tensor) -> None:
        """Inside the pair plate, given the validity logits ``t_a``, ``t_b`` (:meth:`validity_logits`): what is known
        of each response's validity, ``valid_a ~ Bernoulli(sigma(t_a))`` observed 1 (a real answer) and ``valid_b``
        observed ``not junk``: every answer a judge saw is valid, junk made by construction is not. This, not the
        judge's labels, is what teaches the gate."""
        ones = torch.ones_like(junk, dtype=t_a.dtype)
        pyro.sample("valid_a", dist.Bernoulli(logits=t_a), obs=ones)
        pyro.sample("valid_b", dist.Bernoulli(logits=t_b), obs=(~junk).to(t_a.dtype))
        if self.pairwise:
            with poutine.mask(mask=junk):
                pyro.sample("valid_order", dist.Bernoulli(logits=t_a - t_b), obs=ones)


class NuisanceTerm(_GlobalGaussian):
    """The judge's reaction to nuisance covariates: ``gamma(x) . (φ(a) − φ(b))``.

    Args:
        num_covariates: C (the covariates arrive standardised, so ``prior_scale`` is in logits per
            standard deviation of a covariate).
        prompt_dim: E; with ``by_prompt`` the coefficients depend on the prompt,
            ``gamma(x) = gamma + Gamma^T x̂`` (``x̂`` the unit-norm prompt embedding, site ``gamma_prompt``).
    """

    def __init__(self, num_covariates: int, prompt_dim: int, *, prior_scale: float = 1.0, by_prompt: bool = False):
        super().__init__()
        self.num_covariates, self.by_prompt = num_covariates, by_prompt
        self.priors = {"gamma": ((num_covariates,), prior_scale)}
        if by_prompt:
            self.priors["gamma_prompt"] = ((prompt_dim, num_covariates), prior_scale)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def coefficients(self, globals_: dict, prompt: torch.Tensor) -> torch.Tensor:
        """``gamma(x)``: ``(B, C)``, or ``(S, B, C)`` for draws of the global sites."""
        gamma = globals_["gamma"]
        if not self.by_prompt:
            return gamma.reshape(-1, 1, self.num_covariates) if gamma.dim() > 1 else gamma.expand(prompt.shape[0], -1)
        per_prompt = linear_scores(F.normalize(prompt, dim=-1), globals_["gamma_prompt"], 2)
        if gamma.dim() > 1:
            gamma = gamma.reshape(-1, 1, self.num_covariates)
        return gamma + per_prompt

    def logits(self, globals_: dict, prompt: torch.Tensor, delta_phi: torch.Tensor) -> torch.Tensor:
        """``gamma(x) . (φ(a) − φ(b))``: ``(B,)`` or ``(S, B)``."""
        return (self.coefficients(globals_, prompt) * delta_phi).sum(-1)
