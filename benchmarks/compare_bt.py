"""VRM vs the Bradley–Terry baseline on the shared preference data (not a timed test).

Same frozen encoder (MiniLM, cached embeddings), same prompt-level splits (AlpacaEval split by
instruction), same optimiser budget, several seeds (seed s sets both the split and the
training seed). Reports held-out pairwise accuracy, NLL, ECE, length bias (Spearman of reward
with length in words, accuracy where the shorter answer won), best-of-N gold at the largest n on
held-out AlpacaEval instructions (beside random, longest and oracle picks), the synthetic
spurious-cue accuracy in and out of distribution at a strong cue (agreement 0.9), training time,
and whether each target of the project's claim is met, as Markdown + JSON.

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

import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from vrm_pyro import DataConfig, EncoderConfig, ModelConfig, TrainConfig  # noqa: E402
from vrm_pyro.data import load_from_config  # noqa: E402
from vrm_pyro.encoders import TextEncoder, embed_pairs  # noqa: E402
from vrm_pyro.evaluate import evaluate_pairs  # noqa: E402
from vrm_pyro.hacking import (  # noqa: E402
    best_of_n_curve,
    best_of_n_from_alpaca_eval,
    length_bias,
    score_best_of_n,
    spurious_cue_experiment,
)
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


#: best-of-N: largest n (every held-out instruction has at least this many distinct outputs)
BON_N = 16
#: spurious cue: train-time agreement of the cue with the label ("strong"), and its strength
SPURIOUS_AGREEMENT, SPURIOUS_NUISANCE = 0.9, 3.0


def run(datasets, models, seeds, train_cfg: TrainConfig, cache_dir: str, spurious: bool = True):
    encoder = TextEncoder(EncoderConfig(cache_dir=cache_dir))
    rows = []
    for dname in datasets:
        pairs = load_from_config(DATASETS[dname])
        for seed in seeds:
            splits = pairs.split_by_prompt(0.1, 0.2, seed=seed)
            emb = {k: embed_pairs(v, encoder, progress=True) for k, v in splits.items()}
            bon = best_of_n_from_alpaca_eval(splits["test"], min_candidates=BON_N) if dname == "alpaca_eval" else None
            for mname in models:
                cfg = train_cfg.replace(seed=seed)
                rm = build_reward_model(MODELS[mname], emb_dim=encoder.dim, seed=seed)
                t0 = time.perf_counter()
                res = fit(rm, emb["train"], emb["validation"], cfg)
                seconds = time.perf_counter() - t0
                test = evaluate_pairs(rm, emb["test"], num_samples=cfg.eval_samples, seed=seed)
                lb = length_bias(rm, emb["test"], splits["test"], num_samples=cfg.eval_samples)
                row = {"dataset": dname, "model": mname, "seed": seed, "n_train": len(emb["train"]),
                       "n_test": len(emb["test"]), "epochs": len(res.history), "best_epoch": res.best_epoch,
                       "train_seconds": seconds, "steps": res.steps, "val_accuracy": res.best_val.get("accuracy"),
                       "length_spearman": lb["length_spearman"], "acc_shorter_preferred": lb["acc_shorter_preferred"],
                       **{f"test_{k}": v for k, v in test.items() if k != "n"},
                       **{k: v for k, v in res.history[res.best_epoch].items() if k.startswith("kl_")}}
                if bon is not None:
                    curve = best_of_n_curve(bon, {mname: score_best_of_n(rm, encoder, bon)}, ns=[1, BON_N])
                    at_n = curve[curve.n == BON_N].set_index("method").gold
                    row.update(bon_prompts=len(bon), bon_gold=at_n[mname], bon_longest=at_n["longest"],
                               bon_random=at_n["random"], bon_oracle=at_n["oracle"])
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
    if spurious:
        for seed in seeds:
            df = spurious_cue_experiment({m: MODELS[m] for m in models}, train_cfg.replace(seed=seed, lr=3e-3),
                                         agreements=(SPURIOUS_AGREEMENT,), nuisance=SPURIOUS_NUISANCE, seed=seed)
            for r in df.to_dict(orient="records"):
                row = {"dataset": "synthetic_spurious", "model": r["model"], "seed": seed, "spurious_acc_in": r["acc_in"],
                       "spurious_acc_ood": r["acc_ood"], "spurious_drop": r["drop"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return pd.DataFrame(rows)


def targets(df: pd.DataFrame, model: str = "vrm") -> list[str]:
    """The project's claim as four measurable targets, each met or missed (means over seeds)."""
    out = []

    def mean(dataset, name, col):
        d = df[(df.dataset == dataset) & (df.model == name)]
        return d[col].mean() if len(d) and col in d else float("nan")

    for dname in [d for d in DATASETS if d in set(df.dataset)]:
        acc_v, acc_b = mean(dname, model, "test_accuracy"), mean(dname, BASELINE, "test_accuracy")
        len_v, len_b = mean(dname, model, "length_spearman"), mean(dname, BASELINE, "length_spearman")
        out.append(f"| {dname}: accuracy >= baseline | {acc_v:.3f} vs {acc_b:.3f} | {'met' if acc_v >= acc_b else 'missed'} |")
        out.append(f"| {dname}: abs(length corr) < baseline's | {len_v:+.3f} vs {len_b:+.3f} | "
                   f"{'met' if abs(len_v) < abs(len_b) else 'missed'} |")
    if "bon_gold" in df:
        g_v, g_b = mean("alpaca_eval", model, "bon_gold"), mean("alpaca_eval", BASELINE, "bon_gold")
        g_l = mean("alpaca_eval", model, "bon_longest")
        out.append(f"| best-of-{BON_N} gold > baseline and > longest | {g_v:.4f} vs {g_b:.4f} / {g_l:.4f} | "
                   f"{'met' if g_v > g_b and g_v > g_l else 'missed'} |")
    if "spurious_drop" in df:
        d_v, d_b = mean("synthetic_spurious", model, "spurious_drop"), mean("synthetic_spurious", BASELINE, "spurious_drop")
        out.append(f"| spurious cue (agreement {SPURIOUS_AGREEMENT}): OOD drop < baseline's | {d_v:.3f} vs {d_b:.3f} | "
                   f"{'met' if d_v < d_b else 'missed'} |")
    return out


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
        if dname == "synthetic_spurious":
            lines += [f"## Spurious cue (synthetic, agreement {SPURIOUS_AGREEMENT} in training, 0.5 at test, "
                      f"strength {SPURIOUS_NUISANCE})", "",
                      "| model | accuracy in distribution | accuracy OOD | drop |", "| --- | --- | --- | --- |"]
            for mname, m in d.groupby("model", sort=False):
                lines.append(f"| {mname} | {ms(m.spurious_acc_in)} | {ms(m.spurious_acc_ood)} | {ms(m.spurious_drop)} |")
            lines.append("")
            continue
        base = d[d.model == BASELINE].set_index("seed")
        bon = "bon_gold" in d and d.bon_gold.notna().any()
        lines += [f"## {dname} (train {int(d.n_train.mean())} / test {int(d.n_test.mean())} pairs)", "",
                  "| model | test accuracy | test NLL | ECE | length Spearman | acc, shorter preferred | "
                  + (f"best-of-{BON_N} gold | " if bon else "") + "train s | acc / baseline |",
                  "| --- | --- | --- | --- | --- | --- | " + ("--- | " if bon else "") + "--- | --- |"]
        for mname, m in d.groupby("model", sort=False):
            m = m.set_index("seed")
            ratio = (m.test_accuracy / base.test_accuracy).dropna()
            lines.append(f"| {mname} | {ms(m.test_accuracy)} | {ms(m.test_nll)} | {ms(m.test_ece)} | "
                         f"{ms(m.length_spearman)} | {ms(m.acc_shorter_preferred)} | "
                         + (f"{ms(m.bon_gold)} | " if bon else "") + f"{m.train_seconds.mean():.1f} | {ratio.mean():.3f} |")
        if bon:
            lines += ["", f"Best-of-{BON_N} reference picks on the same {int(d.bon_prompts.mean())} held-out instructions "
                      f"(mean over seeds): random {d.bon_random.mean():.4f}, longest {d.bon_longest.mean():.4f}, "
                      f"oracle {d.bon_oracle.mean():.4f}. Gold = the GPT-4-turbo judge's P(output beats the reference)."]
        lines.append("")
    lines += ["## Targets (VRM vs bt_linear, means over seeds)", "", "| target | measured | |", "| --- | --- | --- |",
              *targets(df), ""]
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
    ap.add_argument("--no-spurious", action="store_true", help="Skip the synthetic spurious-cue runs.")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    train_cfg = TrainConfig(epochs=args.epochs, progress=False, device=args.device)
    df = run(args.datasets, args.models, args.seeds, train_cfg, args.cache_dir, spurious=not args.no_spurious)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/compare_bt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "compare_bt.md").write_text(markdown(df, train_cfg, command.strip()))
    df.to_json(out / "compare_bt.json", orient="records", indent=1)
    print(markdown(df, train_cfg, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
