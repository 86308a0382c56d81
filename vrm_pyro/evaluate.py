"""Metrics of any :class:`~vrm_pyro.reward_model.RewardModel` (VRM or baseline) on pairs.

This module only measures; what the ``vrm eval`` command writes is :mod:`vrm_pyro.reports`.

Metrics take predicted probabilities ``p = P(a preferred)`` and labels ``l`` in [0, 1]:

- accuracy: ``1[p > 1/2] == 1[l > 1/2]`` over pairs with ``l != 1/2`` (a tie ``p = 1/2`` counts 1/2);
- nll: ``-(l log p + (1 - l) log(1 - p))`` (cross-entropy against hard or soft labels);
- brier: ``(p - l)^2``;
- ece: expected calibration error of ``max(p, 1-p)`` against the hard label, 10 equal-width bins.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def evaluate_pairs(reward_model, pairs: PairEmbeddings, *, num_samples: int = 32, seed: int = 0,
                   include_nuisance: bool = True) -> dict[str, float]:
    """Pairwise metrics of a reward model on embedded pairs (posterior predictive probabilities).

    ``include_nuisance``: predict with the judge's nuisance term (the model of the judge, what the
    labels measure); ``False`` ranks by the authentic reward alone."""
    prob = predict(reward_model, pairs, num_samples=num_samples, seed=seed, include_nuisance=include_nuisance)
    return pairwise_metrics(prob.numpy(), pairs.label.cpu().numpy())


def predict(reward_model, pairs: PairEmbeddings, *, num_samples: int = 32, seed: int = 0,
            include_nuisance: bool = True) -> torch.Tensor:
    """P(a preferred) for each pair, on CPU."""
    b = pairs.batch(slice(None))
    return reward_model.pair_probability(b.prompt, b.response_a, b.response_b, b.nuisance_a, b.nuisance_b,
                                         num_samples=num_samples, seed=seed, include_nuisance=include_nuisance)


# ----------------------------------------------------------------------------- calibration, groups, uncertainty


def reliability_bins(prob, label, *, bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability diagram data: per confidence bin of ``max(p, 1-p)`` in [0.5, 1], the mean
    confidence, the accuracy of the predicted side and the count (decided pairs only)."""
    p = np.asarray(prob, np.float64)
    lab = np.asarray(label, np.float64)
    keep = lab != 0.5
    p, y = p[keep], lab[keep] > 0.5
    conf = np.maximum(p, 1 - p)
    correct = (p > 0.5) == y
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore"):
        return {"edges": edges, "count": count,
                "confidence": np.bincount(idx, conf, minlength=bins) / count,
                "accuracy": np.bincount(idx, correct.astype(float), minlength=bins) / count}


def accuracy_by_uncertainty(prob, label, uncertainty, *, bins: int = 5, name: str = "uncertainty",
                            descending: bool = False):
    """Accuracy in ``bins`` quantile bins of ``uncertainty`` (e.g. the posterior std of the reward
    difference): does the model know when it does not know? A pandas DataFrame, one row per bin,
    columns ``{name}_lo``, ``{name}_hi``, ``{name}_mean``, ``accuracy``, ``n``; bins go from low to high
    values (high to low with ``descending``)."""
    import pandas as pd

    p, lab, u = (np.asarray(x, np.float64) for x in (prob, label, uncertainty))
    keep = lab != 0.5
    p, lab, u = p[keep], lab[keep], u[keep]
    correct = np.where(p == 0.5, 0.5, (p > 0.5) == (lab > 0.5))
    # equal-count bins whose boundaries move past runs of equal values (a tie is never split, so a
    # bin may hold more pairs, e.g. all the pairs whose uncertainty is exactly 0)
    order = np.argsort(u, kind="stable")
    su, n = u[order], len(u)
    cuts = []
    for k in range(1, bins):
        pos = round(k * n / bins)
        while 0 < pos < n and su[pos] == su[pos - 1]:
            pos += 1
        if 0 < pos < n and (not cuts or pos > cuts[-1]):
            cuts.append(pos)
    groups = np.split(order, cuts)
    rows = []
    for b, part in enumerate(groups[::-1] if descending else groups):
        if len(part):
            rows.append({"bin": b, f"{name}_lo": u[part].min(), f"{name}_hi": u[part].max(),
                         f"{name}_mean": u[part].mean(), "accuracy": correct[part].mean(), "n": len(part)})
    return pd.DataFrame(rows)


def group_breakdown(prob, label, groups, *, min_count: int = 1):
    """:func:`pairwise_metrics` per value of a grouping column (e.g. ``generator_2``): a DataFrame."""
    import pandas as pd

    p, lab = np.asarray(prob, np.float64), np.asarray(label, np.float64)
    g = np.asarray([str(x) for x in groups])
    rows = []
    for value in sorted(set(g)):
        m = g == value
        if m.sum() >= min_count:
            rows.append({"group": value, **pairwise_metrics(p[m], lab[m])})
    return pd.DataFrame(rows)


@dataclass
class PairPredictions:
    """A model's predictions on ``N`` pairs: ``prob`` P(a preferred), posterior mean and std of
    ``r_a - r_b``, ``sign_flip`` = q(sign of r_a - r_b differs from the sign of its mean) (both 0 for
    the baseline), and the labels."""

    prob: np.ndarray
    diff_mean: np.ndarray
    diff_std: np.ndarray
    sign_flip: np.ndarray
    label: np.ndarray


def predict_pairs(reward_model, pairs: PairEmbeddings, *, num_samples: int = 32, seed: int = 0,
                  include_nuisance: bool = True) -> PairPredictions:
    b = pairs.batch(slice(None))
    d = reward_model.difference_samples(b.prompt, b.response_a, b.response_b, b.nuisance_a, b.nuisance_b,
                                        num_samples=num_samples, seed=seed, include_nuisance=include_nuisance)
    mean = d.mean(0)
    std = d.std(0) if d.shape[0] > 1 else torch.zeros_like(mean)
    flip = ((d > 0) != (mean > 0)).float().mean(0)
    prob = torch.sigmoid(d).mean(0)  # = pair_probability, from the same draws
    return PairPredictions(prob.numpy(), mean.numpy(), std.numpy(), flip.numpy(), pairs.label.cpu().numpy())


def auroc(scores_negative, scores_positive) -> float:
    """Area under the ROC curve of telling positives (e.g. out-of-distribution responses) from negatives by a
    score (e.g. ``reward_std``): the probability that a random positive scores above a random negative (ties
    count one half)."""
    import pandas as pd

    neg, pos = np.asarray(scores_negative, float), np.asarray(scores_positive, float)
    ranks = pd.Series(np.concatenate([neg, pos])).rank().to_numpy()
    return float((ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def spearman(x, y) -> float:
    """Spearman rank correlation (pandas; average ranks for ties; NaN when either side is constant)."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():  # a constant side is reported as NaN, as documented
        warnings.simplefilter("ignore")
        return float(pd.Series(np.asarray(x, float)).corr(pd.Series(np.asarray(y, float)), method="spearman"))
