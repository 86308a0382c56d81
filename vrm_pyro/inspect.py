"""Posterior objective weights per prompt: means, credible intervals, tables and heatmaps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from vrm_pyro.errors import VRMError
from vrm_pyro.models.base import fixed_rng


@torch.no_grad()
def posterior_weights(reward_model, prompt_emb: torch.Tensor, *, level: float = 0.9, num_samples: int = 2000,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """``q(w | x)`` summaries for prompts ``(N, E)``: ``mean``, ``lower``, ``upper`` (``(N, K)``),
    the equal-tailed ``level`` credible interval from ``num_samples`` guide draws."""
    if not reward_model.has_latents:
        raise VRMError("this checkpoint is a Bradley–Terry baseline: it has no objective weights to inspect")
    guide = reward_model.guide.weight_guide
    prompt_emb = prompt_emb.to(reward_model.device)
    mean, _ = guide.moments(prompt_emb)
    with fixed_rng(seed, prompt_emb.device):
        samples = guide(prompt_emb).sample((num_samples,))
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], device=samples.device)
    lo, hi = torch.quantile(samples, q, dim=0)
    return {"mean": mean.cpu().numpy(), "lower": lo.cpu().numpy(), "upper": hi.cpu().numpy()}


def weights_table(prompts: list[str], summary: dict[str, np.ndarray]):
    """A pandas DataFrame: ``prompt``, then ``w{k}``, ``w{k}_lo``, ``w{k}_hi`` per objective."""
    import pandas as pd

    cols: dict[str, object] = {"prompt": prompts}
    for k in range(summary["mean"].shape[1]):
        cols[f"w{k}"] = summary["mean"][:, k]
        cols[f"w{k}_lo"] = summary["lower"][:, k]
        cols[f"w{k}_hi"] = summary["upper"][:, k]
    return pd.DataFrame(cols)


def inspect_file(checkpoint_dir, input_path: str, output: str, *, plot: str | None = None,
                 cache_dir: str | None = None, device: str = "cpu", level: float = 0.9, clusters: int = 0):
    """Posterior weights of the prompts in a JSONL file -> CSV/Parquet table (+ heatmap PNG);
    with ``clusters > 0`` a ``cluster`` column from k-means on the posterior means."""
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.errors import DataError
    from vrm_pyro.formats import iter_rows
    from vrm_pyro.scoring import encoder_for

    ckpt = load_checkpoint(checkpoint_dir, device=device)
    prompts: list[str] = []
    for line, row in iter_rows(input_path):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataError("expected an object with a non-empty string", source=input_path, line=line, field="prompt")
        prompts.append(row["prompt"])
    encoder = encoder_for(ckpt, cache_dir=cache_dir, device=device)
    summary = posterior_weights(ckpt.reward_model, encoder.encode(prompts), level=level)
    table = weights_table(prompts, summary)
    if clusters:
        table.insert(1, "cluster", cluster_prompts(summary["mean"], clusters)[0])
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    if plot:
        from vrm_pyro.plots import weights_heatmap

        weights_heatmap(summary["mean"], prompts, lower=summary["lower"], upper=summary["upper"], path=plot)
    return table


# ----------------------------------------------------------------------------- giving objectives meaning

_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)
_REFUSAL = re.compile(r"\b(?:I'?m sorry|I am sorry|I apologi[sz]e|I can(?:'|no)t|I won'?t|I'?m not able|I am not able|"
                      r"I'?m unable|as an AI|I do not feel comfortable|I don'?t feel comfortable)\b", re.IGNORECASE)


def response_properties(texts: list[str]):
    """Simple measurable properties of responses: ``words``, ``list_items``, ``code_blocks``, ``refusal`` (0/1)."""
    import pandas as pd

    return pd.DataFrame({
        "words": [len(t.split()) for t in texts],
        "list_items": [len(_LIST_ITEM.findall(t)) for t in texts],
        "code_blocks": [t.count("```") // 2 for t in texts],
        "refusal": [int(bool(_REFUSAL.search(t))) for t in texts],
    })


@torch.no_grad()
def objective_report(reward_model, prompts: list[str], prompt_emb: torch.Tensor, responses: list[str],
                     response_emb: torch.Tensor, *, top: int = 5, num_samples: int = 32) -> dict:
    """For each objective ``k``: the prompts that weight it most, the responses whose decoded score
    ``E_q[u_k(z, y)]`` is highest and lowest, and the Spearman correlation of that score with
    :func:`response_properties` (NaN for a property constant over the rows). ``prompts[i]`` pairs with
    ``responses[i]``."""
    from vrm_pyro.evaluate import spearman

    if not reward_model.has_latents:
        raise VRMError("this checkpoint is a Bradley–Terry baseline: it has no objectives to describe")
    out = reward_model.reward(prompt_emb, response_emb, num_samples=num_samples)
    weights, scores = out.weights.numpy(), out.scores.numpy()
    props = response_properties(responses)
    unique_prompts = {}
    for i, p in enumerate(prompts):
        unique_prompts.setdefault(p, i)
    p_idx = np.array(list(unique_prompts.values()))
    report = {}
    for k in range(weights.shape[1]):
        by_w = p_idx[np.argsort(-weights[p_idx, k], kind="stable")][:top]
        by_s = np.argsort(-scores[:, k], kind="stable")
        report[f"objective {k}"] = {
            "mean_weight": float(weights[p_idx, k].mean()),
            "top_prompts": [{"prompt": prompts[i], "weight": float(weights[i, k])} for i in by_w],
            "highest_scored": [{"prompt": prompts[i], "response": responses[i], "score": float(scores[i, k])}
                               for i in by_s[:top]],
            "lowest_scored": [{"prompt": prompts[i], "response": responses[i], "score": float(scores[i, k])}
                              for i in by_s[::-1][:top]],
            "score_correlation": {c: spearman(scores[:, k], props[c]) for c in props.columns},
        }
    return report


def correlation_text(value: float) -> str:
    """``+0.37``, or ``n/a`` where the correlation is undefined (a property constant over the rows: no list in any
    response)."""
    return "n/a" if value is None or value != value else f"{value:+.2f}"


def objective_report_markdown(report: dict, *, chars: int = 160) -> str:
    def short(t):
        t = " ".join(t.split())
        return t if len(t) <= chars else t[:chars - 1] + "…"

    md = ["# What the objectives respond to", "",
          "Spearman correlation of each objective's decoded score with response properties:", "",
          "| objective | mean weight | " + " | ".join(next(iter(report.values()))["score_correlation"]) + " |",
          "|---|---|" + "---|" * len(next(iter(report.values()))["score_correlation"])]
    for name, r in report.items():
        cells = " | ".join(map(correlation_text, r["score_correlation"].values()))
        md.append(f"| {name} | {r['mean_weight']:.3f} | {cells} |")
    for name, r in report.items():
        md += ["", f"## {name}", "", "Prompts that weight it most:", ""]
        md += [f"- ({x['weight']:.3f}) {short(x['prompt'])}" for x in r["top_prompts"]]
        md += ["", "Highest-scored responses:", ""] + [f"- ({x['score']:+.2f}) {short(x['response'])}" for x in r["highest_scored"]]
        md += ["", "Lowest-scored responses:", ""] + [f"- ({x['score']:+.2f}) {short(x['response'])}" for x in r["lowest_scored"]]
    return "\n".join(md) + "\n"


@torch.no_grad()
def compare_prompts(reward_model, emb_a: torch.Tensor, emb_b: torch.Tensor, *, level: float = 0.9,
                    num_samples: int = 4000, seed: int = 0):
    """Compare the weight posteriors of two prompts (embeddings ``(E,)``): per objective the two
    posterior means, the mean and credible interval of ``w_a,k - w_b,k`` and ``P(w_a,k > w_b,k)``
    (independent draws from ``q(w|x_a)`` and ``q(w|x_b)``). A DataFrame, one row per objective."""
    import pandas as pd

    if not reward_model.has_latents:
        raise VRMError("this checkpoint is a Bradley–Terry baseline: it has no objective weights to compare")
    guide = reward_model.guide.weight_guide
    x = torch.stack([emb_a, emb_b]).to(reward_model.device)
    with fixed_rng(seed, x.device):
        w = guide(x).sample((num_samples,)).cpu()  # (S, 2, K)
    d = w[:, 0] - w[:, 1]
    lo, hi = torch.quantile(d, torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2]), dim=0)
    return pd.DataFrame({"objective": range(w.shape[-1]), "mean_a": w[:, 0].mean(0).numpy(),
                         "mean_b": w[:, 1].mean(0).numpy(), "diff_mean": d.mean(0).numpy(),
                         "diff_lo": lo.numpy(), "diff_hi": hi.numpy(), "p_a_greater": (d > 0).float().mean(0).numpy()})


def cluster_prompts(weights: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means (:func:`scipy.cluster.vq.kmeans2`, k-means++ initialisation) of prompts by posterior mean
    weights ``(N, K)``. Returns ``(labels (N,), centroids (k, K))``; clusters are numbered by size, largest
    first."""
    from scipy.cluster.vq import kmeans2

    x = np.asarray(weights, np.float64)
    if not 1 <= k <= len(x):
        raise VRMError(f"cannot make {k} clusters of {len(x)} prompts")
    centers, labels = kmeans2(x, k, minit="++", seed=seed, missing="raise") if k > 1 else (x.mean(0, keepdims=True),
                                                                                          np.zeros(len(x), int))
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return remap[labels], centers[order]
