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
channel's alone. Fold 0, seeds 0 1 2; LM passes are cached (``benchmarks/.cache``); 149-214 s of LM passes per seed
on 2 cores (both passes of some 460 texts), 13 minutes for the three seeds.

    python benchmarks/order_lm_probe.py --seeds 0 1 2

writes ``results/coherence/order_lm.json``. ``--per-kind`` (one seed, about 14 minutes) instead scores the part
``likelihood_order_margin`` (the LM's fluency given the prompt against the answer's pieces in canonical orders,
what a reward head would read) on every junk kind of the held-out stress set and its real answers: how often that
column alone puts the junk at or above the real answer, per kind (what a positive weight on it rewards), and the
same for ``order_score``; written to ``results/coherence/order_lm_per_kind.json``. ``--posthoc CONTENDER ...``
(one seed) fits each contender as ``compare_bt.py`` does and adds ``μ · likelihood_order_margin`` to its reward
after training (the column as it is, or saturated, ``μ tanh(margin / s)`` for ``s`` in :data:`POSTHOC_SCALES`; and
in a second form, ``stripped_``: the answer's own pieces one per line against the canonical texts, in place of the
answer as written, so that both sides have the same form),
``μ`` from :data:`POSTHOC_WEIGHTS` chosen on the validation instructions' stress set (the mean junk rate over the
kinds, the smallest ``μ`` among equals): per kind, held out, the rate at every ``μ`` (an estimate of what a head that
reads the column could do, without training it); written to ``results/coherence/order_lm_posthoc.json``; ``--pool NAME ...`` pools such files (one seed each) into
``results/coherence/order_lm_posthoc_pooled.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.covariates import bag_pieces, bag_sentences  # noqa: E402
from vrm_pyro.experiment import fit_order_model  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.likelihood import (  # noqa: E402
    LIKELIHOOD_STATISTICS,
    LikelihoodScorer,
    bundled_smollm2,
    canonical_permutations,
)
from vrm_pyro.representations import response_features  # noqa: E402

#: the LM statistics read as order signals
LM_STATISTICS = ("given_prompt", "alone")
#: the weights of ``linear + λ·LM`` tried on validation (the LM's per-token gap is some 0.05-0.3 nats, the linear
#: model's a few units)
WEIGHTS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
#: the weights of ``reward + μ · likelihood_order_margin`` tried on validation (``--posthoc``)
POSTHOC_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: the column as it is (None), or saturated, ``tanh(margin / scale)``: a bounded "is this answer in a natural order",
#: which a formulaic text (a scaffold, whose order the LM likes far more than any reordering of it) cannot win by more
#: than a real answer does
POSTHOC_SCALES = (None, 0.02, 0.05, 0.1, 0.2)
#: the tag of the column's second form: the answer's own pieces one per line (marks stripped, as the canonical texts
#: are) against the canonical texts, so that layout does not set its level
STRIPPED = "stripped_"


def wins(delta: torch.Tensor) -> float:
    """The share of rows with ``original - shuffle <= 0``."""
    return float((delta <= 0).float().mean())


def default_order_model(bench: cb.Bench, seed: int, fold: int):
    """The default's order model on the split (sentence words, L2 1e-4, every answer of the training instructions),
    set on the encoder: ``(row indices, (train, validation, test) instructions, model)``."""
    idx, instructions = cb.split_rows(bench, seed, fold)
    train = bench.order_training(idx["train"], instructions[0], all_answers=True)
    fit_order_model(bench.encoder, {"train": train}, seed=0, representation="order_score", sentence_words=True,
                    l2=1e-4)
    return idx, instructions, bench.encoder.order_model


def run(bench: cb.Bench, scorer: LikelihoodScorer, seed: int, fold: int, val_answers: int) -> dict:
    idx, (_, _, test), linear = default_order_model(bench, seed, fold)
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


def per_kind(bench: cb.Bench, scorer: LikelihoodScorer, seed: int, fold: int) -> dict:
    """Per junk kind of the held-out stress set: the share at or above the real answer by ``likelihood_order_margin``
    alone and by ``order_score`` alone."""
    _, (_, _, test), model = default_order_model(bench, seed, fold)
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    rows = [i for i, p in enumerate(sp) if p in test]
    prompts, real, junk = [sp[i] for i in rows], [sr[i] for i in rows], [sj[i] for i in rows]
    kinds = np.array([sk[i] for i in rows])
    start = time.perf_counter()
    lm = SimpleNamespace(likelihood=scorer)
    margin = {name: response_features(lm, prompts, texts, spec="likelihood_order_margin", progress=True,
                                      desc=name)[:, 0] for name, texts in (("real", real), ("junk", junk))}
    order = {name: model.score(prompts, texts) for name, texts in (("real", real), ("junk", junk))}
    out = {"seed": seed, "fold": fold, "per_kind_n": int((kinds == kinds[0]).sum()),
           "lm_seconds": round(time.perf_counter() - start)}
    for kind in JUNK_KINDS:
        mine = torch.from_numpy(kinds == kind)
        out[f"margin_at_or_above_{kind}"] = wins((margin["real"] - margin["junk"])[mine])
        out[f"order_score_at_or_above_{kind}"] = wins((order["real"] - order["junk"])[mine])
    print(out, flush=True)
    return out


