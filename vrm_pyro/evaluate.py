"""Evaluation of any :class:`~vrm_pyro.reward_model.RewardModel` (VRM or baseline) on pairs.

Metrics take predicted probabilities ``p = P(a preferred)`` and labels ``l`` in [0, 1]:

- accuracy: ``1[p > 1/2] == 1[l > 1/2]`` over pairs with ``l != 1/2`` (a tie ``p = 1/2`` counts 1/2);
- nll: ``-(l log p + (1 - l) log(1 - p))`` (cross-entropy against hard or soft labels);
- brier: ``(p - l)^2``;
- ece: expected calibration error of ``max(p, 1-p)`` against the hard label, 10 equal-width bins.
"""

from __future__ import annotations

import numpy as np
import torch

from vrm_pyro.data import PairEmbeddings

EPS = 1e-6


def pairwise_metrics(prob, label, *, bins: int = 10) -> dict[str, float]:
    """Accuracy, NLL, Brier score and ECE of predicted probabilities against labels."""
    p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1 - EPS)
    lab = np.asarray(label, dtype=np.float64)
    decided = lab != 0.5
    hard = lab[decided] > 0.5
    pd = p[decided]
    correct = np.where(pd == 0.5, 0.5, (pd > 0.5) == hard)
    nll = -(lab * np.log(p) + (1 - lab) * np.log(1 - p))
    return {
        "n": int(len(p)),
        "accuracy": float(correct.mean()) if decided.any() else float("nan"),
        "nll": float(nll.mean()),
        "brier": float(np.mean((p - lab) ** 2)),
        "ece": expected_calibration_error(pd, hard, bins=bins) if decided.any() else float("nan"),
    }


def expected_calibration_error(prob, hard_label, *, bins: int = 10) -> float:
    """ECE of the confidence ``max(p, 1-p)`` against whether the predicted side won."""
    p = np.asarray(prob, np.float64)
    y = np.asarray(hard_label, bool)
    conf = np.maximum(p, 1 - p)
    correct = (p > 0.5) == y
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def evaluate_pairs(reward_model, pairs: PairEmbeddings, *, num_samples: int = 32, seed: int = 0) -> dict[str, float]:
    """Pairwise metrics of a reward model on embedded pairs (posterior predictive probabilities)."""
    prob = reward_model.pair_probability(pairs.prompt, pairs.response_a, pairs.response_b,
                                         num_samples=num_samples, seed=seed)
    return pairwise_metrics(prob.numpy(), pairs.label.cpu().numpy())


def predict(reward_model, pairs: PairEmbeddings, *, num_samples: int = 32) -> torch.Tensor:
    """P(a preferred) for each pair, on CPU."""
    return reward_model.pair_probability(pairs.prompt, pairs.response_a, pairs.response_b, num_samples=num_samples)
