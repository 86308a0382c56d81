"""Plots a reader looks at: ELBO curves and posterior weight heatmaps (matplotlib).

The module leaves the backend alone (a notebook keeps its inline figures; a headless process gets
matplotlib's own non-interactive fallback)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def weights_heatmap(weights: np.ndarray, prompts: list[str], *, lower: np.ndarray | None = None,
                    upper: np.ndarray | None = None, path: str | None = None, max_prompts: int = 40):
    """Posterior mean objective weights, prompts (rows) x objectives (columns), on a diverging scale centred
    on the uniform weight 1/K (blue: below, red: above), with the credible interval printed in each cell
    when ``lower`` and ``upper`` are given."""
    from matplotlib.colors import TwoSlopeNorm

    w = np.asarray(weights)[:max_prompts]
    n, k = w.shape
    centre = 1.0 / k
    span = max(float(np.abs(w - centre).max()), 1e-3)
    fig, ax = plt.subplots(figsize=(2.6 + 0.9 * k, 1.2 + 0.34 * n), layout="constrained")
    im = ax.imshow(w, aspect="auto", cmap="RdBu_r",
                   norm=TwoSlopeNorm(vcenter=centre, vmin=max(0.0, centre - span), vmax=min(1.0, centre + span)))
    if lower is not None and upper is not None:
        lo, hi = np.asarray(lower)[:max_prompts], np.asarray(upper)[:max_prompts]
        for i in range(n):
            for j in range(k):
                strong = abs(w[i, j] - centre) > 0.6 * span  # light text on the saturated cells
                ax.text(j, i, f"{w[i, j]:.2f}\n[{lo[i, j]:.2f}, {hi[i, j]:.2f}]", ha="center", va="center", fontsize=5.5,
                        color="white" if strong else "black")
    ax.set_xticks(range(k), [f"obj {j}" for j in range(k)], rotation=45, ha="right")
    ax.set_yticks(range(n), [_short(p, 40) for p in prompts[:max_prompts]], fontsize=7)
    ax.set_xlabel("objective k")
    ax.set_title(f"E_q[w_k | x] (centred on 1/K = {centre:.3f})", fontsize=10)
    fig.colorbar(im, ax=ax, label="posterior mean weight", shrink=0.8)
    if path:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig


def elbo_curve(histories: dict[str, list[dict]], *, path: str | None = None):
    """Training loss (negative ELBO per pair) and validation NLL per epoch, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["loss"] for h in hist], marker="o", label=name)
        if "val_nll" in hist[0]:
            axes[1].plot(ep, [h["val_nll"] for h in hist], marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="-ELBO per pair", title="Training objective")
    axes[1].set(xlabel="epoch", ylabel="NLL per pair", title="Validation predictive NLL")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def _finish(fig, path):
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def reliability_diagram(curves: dict[str, dict], *, path=None):
    """Accuracy of the predicted side vs confidence ``max(p, 1-p)``, one line per model, with the
    diagonal of perfect calibration and the share of pairs per bin below."""
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0.5, 1.0], [0.5, 1.0], color="grey", ls="--", lw=1, label="perfectly calibrated")
    width = 0.5 / max(len(next(iter(curves.values()))["count"]), 1) if curves else 0.05
    for i, (name, c) in enumerate(curves.items()):
        ok = c["count"] > 0
        ax.plot(c["confidence"][ok], c["accuracy"][ok], marker="o", label=name)
        centers = (c["edges"][:-1] + c["edges"][1:]) / 2
        axc.bar(centers + (i - (len(curves) - 1) / 2) * width / len(curves), c["count"] / max(c["count"].sum(), 1),
                width=width / len(curves), label=name)
    ax.set(ylabel="accuracy of the predicted side", title="Reliability diagram", xlim=(0.5, 1.0), ylim=(0.0, 1.02))
    axc.set(xlabel="confidence max(p, 1 - p)", ylabel="share of pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def accuracy_vs_uncertainty_plot(uncertainty: dict, margin: dict, *, path=None):
    """Left: accuracy per bin of the posterior probability that ``r_a - r_b`` has the other sign than
    its mean (VRM's own uncertainty). Right: per bin of the margin ``|E[r_a - r_b]|`` (every model).
    Bins hold equal numbers of pairs."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, df in uncertainty.items():
        axes[0].plot(df["sign_flip_mean"], df["accuracy"], marker="o", label=name)
    for name, df in margin.items():
        axes[1].plot(df["margin_mean"], df["accuracy"], marker="o", label=name)
    axes[0].set(xlabel="q(r_a - r_b has the other sign) (bin mean)", ylabel="accuracy",
                title="Accuracy vs the model's own uncertainty")
    axes[1].set(xlabel="|E[r_a - r_b]| (bin mean)", ylabel="accuracy", title="Accuracy vs reward margin")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _finish(fig, path)


def best_of_n_plot(df, *, path=None, title: str = "Best-of-N: gold score of the pick"):
    """Gold score of the picked candidate vs ``n`` (log2 axis) for each method: the over-optimisation curve."""
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"oracle": dict(color="black", ls=":"), "random": dict(color="grey", ls="--"),
              "longest": dict(color="tab:brown", ls="-.")}
    for method, part in df.groupby("method", sort=False):
        ax.plot(part["n"], part["gold"], marker="o", label=method, **styles.get(method, {}))
    ax.set_xscale("log", base=2)
    ax.set(xlabel="n (candidates per prompt, best by reward)", ylabel="mean gold score of the pick", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def spurious_cue_plot(df, *, path=None):
    """Accuracy in and out of distribution vs the train-time agreement of the nuisance cue with the label."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (model, part) in enumerate(df.groupby("model", sort=False)):
        color = f"C{i}"
        ax.plot(part["agreement"], part["acc_in"], marker="o", color=color, label=f"{model}: in distribution")
        ax.plot(part["agreement"], part["acc_ood"], marker="s", ls="--", color=color, label=f"{model}: cue removed (OOD)")
    ax.set(xlabel="P(cue agrees with the label) in training", ylabel="test accuracy",
           title="Spurious-cue test bed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def stress_plot(df, *, path=None, title: str = "Junk vs the real answer"):
    """Share of junk answers that outrank the real one, per junk kind (bars), one colour per model."""
    kinds = list(dict.fromkeys(df["kind"]))
    models = list(dict.fromkeys(df["model"]))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(kinds), 3.8))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        part = df[df["model"] == model].set_index("kind").reindex(kinds)
        ax.bar(np.arange(len(kinds)) + (i - (len(models) - 1) / 2) * width, part["junk_wins"], width=width, label=model)
    ax.axhline(0.02, color="grey", ls="--", lw=1, label="2%")
    ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right")
    ax.set(ylabel="junk ranked at or above the real answer", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _finish(fig, path)