def stress_rewards(bench: cb.Bench, rm, contender, tag: str, instructions: set[str], wide: bool = False):
    """The stress rows of ``instructions`` (every junk kind; ``wide``: the validation stress set's four answers per
    instruction): ``(prompts, texts, rewards, kinds)``, ``texts`` and ``rewards`` keyed ``"junk"`` and ``"real"``,
    the rewards as :func:`compare_bt.junk_wins` scores them."""
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS), wide)
    sel = [i for i, p in enumerate(sp) if p in instructions]
    prompts = [sp[i] for i in sel]
    texts = {"junk": [sj[i] for i in sel], "real": [sr[i] for i in sel]}
    rewards = {}
    for which, responses in texts.items():
        p, h, _ = bench.texts(f"posthoc:{which}:{tag}", prompts, responses, contender.representation,
                              contender.model.get("nuisance", ""))
        with torch.no_grad():
            rewards[which] = rm.reward(p, h).reward
    return prompts, texts, rewards, np.array([sk[i] for i in sel])


def rates_by_weight(gap: torch.Tensor, column_gap: torch.Tensor, kinds: np.ndarray,
                    weights=POSTHOC_WEIGHTS) -> dict:
    """``{μ: {kind: share of rows with gap + μ · column_gap >= 0}}``: junk at or above its real answer once the
    reward has ``μ`` times a column added (``gap``, ``column_gap``: junk minus real)."""
    return {mu: {k: float(((gap + mu * column_gap) >= 0)[torch.from_numpy(kinds == k)].float().mean())
                 for k in JUNK_KINDS} for mu in weights}


def weight_columns(tag: str, val: dict, test: dict, weights=POSTHOC_WEIGHTS) -> dict:
    """A row's columns for one form of the added column: ``weight_{tag}`` (the ``μ`` of the lowest mean validation
    junk rate over the kinds, the smallest among equals), ``val_junk_{tag}_mu*``, ``test_junk_{tag}_mu*`` and per
    kind ``test_{tag}_mu*_{kind}`` (``val``, ``test``: :func:`rates_by_weight`'s)."""
    mean = {mu: float(np.mean(list(val[mu].values()))) for mu in weights}
    out = {f"weight_{tag}": min(weights, key=lambda mu: (mean[mu], mu)),
           **{f"val_junk_{tag}_mu{mu:g}": mean[mu] for mu in weights}}
    for mu in weights:
        out[f"test_junk_{tag}_mu{mu:g}"] = float(np.mean(list(test[mu].values())))
        out.update({f"test_{tag}_mu{mu:g}_{k}": v for k, v in test[mu].items()})
    chosen = test[out[f"weight_{tag}"]]
    out[f"chosen_junk_{tag}"] = float(np.mean(list(chosen.values())))
    out.update({f"chosen_{tag}_{k}": v for k, v in chosen.items()})
    return out


def posthoc(bench: cb.Bench, scorer: LikelihoodScorer, name: str, seed: int, fold: int) -> dict:
    """``name`` fitted on the split, its reward plus ``μ · likelihood_order_margin`` on the stress sets."""
    c = cb.CONTENDERS[name]
    rm, _, _, (_, validation, test) = cb.fit_split(bench, c, seed, fold)
    lm = SimpleNamespace(likelihood=scorer)
    out = {"contender": name, "seed": seed, "fold": fold}
    rates = {}
    for split, instructions in (("val", validation), ("test", test)):
        prompts, texts, reward, kinds = stress_rewards(bench, rm, c, f"{seed}:{fold}:{split}", instructions)
        margin = {which: {"": response_features(lm, prompts, responses, spec="likelihood_order_margin",
                                                progress=True, desc=f"{split} {which}")[:, 0]}
                  for which, responses in texts.items()}
        for which, responses in texts.items():  # the answer read in the canonical texts' own form (STRIPPED)
            rows = [i for i, r in enumerate(responses) if canonical_permutations(r)]  # 0 where the column is 0
            stripped = torch.zeros(len(responses))
            if rows:
                fluency = scorer.score([prompts[i] for i in rows], [responses[i] for i in rows])[:, 0]
                own = scorer.score([prompts[i] for i in rows], ["\n".join(bag_pieces(responses[i])) for i in rows],
                                   progress=True, desc=f"{split} {which}, its pieces one per line")[:, 0]
                canonical_mean = fluency - margin[which][""][rows]  # the column is fluency minus that mean
                stripped[rows] = own - canonical_mean
            margin[which][STRIPPED] = stripped
        gap = reward["junk"] - reward["real"]
        for form in ("", STRIPPED):
            for scale in POSTHOC_SCALES:  # the column as it is, or saturated: tanh(margin / scale)
                lom = {w: m[form] if scale is None else torch.tanh(m[form] / scale) for w, m in margin.items()}
                rates[split, form, scale] = rates_by_weight(gap, lom["junk"] - lom["real"], kinds)
        out[f"{split}_n_per_kind"] = int((kinds == kinds[0]).sum())
    for form in ("", STRIPPED):
        for scale in POSTHOC_SCALES:
            tag = form + ("raw" if scale is None else f"tanh{scale:g}")
            out.update(weight_columns(tag, rates["val", form, scale], rates["test", form, scale]))
    print(out, flush=True)
    return out


