"""Would a language model's fluency, beside the linear order model, take sentence shuffles under 2%? A probe.

Since round 19 the default's base is order-blind: on a sentence shuffle that keeps the answer's bag of sentences
(most of them), the reward errs exactly where its order channel does, and that channel, the linear
:class:`vrm_pyro.order_model.SentenceOrderModel`, ranks about 7% of the held-out shuffles at or above their
original. The only order signal measured under 2% was a small causal LM's mean token log-probability at 256
response tokens (round 7, ``likelihood_probe_r256.json``, on the stress set before round 11 made shuffles keep the
layout). This probe measures it again on today's stress set, alone and summed with the linear model:

- ``linear``: the default's order model (``vrm_pyro.config.TRAIN_RECIPE``: sentence words, L2 1e-4, fitted on
  every answer of the training instructions, as ``+oswa`` fits it);
- ``given_prompt`` and ``alone``: :class:`vrm_pyro.likelihood.LikelihoodScorer`'s statistics (SmolLM2-135M-Instruct,
  the bundled Q4_1 file, bfloat16, the answer cut to its first 192 and last 64 tokens);
- ``linear + λ·LM``: λ chosen per seed on validation reorderings (``--val-answers`` validation answers, one
  reordering each, made as the fit makes them), from :data:`WEIGHTS`.

Each is the share of rows whose shuffle scores at or above its original (ties count as wins, as ``vrm stress``
counts them): ``val_*`` on the validation reorderings, ``test_*`` on the held-out stress set's sentence shuffles
(one per test instruction) and ``bag_*`` on those of them that keep the answer's bag, where the reward is the order
channel's alone. Fold 0, seeds 0 1 2; LM passes are cached (``benchmarks/.cache``); about 0.75 s per text on 2
cores, some 13 minutes for the three seeds.

    python benchmarks/order_lm_probe.py --seeds 0 1 2

writes ``results/coherence/order_lm.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.covariates import bag_sentences  # noqa: E402
from vrm_pyro.experiment import fit_order_model  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.likelihood import LIKELIHOOD_STATISTICS, LikelihoodScorer, bundled_smollm2  # noqa: E402

#: the LM statistics read as order signals
LM_STATISTICS = ("given_prompt", "alone")
#: the weights of ``linear + λ·LM`` tried on validation (the LM's per-token gap is some 0.05-0.3 nats, the linear
#: model's a few units)
WEIGHTS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def wins(delta: torch.Tensor) -> float:
    """The share of rows with ``original - shuffle <= 0``."""
    return float((delta <= 0).float().mean())


def run(bench: cb.Bench, scorer: LikelihoodScorer, seed: int, fold: int, val_answers: int) -> dict:
    idx, (train_instructions, _, test) = cb.split_rows(bench, seed, fold)
    train = bench.order_training(idx["train"], train_instructions, all_answers=True)
    fit_order_model(bench.encoder, {"train": train}, seed=0, representation="order_score", sentence_words=True,
                    l2=1e-4)  # the default's order model
    linear = bench.encoder.order_model
    shuffle, rng = JUNK_KINDS["shuffled_sentences"], np.random.default_rng([seed, 11])  # as order_model_probe.py
    val = bench.alpaca.subset(idx["validation"])
    texts = list(dict.fromkeys((p, r) for p, a, b in zip(val.prompt, val.response_a, val.response_b) for r in (a, b)))
    texts = [texts[i] for i in sorted(rng.choice(len(texts), min(val_answers, len(texts)), replace=False))]
    val_rows = [(p, r, s) for p, r in texts for s in [shuffle(p, r, "", rng)] if s != r]
    sp, sr, sj, _ = bench.stress_junk(["shuffled_sentences"])
    test_rows = [(p, r, j) for p, r, j in zip(sp, sr, sj) if p in test]
    keeps_bag = torch.tensor([bag_sentences(r) == bag_sentences(j) for _, r, j in test_rows])
    row = {"seed": seed, "fold": fold, "val_n": len(val_rows), "test_n": len(test_rows),
           "bag_n": int(keeps_bag.sum())}
    start = time.perf_counter()
    deltas = {}
    for name, rows in (("val", val_rows), ("test", test_rows)):
        prompts, real, junk = (list(c) for c in zip(*rows))
        lm = scorer.score(prompts + prompts, real + junk, progress=True, desc=f"{name} seed {seed}")
        d_lm = lm[:len(rows)] - lm[len(rows):]
        deltas[name] = {"linear": linear.score(prompts, real) - linear.score(prompts, junk),
                        **{s: d_lm[:, LIKELIHOOD_STATISTICS.index(s)] for s in LM_STATISTICS}}
    row["lm_seconds"] = round(time.perf_counter() - start)
    for name in ("val", "test"):
        for signal, d in deltas[name].items():
            row[f"{name}_{signal}"] = wins(d)
    for signal in ("linear", *LM_STATISTICS):
        row[f"bag_{signal}"] = wins(deltas["test"][signal][keeps_bag])
    for s in LM_STATISTICS:
        val_err = {w: wins(deltas["val"]["linear"] + w * deltas["val"][s]) for w in WEIGHTS}
        best = min(WEIGHTS, key=lambda w: (val_err[w], w))  # the smallest weight among equals
        summed = deltas["test"]["linear"] + best * deltas["test"][s]
        row.update({f"weight_{s}": best, f"val_linear+{s}": val_err[best], f"test_linear+{s}": wins(summed),
                    f"bag_linear+{s}": wins(summed[keeps_bag])})
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--val-answers", type=int, default=150, help="validation answers per seed, one reordering each")
    ap.add_argument("--response-tokens", type=int, default=256, help="the LM's response window")
    ap.add_argument("--out", default="order_lm", help="results/coherence/<out>.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    scorer = LikelihoodScorer(bundled_smollm2(), dtype="bfloat16", max_response_tokens=args.response_tokens,
                              cache_dir=str(cb.CACHE_DIR))
    rows = [run(bench, scorer, seed, args.fold, args.val_answers) for seed in args.seeds]
    keys = [k for k in rows[0] if k.startswith(("val_", "test_", "bag_", "weight_", "lm_seconds"))]
    cb.write_probe(args.out, rows, {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}, argv,
                   script="order_lm_probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
