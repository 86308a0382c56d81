"""Posterior objective weights per prompt: means, credible intervals, tables and heatmaps."""

from __future__ import annotations

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
                 cache_dir: str | None = None, device: str = "cpu", level: float = 0.9):
    """Posterior weights of the prompts in a JSONL file -> CSV/Parquet table (+ heatmap PNG)."""
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.data import DataError, iter_rows
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
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    if plot:
        from vrm_pyro.plots import weights_heatmap

        weights_heatmap(summary["mean"], prompts, path=plot)
    return table