def pooled_posthoc(rows: list[dict]) -> dict:
    """Per contender, the mean over :func:`posthoc`'s rows (seeds, folds; rows of ``order_cross_probe.py --posthoc``
    too) of every rate, the weights chosen per row, and per form the lowest mean shuffle rate at any weight."""
    pooled = {}
    for contender in dict.fromkeys(r["contender"] for r in rows):
        mine = [r for r in rows if r["contender"] == contender]
        rates = [k for k in mine[0] if k.startswith(("val_junk_", "test_", "chosen_", "alone_"))]
        mean = {k: round(float(np.mean([r[k] for r in mine])), 4) for k in rates}
        forms = sorted(k[len("weight_"):] for k in mine[0] if k.startswith("weight_"))
        pooled[contender] = {"seeds": [r["seed"] for r in mine], "folds": [r["fold"] for r in mine],
                             "weights_chosen": {f: [r[f"weight_{f}"] for r in mine] for f in forms},
                             "lowest_shuffles": {f: min(mean[k] for k in rates if k.startswith(f"test_{f}_mu")
                                                        and k.endswith("_shuffled_sentences")) for f in forms},
                             **mean}
    return pooled


def pool_posthoc(names: list[str], out: str, argv) -> int:
    """``--pool``: :func:`pooled_posthoc` over the rows of ``results/coherence/<name>.json`` files."""
    import json

    rows = [r for name in names for r in json.loads((cb.RESULTS / "coherence" / f"{name}.json").read_text())["rows"]]
    cb.write_probe(out, rows, pooled_posthoc(rows), argv, script="order_lm_probe")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--val-answers", type=int, default=150, help="validation answers per seed, one reordering each")
    ap.add_argument("--response-tokens", type=int, default=256, help="the LM's response window")
    ap.add_argument("--per-kind", action="store_true", help="score every junk kind (first seed only)")
    ap.add_argument("--posthoc", nargs="+", default=None, metavar="CONTENDER",
                    help="fit these contenders (first seed only) and add the LM's order column to their reward")
    ap.add_argument("--pool", nargs="+", default=None, metavar="NAME",
                    help="pool --posthoc results (results/coherence/NAME.json, one seed each): per contender, the mean "
                         "of every rate over the files' seeds, and per form the smallest shuffle rate at any weight; "
                         "nothing is fitted")
    ap.add_argument("--out", default=None, help="results/coherence/<out>.json (default order_lm, order_lm_per_kind)")
    args = ap.parse_args(argv)
    if args.pool:
        return pool_posthoc(args.pool, args.out or "order_lm_posthoc_pooled", argv)
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    scorer = LikelihoodScorer(bundled_smollm2(), dtype="bfloat16", max_response_tokens=args.response_tokens,
                              cache_dir=str(cb.CACHE_DIR))
    if args.posthoc:
        rows = [posthoc(bench, scorer, name, args.seeds[0], args.fold) for name in args.posthoc]
    elif args.per_kind:
        rows = [per_kind(bench, scorer, args.seeds[0], args.fold)]
    else:
        rows = [run(bench, scorer, seed, args.fold, args.val_answers) for seed in args.seeds]
    keys = [k for k in rows[0] if k.startswith(("val_", "test_", "bag_", "weight", "lm_seconds", "margin_", "order_"))]
    default = "order_lm_posthoc" if args.posthoc else "order_lm_per_kind" if args.per_kind else "order_lm"
    mean = ({r["contender"]: {k: round(r[k], 4) for k in keys} for r in rows} if args.posthoc
            else {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys})
    cb.write_probe(args.out or default, rows, mean, argv, script="order_lm_probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
