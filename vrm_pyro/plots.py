"""Plots a reader looks at: ELBO curves and posterior weight heatmaps (matplotlib, Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def weights_heatmap(weights: np.ndarray, prompts: list[str], *, path: str | None = None, max_prompts: int = 40):
    """Heatmap of posterior mean weights, prompts (rows) x objectives (columns)."""
    w = np.asarray(weights)[:max_prompts]
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * w.shape[1], 1.0 + 0.32 * w.shape[0]))
    im = ax.imshow(w, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-6))
    ax.set_xticks(range(w.shape[1]), [f"obj {k}" for k in range(w.shape[1])], rotation=45, ha="right")
    ax.set_yticks(range(w.shape[0]), [_short(p) for p in prompts[:max_prompts]], fontsize=7)
    ax.set_xlabel("objective k")
    ax.set_title("Posterior mean objective weights E_q[w_k | x]")
    fig.colorbar(im, ax=ax, label="weight")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
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
