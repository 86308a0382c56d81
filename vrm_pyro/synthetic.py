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

    def weights(self, prompt_emb: np.ndarray) -> np.ndarray:
        logits = prompt_emb @ self.A.T / self.tau
        logits -= logits.max(-1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(-1, keepdims=True)

    def sample(self, num_prompts: int, pairs_per_prompt: int, *, nuisance: float = 0.0,
               cue_agreement: float = 0.5, seed: int = 1) -> SyntheticPreferences:
        rng = np.random.default_rng(seed)
        E, K = self.emb_dim, self.num_objectives
        prompt_emb = rng.normal(size=(num_prompts, E))
        prompt_w = self.weights(prompt_emb)
        idx = np.repeat(np.arange(num_prompts), pairs_per_prompt)
        n = len(idx)
        f_a, f_b = rng.normal(size=(n, K)), rng.normal(size=(n, K))
        w = prompt_w[idx]
        r_a, r_b = (w * f_a).sum(-1), (w * f_b).sum(-1)
        p = 1.0 / (1.0 + np.exp(-self.label_scale * (r_a - r_b)))
        label = (rng.random(n) < p).astype(np.float32)

        def embed(f):
            return prompt_emb[idx] / 2 + f @ self.B.T + self.response_noise * rng.normal(size=(n, E))

        e_a, e_b = embed(f_a), embed(f_b)
        if nuisance > 0:
            agree = rng.random(n) < cue_agreement
            sign = np.where(label > 0.5, 1.0, -1.0) * np.where(agree, 1.0, -1.0)  # +: cue favours a
            e_a += nuisance * (sign[:, None] / 2) * self.cue
            e_b -= nuisance * (sign[:, None] / 2) * self.cue
        pairs = PairEmbeddings(torch.tensor(prompt_emb[idx], dtype=torch.float32),
                               torch.tensor(e_a, dtype=torch.float32), torch.tensor(e_b, dtype=torch.float32),
                               torch.tensor(label), PairEmbeddings.multiplicity(idx.tolist()))
        return SyntheticPreferences(pairs, w, idx, prompt_w, prompt_emb, r_a, r_b)


def matched_weight_correlation(true_w: np.ndarray, learned_w: np.ndarray) -> tuple[float, list[int]]:
    """Mean Pearson correlation between true and learned weights over objectives, after matching
    each true objective to a distinct learned one (objectives are identified up to permutation).

    Returns ``(mean correlation, assignment)``; ``learned_w`` may have more objectives than ``true_w``.
    """
    K_true, K_learned = true_w.shape[1], learned_w.shape[1]
    corr = np.zeros((K_true, K_learned))
    for i in range(K_true):
        for j in range(K_learned):
            a, b = true_w[:, i], learned_w[:, j]
            corr[i, j] = 0.0 if a.std() < 1e-12 or b.std() < 1e-12 else np.corrcoef(a, b)[0, 1]
    from itertools import permutations

    best, best_perm = -np.inf, None
    if K_learned <= 8:
        for perm in permutations(range(K_learned), K_true):
            score = corr[np.arange(K_true), list(perm)].sum()
            if score > best:
                best, best_perm = score, list(perm)
    else:  # greedy for large K
        best_perm, used = [], set()
        for i in np.argsort(-corr.max(1)):
            j = max((j for j in range(K_learned) if j not in used), key=lambda j: corr[i, j])
            used.add(j)
            best_perm.append(j)
        best = sum(corr[i, j] for i, j in zip(np.argsort(-corr.max(1)), best_perm))
    return float(best / K_true), best_perm
