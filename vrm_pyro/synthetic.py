r"""Synthetic preference data from a known process, at the embedding level.

For prompt ``p`` with embedding ``e_p ~ N(0, I_E)``, the true objective weights are
``w_p = softmax(A e_p / tau)`` (a fixed random ``A``: weights depend on the prompt, so an
amortised guide can recover them). Each response has true per-objective qualities
``f ~ N(0, I_K)`` and embedding ``e_y = e_p / 2 + B f + sigma * eps``; the true reward is
``r = w_p . f`` and the label ``l ~ Bernoulli(sigmoid(s (r_a - r_b)))``.

With ``nuisance > 0`` a spurious cue is added: a fixed direction ``c`` (think "length")
enters every response embedding as ``e_y += nuisance * n_y * c`` where ``n_y`` is chosen to
agree with the label with probability ``cue_agreement`` (1 = the cue always points at
the preferred response; 0.5 = uninformative). Training data with a high agreement and
test data with 0.5 measure how much a model relies on the cue (out-of-distribution drop).

With ``length_effect != 0`` the judge also has a known *nuisance* bias: each response has an
observable covariate ``φ_y ~ N(0, 1)`` (think standardised log length) that the embedding encodes
(``e_y += length_in_embedding * φ_y * c_len``) and the label's logit gains
``length_effect * (φ_a − φ_b)``; ``φ`` is returned as the pairs' nuisance covariates. A model with a
nuisance term should recover ``length_effect`` and keep its authentic reward free of ``φ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vrm_pyro.data import PairEmbeddings


@dataclass
class SyntheticPreferences:
    """Pairs plus the truth: ``true_weights (N, K)`` per pair, ``prompt_index (N,)``,
    ``prompt_weights (P, K)``, ``prompt_emb (P, E)``, true rewards ``reward_a``, ``reward_b`` ``(N,)``."""

    pairs: PairEmbeddings
    true_weights: np.ndarray
    prompt_index: np.ndarray
    prompt_weights: np.ndarray
    prompt_emb: np.ndarray
    reward_a: np.ndarray
    reward_b: np.ndarray


@dataclass
class SyntheticProcess:
    """The fixed parts of the generator (``A``, ``B``, the cue direction); sample many datasets from one."""

    emb_dim: int = 32
    num_objectives: int = 4
    tau: float = 0.5
    response_noise: float = 0.3
    label_scale: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.A = rng.normal(size=(self.num_objectives, self.emb_dim)) / np.sqrt(self.emb_dim)
        self.B = rng.normal(size=(self.emb_dim, self.num_objectives)) / np.sqrt(self.num_objectives)
        cue = rng.normal(size=self.emb_dim)
        self.cue = cue / np.linalg.norm(cue)
        length = rng.normal(size=self.emb_dim)
        self.length_direction = length / np.linalg.norm(length)

    def weights(self, prompt_emb: np.ndarray) -> np.ndarray:
        logits = prompt_emb @ self.A.T / self.tau
        logits -= logits.max(-1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(-1, keepdims=True)

    def sample(self, num_prompts: int, pairs_per_prompt: int, *, nuisance: float = 0.0,
               cue_agreement: float = 0.5, length_effect: float = 0.0, length_in_embedding: float = 1.0,
               seed: int = 1) -> SyntheticPreferences:
        rng = np.random.default_rng(seed)
        E, K = self.emb_dim, self.num_objectives
        prompt_emb = rng.normal(size=(num_prompts, E))
        prompt_w = self.weights(prompt_emb)
        idx = np.repeat(np.arange(num_prompts), pairs_per_prompt)
        n = len(idx)
        f_a, f_b = rng.normal(size=(n, K)), rng.normal(size=(n, K))
        w = prompt_w[idx]
        r_a, r_b = (w * f_a).sum(-1), (w * f_b).sum(-1)
        phi_a, phi_b = (rng.normal(size=n), rng.normal(size=n)) if length_effect else (np.zeros(n), np.zeros(n))
        p = 1.0 / (1.0 + np.exp(-self.label_scale * (r_a - r_b) - length_effect * (phi_a - phi_b)))
        label = (rng.random(n) < p).astype(np.float32)

        def embed(f):
            return prompt_emb[idx] / 2 + f @ self.B.T + self.response_noise * rng.normal(size=(n, E))

        e_a, e_b = embed(f_a), embed(f_b)
        if length_effect:
            e_a += length_in_embedding * phi_a[:, None] * self.length_direction
            e_b += length_in_embedding * phi_b[:, None] * self.length_direction
        if nuisance > 0:
            agree = rng.random(n) < cue_agreement
            sign = np.where(label > 0.5, 1.0, -1.0) * np.where(agree, 1.0, -1.0)  # +: cue favours a
            e_a += nuisance * (sign[:, None] / 2) * self.cue
            e_b -= nuisance * (sign[:, None] / 2) * self.cue
        covariates = ((torch.tensor(phi_a, dtype=torch.float32)[:, None], torch.tensor(phi_b, dtype=torch.float32)[:, None])
                      if length_effect else (None, None))
        pairs = PairEmbeddings(torch.tensor(prompt_emb[idx], dtype=torch.float32),
                               torch.tensor(e_a, dtype=torch.float32), torch.tensor(e_b, dtype=torch.float32),
                               torch.tensor(label), *covariates)
        return SyntheticPreferences(pairs, w, idx, prompt_w, prompt_emb, r_a, r_b)


def matched_weight_correlation(true_w: np.ndarray, learned_w: np.ndarray) -> tuple[float, list[int]]:
    """Mean Pearson correlation between true and learned weights over objectives, after matching
    each true objective to a distinct learned one (objectives are identified up to permutation):
    the optimal matching, by :func:`scipy.optimize.linear_sum_assignment`.

    Returns ``(mean correlation, assignment)``; ``learned_w`` may have more objectives than ``true_w``.
    """
    from scipy.optimize import linear_sum_assignment

    K_true, K_learned = true_w.shape[1], learned_w.shape[1]
    corr = np.zeros((K_true, K_learned))
    for i in range(K_true):
        for j in range(K_learned):
            a, b = true_w[:, i], learned_w[:, j]
            corr[i, j] = 0.0 if a.std() < 1e-12 or b.std() < 1e-12 else np.corrcoef(a, b)[0, 1]
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].sum() / K_true), [int(c) for c in cols[np.argsort(rows)]]
