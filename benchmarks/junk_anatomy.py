"""Why junk outranks a real answer: the reward gap split by block of the representation (not a timed test).

For each contender and seed (AlpacaEval, 10 pairs per instruction, fold 0, the ``coherence`` stage's fits
refitted here), every junk answer made from a held-out instruction's best dev answer gets its reward gap
``r(junk) - r(real)`` split into what each block of ``h`` adds through the path's posterior mean,
``Σ_{j in block} (h_junk - h_real)_j (θ̄ E[w])_j``, and the latent route ``E[w] · (E g(z_junk) - E g(z_real))``.
Also: the path's weights on the text statistics (logits per sd of a standardised statistic), how often a
sentence-shuffled answer wins by the real answer's number of sentences, and how often the ``discourse``
statistics fire on real answers and on their sentence-shuffled versions (no model).

    python benchmarks/junk_anatomy.py --encoder .gpu/minilm \
        --contenders vrm_prior2+nuis+ord+rrm3+glr vrm_part4+nuis+ord+disc+rrm6+glr

writes ``results/coherence/anatomy.json`` and ``anatomy.md`` (``--out`` names them; ``--likelihood-model`` for
contenders with a language model's part, ``--likelihood-response-tokens`` for its window). Only the held-out
instructions' stress rows are embedded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro import build_reward_model, fit  # noqa: E402
from vrm_pyro.covariates import (  # noqa: E402
    DISCOURSE_STATISTICS,
    discourse_statistics,
    sentences,
)
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.likelihood import LIKELIHOOD_STATISTICS  # noqa: E402
from vrm_pyro.representations import TEXT_PARTS, feature_groups, parse_representation  # noqa: E402

OUT = cb.RESULTS / "coherence"
STATISTIC_NAMES = {**{part: columns for part, (_, columns) in TEXT_PARTS.items()},
                   "likelihood": LIKELIHOOD_STATISTICS, "likelihood_contrast": ("pmi", "end"),
                   "likelihood_gate": ("pmi_below_zero", "end"),
                   "likelihood_fluency": ("given_prompt", "pmi", "end"),
                   "likelihood_order": ("order_gain_given_prompt", "order_gain_alone"), "order_score": ("order_score",)}


def block_names(spec: str) -> list[str]:
    """One name per entry of :func:`feature_groups`."""
    out = []
    for part in parse_representation(spec):
        out += ["product", "abs_difference", "cosine"] if part == "interaction" else [part]
    return out


def anatomy(bench: cb.Bench, name: str, seed: int) -> tuple[list[dict], dict, list[dict]]:
    c = cb.CONTENDERS[name]
    if c.model.get("model", "vrm") != "vrm" or c.model.get("path", "bayesian") != "bayesian":
        raise SystemExit(f"junk_anatomy.py: {name} is not a VRM with a Bayesian path (what the anatomy splits)")
    idx, (train_instructions, _, test_instructions) = cb.split_rows(bench, seed, 0)
    bench.use_split_order_model(c, seed, 0, idx["train"], train_instructions)
    full = bench.pairs(bench.alpaca, "alpaca", c.representation, c.model.get("nuisance", ""))
    train, val = (full.subset(idx[k]) for k in ("train", "validation"))
    train = bench.augmented(train, bench.alpaca.subset(idx["train"]), c)
    rm = build_reward_model(c.model_config(), emb_dim=train.dim, response_dim=train.response_dim, seed=seed,
                            representation=c.representation)
    fit(rm, train, val, c.train_config(seed, len(train)))
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    keep = [i for i, q in enumerate(sp) if q in test_instructions]
    mine = [i for i, q in enumerate(bench.stress_prompts) if q in test_instructions]
    # only the test instructions' rows are embedded (as compare_bt.junk_wins: a costly view need not see the rest)
    real_p, real_h, _ = bench.texts(f"stress:real:{hash(tuple(mine))}", [bench.stress_prompts[i] for i in mine],
                                    [bench.stress_real[i] for i in mine], c.representation, "")
    junk_p, junk_h, _ = bench.texts(f"stress:junk:{hash(tuple(keep))}", [sp[i] for i in keep], [sj[i] for i in keep],
                                    c.representation, "")
    at = {bench.stress_prompts[i]: j for j, i in enumerate(mine)}
    ri = [at[sp[i]] for i in keep]
    with torch.no_grad():
        prompts = real_p[ri]
        w_mean, _ = rm.guide.weight_guide.moments(prompts, num_samples=32)
        theta, _ = rm.model.path.weight_moments(rm.guide.posterior(rm.model.path.site))  # (F, K), |theta| if monotone
        per_feature = theta @ w_mean.T  # (F, B): the path's weight on each feature, per prompt
        h_real, h_junk = rm.transform.features(real_h[ri]), rm.transform.features(junk_h)
        contrib = ((h_junk - h_real) * per_feature.T).numpy()
        routes_real, routes_junk = rm.route_rewards(prompts, real_h[ri]), rm.route_rewards(junk_p, junk_h)
        gap = (rm.reward(junk_p, junk_h).reward - rm.reward(prompts, real_h[ri]).reward).numpy()
    edges = np.cumsum((0,) + feature_groups(c.representation, train.dim))
    names = block_names(c.representation)
    kinds = np.array([sk[i] for i in keep])
    rows = []
    masks = [(k, kinds == k) for k in sorted(set(kinds))]
    # the junk that won, apart: which blocks lifted it over the real answer
    masks += [(f"{k} (won)", m & (gap >= 0)) for k, m in masks if (m & (gap >= 0)).any()]
    for kind, m in masks:
        row = {"contender": name, "seed": seed, "kind": kind, "junk_wins": float((gap[m] >= 0).mean()),
               "n": int(m.sum()), "gap": float(gap[m].mean()),
               **{k: float((routes_junk[k] - routes_real[k]).numpy()[m].mean()) for k in routes_real if k != "path"}}
        row.update({f"path:{b}": float(contrib[m, s:e].sum(1).mean()) for b, s, e in zip(names, edges, edges[1:])})
        rows.append(row)
    weights = {"contender": name, "seed": seed}
    mean_weight = per_feature.mean(1).numpy()
    for b, s, e in zip(names, edges, edges[1:]):
        if b in STATISTIC_NAMES:
            weights.update({f"{b}:{n}": float(v) for n, v in zip(STATISTIC_NAMES[b], mean_weight[s:e])})
        elif b == "cosine":
            weights["cosine"] = float(mean_weight[s])
    shuffled = [j for j, i in enumerate(keep) if sk[i] == "shuffled_sentences"]
    by_length = [{"contender": name, "seed": seed, "sentences": len(sentences(sr[keep[j]])),
                  "win": bool(gap[j] >= 0)} for j in shuffled]
    return rows, weights, by_length


def discourse_firing(bench: cb.Bench) -> dict:
    sp, sr, sj, sk = bench.stress_junk(["shuffled_sentences"])
    real, junk = discourse_statistics(sp, sr), discourse_statistics(sp, sj)
    out = {f"{n}: real": float((real[:, i] > 0).mean()) for i, n in enumerate(DISCOURSE_STATISTICS)}
    out.update({f"{n}: shuffled": float((junk[:, i] > 0).mean()) for i, n in enumerate(DISCOURSE_STATISTICS)})
    out.update({"any: real": float((real > 0).any(1).mean()), "any: shuffled": float((junk > 0).any(1).mean()),
                "answers": len(sp)})
    return out


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (index as the first columns), without pandas' optional tabulate."""
    df = df.reset_index()
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [" | ".join(map(str, df.columns)), " | ".join("---" for _ in df.columns)]
    rows += [" | ".join(cell(v) for v in r) for r in df.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def render(doc: dict) -> str:
    gaps, weights = pd.DataFrame(doc["gaps"]), pd.DataFrame(doc["weights"])
    lengths = pd.DataFrame(doc["shuffled_sentences"])
    gap_table = gaps.drop(columns="seed").groupby(["contender", "kind"]).mean()
    if "n" in gaps:  # answers over all seeds
        gap_table["n"] = gaps.groupby(["contender", "kind"]).n.sum()
    weight_table = weights.drop(columns="seed").groupby("contender").mean().T
    weight_table.index.name = "feature"
    order = {"1-2": 0, "3-4": 1, "5-8": 2, "9+": 3}
    length_table = lengths.groupby(["contender", "bucket"]).win.agg(["mean", "count"]).reset_index()
    length_table = length_table.sort_values(["contender", "bucket"], key=lambda c: c.map(order) if c.name == "bucket"
                                            else c).set_index(["contender", "bucket"])
    length_table["count"] = length_table["count"].astype(int)
    firing = pd.Series(doc["discourse_firing"]).to_frame("share")
    firing.index.name = "statistic"
    return "\n".join([
        "# Junk anatomy (`benchmarks/junk_anatomy.py`)", "", f"Command: `{doc['command']}`", "",
        "Mean reward gap junk − real and its parts (the path's blocks through its posterior mean, the latent "
        "route), held-out instructions, mean over seeds:", "", markdown(gap_table), "",
        "The path's weight on each text statistic and on the cosine (logits per sd, E[w] averaged over prompts):",
        "", markdown(weight_table), "",
        "Sentence-shuffled answers at or above the real one, by the real answer's number of sentences (all "
        "seeds):", "", markdown(length_table), "",
        "How often the discourse statistics fire (share of the best dev answers, and of their sentence-shuffled "
        "versions, with a nonzero value; `answers` is their number):", "", markdown(firing), ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--contenders", nargs="+", choices=list(cb.CONTENDERS), metavar="CONTENDER",
                    help="compare_bt.py list names them")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--likelihood-model", default=None,
                    help="The LM for contenders with a likelihood part (as compare_bt.py's option).")
    ap.add_argument("--likelihood-response-tokens", type=int, default=cb.EncoderConfig.likelihood_response_tokens,
                    help="The LM's window (as compare_bt.py's option).")
    ap.add_argument("--out", default="anatomy", help="Results name under results/coherence/ (.json and .md).")
    ap.add_argument("--render", action="store_true", help="Only rewrite <out>.md from <out>.json.")
    args = ap.parse_args(argv)
    if not args.render:
        if not args.contenders:
            ap.error("--contenders is required (unless --render)")
        bench = cb.Bench(encoder=args.encoder, pairs_per_instruction=10, likelihood_model=args.likelihood_model,
                         likelihood_response_tokens=args.likelihood_response_tokens)
        gaps, weights, lengths = [], [], []
        for name in args.contenders:
            for seed in args.seeds:
                g, w, n = anatomy(bench, name, seed)
                gaps += g
                weights.append(w)
                lengths += n
        lengths = pd.DataFrame(lengths)
        lengths["bucket"] = pd.cut(lengths.sentences, [0, 2, 4, 8, 10_000], labels=["1-2", "3-4", "5-8", "9+"])
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{args.out}.json").write_text(json.dumps({
            "command": "python benchmarks/junk_anatomy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "gaps": gaps, "weights": weights, "shuffled_sentences": lengths.astype({"bucket": str}).to_dict("records"),
            "discourse_firing": discourse_firing(bench)}, indent=1))
    text = render(json.loads((OUT / f"{args.out}.json").read_text()))
    (OUT / f"{args.out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
