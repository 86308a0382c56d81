"""VRM vs the Bradley–Terry baseline on the shared preference data (not a timed test).

Same frozen encoder (MiniLM, cached embeddings), same prompt-level splits (AlpacaEval split by
instruction), same optimiser budget, several seeds (seed s sets both the split and the
training seed). Reports held-out pairwise accuracy, NLL, ECE, the Spearman correlation of
reward with response length, training time, and VRM/baseline ratios, as Markdown + JSON.

    python benchmarks/compare_bt.py --seeds 0 1 2 --output benchmarks/results

The first run embeds ~20k texts (about 15 minutes on 2 CPU cores); later runs read the cache
in benchmarks/.cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from vrm_pyro import DataConfig, EncoderConfig, ModelConfig, TrainConfig  # noqa: E402
from vrm_pyro.data import load_from_config  # noqa: E402
from vrm_pyro.encoders import TextEncoder, embed_pairs  # noqa: E402
from vrm_pyro.evaluate import evaluate_pairs  # noqa: E402
from vrm_pyro.registry import build_reward_model  # noqa: E402
from vrm_pyro.train import fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    "hh_rlhf_harmless": DataConfig(data=str(SHARED / "hh_rlhf_harmless.jsonl.gz"), format="hh", skip_invalid=True),
    "alpaca_eval": DataConfig(data=str(SHARED / "alpaca_eval_gpt4_turbo_pairs.jsonl.gz"), format="alpaca_eval",
                              skip_invalid=True),
}
#: the contenders: name -> ModelConfig. Only the head differs; data, encoder, trainer, evaluation are shared.
MODELS = {
    "bt_linear": ModelConfig(model="bt"),
    "bt_mlp": ModelConfig(model="bt", bt_hidden_dim=256),
    "vrm": ModelConfig(),
    "vrm_no_path": ModelConfig(deterministic_path=False),
}
BASELINE = "bt_linear"


def length_spearman(rm, emb, pairs) -> float:
    """Spearman correlation between reward and response length (characters) over test responses."""
    out_a = rm.reward(emb.prompt, emb.response_a).reward.numpy()
    out_b = rm.reward(emb.prompt, emb.response_b).reward.numpy()
    rewards = np.concatenate([out_a, out_b])
    lengths = np.array([len(r) for r in pairs.response_a + pairs.response_b])
    return float(pd.Series(rewards).rank().corr(pd.Series(lengths).rank()))


def run(datasets, models, seeds, train_cfg: TrainConfig, cache_dir: str):
    encoder = TextEncoder(EncoderConfig(cache_dir=cache_dir))
    rows = []
    for dname in datasets:
        pairs = load_from_config(DATASETS[dname])
        for seed in seeds:
            splits = pairs.split_by_prompt(0.1, 0.2, seed=seed)
            emb = {k: embed_pairs(v, encoder, progress=True) for k, v in splits.items()}
            for mname in models:
                cfg = train_cfg.replace(seed=seed)
                rm = build_reward_model(MODELS[mname], emb_dim=encoder.dim, seed=seed)
                t0 = time.perf_counter()
                res = fit(rm, emb["train"], emb["validation"], cfg)
                seconds = time.perf_counter() - t0
                test = evaluate_pairs(rm, emb["test"], num_samples=cfg.eval_samples, seed=seed)
                row = {"dataset": dname, "model": mname, "seed": seed, "n_train": len(emb["train"]),
                       "n_test": len(emb["test"]), "epochs": len(res.history), "best_epoch": res.best_epoch,
                       "train_seconds": seconds, "steps": res.steps, "val_accuracy": res.best_val.get("accuracy"),
                       "length_spearman": length_spearman(rm, emb["test"], splits["test"]),
                       **{f"test_{k}": v for k, v in test.items() if k != "n"},
                       **{k: v for k, v in res.history[res.best_epoch].items() if k.startswith("kl_")}}
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, train_cfg: TrainConfig, command: str) -> str:
    def ms(x):
        return f"{x.mean():.3f} ± {x.std(ddof=1) if len(x) > 1 else 0:.3f}"

    lines = ["# VRM vs Bradley–Terry on the shared data", "",
             f"Command: `{command}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
             f"encoder all-MiniLM-L6-v2 (frozen, mean-pooled, max 256 tokens); seeds {sorted(df.seed.unique().tolist())} "
             "(seed = split seed = training seed); splits by prompt 70/10/20.  ",
             f"Budget (all models): up to {train_cfg.epochs} epochs, batch {train_cfg.batch_size}, AdamW lr {train_cfg.lr}, "
             f"early stopping on validation NLL (patience {train_cfg.patience}); VRM KL weights "
             f"beta_w={train_cfg.kl_weight_w}, beta_z={train_cfg.kl_weight_z}, {train_cfg.elbo} ELBO.", ""]
    for dname, d in df.groupby("dataset", sort=False):
        base = d[d.model == BASELINE].set_index("seed")
        lines += [f"## {dname} (train {int(d.n_train.mean())} / test {int(d.n_test.mean())} pairs)", "",
                  "| model | test accuracy | test NLL | ECE | length Spearman | train s | acc / baseline |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for mname, m in d.groupby("model", sort=False):
            m = m.set_index("seed")
            ratio = (m.test_accuracy / base.test_accuracy).dropna()
            lines.append(f"| {mname} | {ms(m.test_accuracy)} | {ms(m.test_nll)} | {ms(m.test_ece)} | "
                         f"{ms(m.length_spearman)} | {m.train_seconds.mean():.1f} | {ratio.mean():.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    train_cfg = TrainConfig(epochs=args.epochs, progress=False, device=args.device)
    df = run(args.datasets, args.models, args.seeds, train_cfg, args.cache_dir)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/compare_bt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "compare_bt.md").write_text(markdown(df, train_cfg, command.strip()))
    df.to_json(out / "compare_bt.json", orient="records", indent=1)
    print(markdown(df, train_cfg, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
