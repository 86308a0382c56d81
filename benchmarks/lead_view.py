"""A probe, not a library feature: does an encoder view of the answer's first sentence help against junk?

Three columns are appended to a contender's representation: ``cos(x̂, f̂)``, ``cos(f̂, ŷ)`` and
``cos(x̂, f̂) − cos(x̂, ŷ)``, where ``f`` is the first sentence encoded alone, ``x`` the prompt and ``y`` the
response (a real answer opens on the question; a shuffled one opens anywhere). They form one more block of the
path's block prior. Fitted as the ``coherence`` stage fits (AlpacaEval, 10 pairs per instruction, fold 0), then
validation NLL, test accuracy and junk rates per kind on held-out instructions.

    python benchmarks/lead_view.py --encoder .gpu/minilm --contender vrm_part4+nuis+ord+disc+rrm6+glr

writes ``results/coherence/lead_view.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro import build_reward_model, fit  # noqa: E402
from vrm_pyro.covariates import sentences  # noqa: E402
from vrm_pyro.data import PairEmbeddings  # noqa: E402
from vrm_pyro.evaluate import evaluate_pairs  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.representations import feature_groups  # noqa: E402


def first_sentence(text: str) -> str:
    parts = sentences(text)
    return parts[0] if parts else text


def lead_columns(encoder, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """``(N, 3)``: cos(prompt, first sentence), cos(first sentence, response), their lead over cos(prompt, response)."""
    x = F.normalize(encoder.encode(list(prompts)), dim=-1)
    y = F.normalize(encoder.encode(list(responses)), dim=-1)
    f = F.normalize(encoder.encode([first_sentence(r) for r in responses], desc="first sentences"), dim=-1)
    cxf, cfy, cxy = (x * f).sum(-1), (f * y).sum(-1), (x * y).sum(-1)
    return torch.stack([cxf, cfy, cxf - cxy], -1)


def with_lead(encoder, data: PairEmbeddings, texts) -> PairEmbeddings:
    la, lb = (lead_columns(encoder, texts.prompt, r) for r in (texts.response_a, texts.response_b))
    return data.replace(response_a=torch.cat([data.response_a, la], -1), response_b=torch.cat([data.response_b, lb], -1))


def run(bench: cb.Bench, name: str, seed: int) -> dict:
    c = cb.CONTENDERS[name]
    cfg = c.model_config()
    enc = bench.encoder
    idx, (_, _, test_instructions) = cb.split_rows(bench, seed, 0)
    full = bench.pairs(bench.alpaca, "alpaca", c.representation, c.model.get("nuisance", ""))
    train_texts = bench.alpaca.subset(idx["train"])
    aug_texts = bench.augmentation(train_texts, c)
    n = len(idx["train"])
    augmented = bench.augmented(full.subset(idx["train"]), train_texts, c)
    train = with_lead(enc, full.subset(idx["train"]), train_texts).concat(
        with_lead(enc, augmented.subset(list(range(n, len(augmented)))), aug_texts))
    val = with_lead(enc, full.subset(idx["validation"]), bench.alpaca.subset(idx["validation"]))
    test = with_lead(enc, full.subset(idx["test"]), bench.alpaca.subset(idx["test"]))
    # the contender's config with the lead block added to the block prior (built per dimension, then set)
    rm = build_reward_model(cfg.replace(path_prior="dimension"), emb_dim=train.dim, response_dim=train.response_dim,
                            seed=seed)
    groups = feature_groups(c.representation, train.dim) + (3,)
    std = torch.cat([torch.full((g,), cfg.path_prior_scale / math.sqrt(len(groups) * g)) for g in groups])
    rm.model.path.prior_std = std[:, None]
    res = fit(rm, train, val, c.train_config(seed, len(train)))
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    keep = [i for i, q in enumerate(sp) if q in test_instructions]
    real_p, real_h, _ = bench.texts("stress:real", bench.stress_prompts, bench.stress_real, c.representation, "")
    junk_p, junk_h, _ = bench.texts("stress:junk", sp, sj, c.representation, "")
    real_h = torch.cat([real_h, lead_columns(enc, bench.stress_prompts, bench.stress_real)], -1)
    junk_h = torch.cat([junk_h[keep], lead_columns(enc, [sp[i] for i in keep], [sj[i] for i in keep])], -1)
    real = dict(zip(bench.stress_prompts, rm.reward(real_p, real_h).reward.numpy()))
    junk = rm.reward(junk_p[keep], junk_h).reward.numpy()
    wins = pd.DataFrame({"kind": [sk[i] for i in keep], "win": junk >= np.array([real[sp[i]] for i in keep])})
    row = {"contender": name + "+lead", "seed": seed, "val_nll": res.best_val["nll"],
           "test_accuracy": evaluate_pairs(rm, test, num_samples=32, seed=seed)["accuracy"]}
    row.update({f"junk_{k}": float(v) for k, v in wins.groupby("kind").win.mean().items()})
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--contender", required=True, choices=[k for k, c in cb.CONTENDERS.items()
                                                           if c.model.get("path_prior") == "part"
                                                           and c.model.get("model", "vrm") == "vrm"],
                    metavar="CONTENDER", help="a VRM contender with the block prior (compare_bt.py list names them)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args(argv)
    bench = cb.Bench(encoder=args.encoder, pairs_per_instruction=10)
    rows = [run(bench, args.contender, seed) for seed in args.seeds]
    df = pd.DataFrame(rows)
    junk = [c for c in df.columns if c.startswith("junk_")]
    df["junk_mean"] = df[junk].mean(1)
    mean = df.drop(columns=["contender", "seed"]).mean().round(4).to_dict()
    cb.write_probe("lead_view", rows, mean, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
