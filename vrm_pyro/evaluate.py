"""Evaluation of any :class:`~vrm_pyro.reward_model.RewardModel` (VRM or baseline) on pairs.

Metrics take predicted probabilities ``p = P(a preferred)`` and labels ``l`` in [0, 1]:

- accuracy: ``1[p > 1/2] == 1[l > 1/2]`` over pairs with ``l != 1/2`` (a tie ``p = 1/2`` counts 1/2);
- nll: ``-(l log p + (1 - l) log(1 - p))`` (cross-entropy against hard or soft labels);
- brier: ``(p - l)^2``;
- ece: expected calibration error of ``max(p, 1-p)`` against the hard label, 10 equal-width bins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def predict_pairs(reward_model, pairs: PairEmbeddings, *, num_samples: int = 32, seed: int = 0) -> PairPredictions:
    d = reward_model.difference_samples(pairs.prompt, pairs.response_a, pairs.response_b,
                                        num_samples=num_samples, seed=seed)
    mean = d.mean(0)
    std = d.std(0) if d.shape[0] > 1 else torch.zeros_like(mean)
    flip = ((d > 0) != (mean > 0)).float().mean(0)
    prob = torch.sigmoid(d).mean(0)  # = pair_probability, from the same draws
    return PairPredictions(prob.numpy(), mean.numpy(), std.numpy(), flip.numpy(), pairs.label.cpu().numpy())


@dataclass
class EvaluationReport:
    """Side-by-side evaluation of several reward models on the same pairs.

    ``metrics[name]``: accuracy, nll, brier, ece (against the labels as given, hard or soft),
    ``nll_hard``/``brier_hard`` (against the rounded labels), and length-bias figures when texts
    are known; ``reliability[name]``: :func:`reliability_bins`; ``uncertainty[name]``:
    :func:`accuracy_by_uncertainty` over VRM's own uncertainty about the preferred side, the
    posterior probability that ``r_a - r_b`` has the other sign than its mean (``std`` alone grows
    with the size of the difference, so it is reported in the JSON but not binned); ``margin[name]``:
    over ``|E[r_a - r_b]|`` (every model); ``groups``: :func:`group_breakdown` per model.
    """

    metrics: dict[str, dict] = field(default_factory=dict)
    reliability: dict[str, dict] = field(default_factory=dict)
    uncertainty: dict[str, Any] = field(default_factory=dict)
    margin: dict[str, Any] = field(default_factory=dict)
    groups: Any = None
    group_column: str | None = None
    info: dict = field(default_factory=dict)

    def table(self) -> str:
        """The headline numbers as a plain-text table, one row per model."""
        cols = ["accuracy", "nll", "brier", "ece", "nll_hard", "length_spearman", "acc_shorter_preferred"]
        head = f"{'model':<10}" + "".join(f"{c:>22}" for c in cols)
        lines = [head]
        for name, m in self.metrics.items():
            lines.append(f"{name:<10}" + "".join(f"{m.get(c, float('nan')):>22.4f}" for c in cols))
        return "\n".join(lines)

    def to_json(self) -> dict:
        def frame(df):
            return None if df is None else df.to_dict(orient="records")

        return {"info": self.info, "metrics": self.metrics,
                "reliability": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()} for k, v in self.reliability.items()},
                "accuracy_by_uncertainty": {k: frame(v) for k, v in self.uncertainty.items()},
                "accuracy_by_margin": {k: frame(v) for k, v in self.margin.items()},
                "group_column": self.group_column, "groups": frame(self.groups)}

    def save(self, output_dir: str | Path) -> Path:
        """Write ``report.md``, ``report.json``, ``reliability.png``, ``uncertainty.png`` (and ``groups.csv``)."""
        from vrm_pyro.plots import accuracy_vs_uncertainty_plot, reliability_diagram

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(self.to_json(), indent=2, default=float))
        reliability_diagram(self.reliability, path=out / "reliability.png")
        accuracy_vs_uncertainty_plot(self.uncertainty, self.margin, path=out / "uncertainty.png")
        md = ["# Evaluation report", ""]
        md += [f"- {k}: {v}" for k, v in self.info.items()]
        md += ["", "## Metrics", "", _markdown_table(self.metrics), "",
               "Accuracy and ECE use decided pairs (label != 0.5) against the rounded label; NLL and Brier use the "
               "labels as given (soft where soft), `nll_hard`/`brier_hard` the rounded labels.", "",
               "![reliability](reliability.png)", "", "## Accuracy vs the model's own uncertainty", ""]
        for name, df in self.uncertainty.items():
            md += [f"**{name}** (bins of q(r_a - r_b has the other sign than its mean), low to high)", "",
                   frame_markdown(df), ""]
        for name, df in self.margin.items():
            md += [f"**{name}** (bins of the margin |E[r_a - r_b]|, high to low)", "", frame_markdown(df), ""]
        md += ["![uncertainty](uncertainty.png)", ""]
        if self.groups is not None and len(self.groups):
            self.groups.to_csv(out / "groups.csv", index=False)
            md += [f"## By {self.group_column}", "", frame_markdown(self.groups), ""]
        (out / "report.md").write_text("\n".join(md))
        return out


def frame_markdown(df) -> str:
    """A pandas DataFrame as a Markdown table (floats to 4 decimals)."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float | np.floating) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _markdown_table(metrics: dict[str, dict]) -> str:
    keys = list(dict.fromkeys(k for m in metrics.values() for k in m))
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, m in metrics.items():
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_models(models: dict, pairs: PairEmbeddings, *, texts=None, group_column: str | None = None,
                    num_samples: int = 32, seed: int = 0, bins: int = 10, uncertainty_bins: int = 5,
                    info: dict | None = None) -> EvaluationReport:
    """Evaluate several reward models (e.g. ``{"vrm": ..., "bt": ...}``) on the same embedded pairs.

    ``texts``: the :class:`~vrm_pyro.data.PreferencePairs` the embeddings came from; with it the
    report adds length-bias figures and, with ``group_column`` (a field kept in ``texts.meta``), a
    breakdown per group.
    """
    from vrm_pyro.hacking import length_bias

    report = EvaluationReport(group_column=group_column, info=dict(info or {}, pairs=len(pairs)))
    frames = []
    for name, rm in models.items():
        pred = predict_pairs(rm, pairs, num_samples=num_samples, seed=seed)
        hard = (pred.label > 0.5).astype(np.float64)
        metrics = pairwise_metrics(pred.prob, pred.label, bins=bins)
        hard_m = pairwise_metrics(pred.prob, np.where(pred.label == 0.5, 0.5, hard), bins=bins)
        metrics.update(nll_hard=hard_m["nll"], brier_hard=hard_m["brier"])
        if texts is not None:
            metrics.update(length_bias(rm, pairs, texts, num_samples=num_samples))
        report.metrics[name] = metrics
        report.reliability[name] = reliability_bins(pred.prob, pred.label, bins=bins)
        if rm.has_latents:
            report.uncertainty[name] = accuracy_by_uncertainty(pred.prob, pred.label, pred.sign_flip, bins=uncertainty_bins,
                                                               name="sign_flip")
            metrics["corr_std_margin"] = float(np.corrcoef(pred.diff_std, np.abs(pred.diff_mean))[0, 1])
        report.margin[name] = accuracy_by_uncertainty(pred.prob, pred.label, np.abs(pred.diff_mean),
                                                      bins=uncertainty_bins, name="margin", descending=True)
        if texts is not None and group_column is not None:
            values = [m.get(group_column) for m in texts.meta]
            if all(v is None for v in values):
                from vrm_pyro.errors import DataError

                raise DataError(f"no row has a '{group_column}' field (fields kept: "
                                f"{sorted(texts.meta[0]) if texts.meta else []})", source=str(texts.source),
                                field=group_column)
            df = group_breakdown(pred.prob, pred.label, values)
            df.insert(0, "model", name)
            frames.append(df)
    if frames:
        import pandas as pd

        report.groups = pd.concat(frames, ignore_index=True)
    return report
