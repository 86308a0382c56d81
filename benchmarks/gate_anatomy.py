"""Where a validity gate's margins come from (not a timed test): per junk kind, the reward gap
``r(junk) - r(real)`` split into the gate's term ``log σ(t_junk) - log σ(t_real)`` and the rest (the quality score),
with and without the gate.

For each contender and seed (AlpacaEval, 10 pairs per instruction, fold 0, refitted here as ``compare_bt.py`` fits
them), every junk answer made from a held-out instruction's best dev answer: the win rate, the mean gap, the mean of
the gate's part and of the rest, the spread of the rest, and how often the gate's part is nearly nothing (> −0.1: both
answers where ``log σ`` has saturated). Also the gate's weights on its columns and the path's mean weight on the LM's
columns (the last six of ``+likfpl``'s representation). With ``--losers KIND ...``: every real answer that junk of those
kinds outranks, with its length in words, whether it refuses (``vrm_pyro.inspect``'s refusal phrases), the gap and the
gate's part, the texts cut short. With a gate, each gate column's part of the junk's validity logit against its real
answer's, and each factor's logits (:func:`gate_columns`). Where the representation has a sentence-order model, the sentence shuffles split
by whether they keep the answer's bag of sentences, with the reward's and the order model's own win rates on each side
(:func:`shuffle_split`).

    python benchmarks/gate_anatomy.py --encoder .gpu/minilm --likelihood-model <gguf> --likelihood-response-tokens 256 \
        --contenders vrm_part2+nuis+ord+disc+sord+likfpl+rrm6+both+glr vrm_part2+nuis+ord+disc+sord+likfpl+vg+rrm6+both+glr

writes ``results/coherence_vg256/gate_anatomy.json`` and ``.md`` (``--out`` names the stage directory and file).

    python benchmarks/gate_anatomy.py --encoder .gpu/minilm --contenders vrm_part2+nuis+ord+disc+sord+vgn+rrm6+both+glr \
        bt_bayesian_linear_part1+nuis+ord+disc+sord+vgn+rrm6+both+glr --losers other_prompt refusal scaffold template \
        --out coherence_vgi/default_losers
    python benchmarks/gate_anatomy.py --contenders vrm_part2+nuis+ord+disc+sord+pce+oswa+vgn+rrm6+cf+both+glr --map \
        --out coherence_r18/gate_map
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402
from shared_data import RESULTS, command_line, write_result  # noqa: E402

from vrm_pyro.covariates import bag_sentences  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.inspect import response_properties  # noqa: E402
from vrm_pyro.representations import column_names  # noqa: E402


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _short(text: str, n: int) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def gate_map(rm, train) -> dict:
    """The gate's MAP ``(v, c)`` on ``train``'s validity observations (every ``response_a`` valid, ``response_b``
    valid unless junk) under its priors, against the guide's means: ``{"nlp_trained", "nlp_map", "weights_map",
    "bias_map"}`` (``nlp``: the negative log posterior, up to a constant)."""
    gate, q = rm.model.gate, rm.guide.global_guide
    if gate.by_prompt:
        raise SystemExit("gate_anatomy.py --map: the gate's MAP is fitted on (v, c) alone; a gate by prompt "
                         "(--gate-by-prompt) also has V, which this probe does not fit")
    with torch.no_grad():
        h = torch.cat([rm.transform.features(r) for r in (train.response_a, train.response_b)])
    y = torch.cat([torch.ones(len(train)), (~train.junk).float()])
    (_, weight_std), (_, bias_std) = gate.priors["gate_weight"], gate.priors["gate_bias"]

    def nlp(v, c):
        t = gate.validity_logits({"gate_weight": v, "gate_bias": c}, h)  # a conjunctive gate's and a clipped one's too
        return (F.binary_cross_entropy_with_logits(t, y, reduction="sum") + 0.5 * (v / weight_std).square().sum()
                + 0.5 * (c / bias_std).square().sum())

    v, c = (q.loc[s].detach().clone().requires_grad_() for s in ("gate_weight", "gate_bias"))
    trained = float(nlp(v, c).detach())
    opt = torch.optim.LBFGS([v, c], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nlp(v, c)
        loss.backward()
        return loss

    opt.step(closure)
    return {"nlp_trained": trained, "nlp_map": float(nlp(v, c).detach()), "weights_map": v.detach().tolist(),
            "bias_map": c.detach().tolist()}


def gate_columns(rm, representation: str, jp, jh, rp, rh, kinds: np.ndarray) -> dict:
    """Where the gate's logits come from, at the guide's means of its sites: per junk kind, each gate column's mean
    part of ``t_junk - t_real`` (``v_j (h_j(junk) - h_j(real))``, the columns as the weights see them) and each
    factor's mean logit ``t_k`` for the junk and for its real answers (one factor for a plain gate). Nothing for a
    gate by prompt."""
    gate = rm.model.gate
    if gate.by_prompt:  # its weights depend on the prompt: the columns' parts below would leave V^T x out
        return {}
    every = column_names(representation, rp.shape[-1])
    if len(every) != gate.columns.numel():
        raise SystemExit(f"gate_anatomy.py: {representation!r} names {len(every)} columns, the gate reads "
                         f"{gate.columns.numel()}")
    names = [n for n, m in zip(every, gate.columns.tolist()) if m]
    sites = {s: rm.guide.posterior(s).mean.detach() for s in gate.priors}
    with torch.no_grad():
        hj, hr = rm.transform.features(jh), rm.transform.features(rh)
        parts = (gate.inputs(hj) - gate.inputs(hr)) * sites["gate_weight"]
        tj, tr = gate.factor_logits(sites, hj, jp), gate.factor_logits(sites, hr, rp)
    out = {"gate_column_names": names, "gate_factors": gate.factors.tolist(), "column_parts": {}, "factor_logits": {}}
    for kind in dict.fromkeys(kinds):
        mask = torch.as_tensor(kinds == kind)
        out["column_parts"][kind] = parts[mask].mean(0).tolist()
        out["factor_logits"][kind] = {"junk": tj[mask].mean(0).tolist(), "real": tr[mask].mean(0).tolist()}
    return out


def shuffle_split(order_model, prompts: list[str], real: list[str], junk: list[str], gap: np.ndarray) -> dict:
    """Sentence shuffles split by whether they keep the answer's bag of sentences
    (:func:`vrm_pyro.covariates.bag_sentences`): how many, the reward's win rate (``gap`` ``(N,)``, junk minus real)
    and the sentence-order model's alone, on each side. On an order-blind base a shuffle that keeps the bag moves
    only the order model's column and the ending, so there the two rates show how much of the reward's error on
    shuffles is the order model's."""
    same = np.array([bag_sentences(r) == bag_sentences(j) for r, j in zip(real, junk)])
    with torch.no_grad():
        alone = (order_model.score(prompts, junk) - order_model.score(prompts, real)).numpy()
    out = {}
    for side, mask in (("same_bag", same), ("changed_bag", ~same)):
        out[side] = {"n": int(mask.sum()), "wins": float((gap[mask] >= 0).mean()) if mask.any() else None,
                     "order_model_wins": float((alone[mask] >= 0).mean()) if mask.any() else None}
    return out


def anatomy(bench: cb.Bench, name: str, seed: int, losers: tuple[str, ...] = (), with_map: bool = False) -> dict:
    c = cb.CONTENDERS[name]
    idx, (train_instructions, _, te) = cb.split_rows(bench, seed, 0)
    bench.use_split_order_model(c, seed, 0, idx["train"], train_instructions)
    full = bench.pairs(bench.alpaca, "alpaca", c.representation, c.model.get("nuisance", ""))
    train, val, test = (full.subset(idx[k]) for k in ("train", "validation", "test"))
    train = bench.augmented(train, bench.alpaca.subset(idx["train"]), c)
    rm, _ = cb.fit_and_measure(bench, c, seed, train, val, test, bench.alpaca.subset(idx["test"]))
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    sel = [i for i, q in enumerate(sp) if q in te]
    jp, jh, _ = bench.texts(f"gate:junk:{seed}", [sp[i] for i in sel], [sj[i] for i in sel], c.representation, "")
    rp, rh, _ = bench.texts(f"gate:real:{seed}", [sp[i] for i in sel], [sr[i] for i in sel], c.representation, "")
    with torch.no_grad():
        gap = (rm.reward(jp, jh, seed=seed).reward - rm.reward(rp, rh, seed=seed).reward).numpy()
        if rm.model.gate is not None:
            gate = (rm.model.gate_moments(rm.guide, jp, rm.transform.features(jh), 32, seed)[0]
                    - rm.model.gate_moments(rm.guide, rp, rm.transform.features(rh), 32, seed)[0]).numpy()
        else:
            gate = np.zeros_like(gap)
    df = pd.DataFrame({"kind": [sk[i] for i in sel], "gap": gap, "gate": gate, "rest": gap - gate})
    out = {"contender": name, "seed": seed}
    if rm.model.gate is not None:
        out.update(gate_columns(rm, c.representation, jp, jh, rp, rh, df.kind.to_numpy()))
    if with_map:
        out["map"] = gate_map(rm, train)
        hj, hr = (rm.transform.features(x) for x in (jh, rh))
        q, g = rm.guide.global_guide, rm.model.gate
        points = {"loc": (q.loc["gate_weight"].detach(), q.loc["gate_bias"].detach()),
                  "map": (torch.tensor(out["map"]["weights_map"]), torch.tensor(out["map"]["bias_map"]))}
        with torch.no_grad():
            for point, (v, b) in points.items():  # the quality score as trained, the gate's term at one point
                sites = {"gate_weight": v, "gate_bias": b}
                df[f"gap_{point}"] = df.rest + (g.logits(sites, hj) - g.logits(sites, hr)).numpy()
    kinds = {kind: {"n": int(len(g)), "wins": float((g.gap >= 0).mean()), "gap": float(g.gap.mean()),
                    "gate": float(g.gate.mean()), "rest": float(g.rest.mean()), "rest_sd": float(g.rest.std()),
                    "gate_nearly_zero": float((g.gate > -0.1).mean()),
                    **({f"wins_{p}": float((g[f"gap_{p}"] >= 0).mean()) for p in ("loc", "map")} if with_map else {})}
             for kind, g in df.groupby("kind")}
    out["kinds"] = kinds
    shuffles = [j for j, i in enumerate(sel) if sk[i] == "shuffled_sentences"]
    if shuffles and bench.encoder.order_model is not None:  # is a shuffle's win the order model's own?
        out["shuffle_split"] = shuffle_split(bench.encoder.order_model, [sp[sel[j]] for j in shuffles],
                                             [sr[sel[j]] for j in shuffles], [sj[sel[j]] for j in shuffles],
                                             gap[shuffles])
    path = rm.model.path if getattr(rm.model, "path", None) is not None else rm.model.head
    mean, _ = path.weight_moments(rm.guide.posterior(path.site))
    if "likelihood" in c.representation:
        out["path_lm_weights"] = mean.detach().reshape(mean.shape[0], -1).mean(-1)[-6:].tolist()
    if rm.model.gate is not None:
        out["gate_weights"] = rm.guide.posterior("gate_weight").mean.detach().tolist()
        out["gate_bias"] = rm.guide.posterior("gate_bias").mean.detach().tolist()  # one per factor
    lost = [j for j, i in enumerate(sel) if sk[i] in losers and gap[j] >= 0]
    props = response_properties([sr[sel[j]] for j in lost])
    out["losers"] = [{"kind": sk[sel[j]], "prompt": sp[sel[j]], "real": sr[sel[j]], "junk": sj[sel[j]],
                      "words": int(w), "refusal": bool(r), "gap": float(gap[j]), "gate": float(gate[j])}
                     for j, w, r in zip(lost, props["words"], props["refusal"])]
    return out


def render(rows: list[dict]) -> str:
    lines = ["| contender | kind | seeds | wins | gap | gate part | rest | sd(rest) | gate part > -0.1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["contender"] for r in rows):
        mine = [r for r in rows if r["contender"] == name]
        for kind in sorted(mine[0]["kinds"]):
            vals = {k: np.mean([r["kinds"][kind][k] for r in mine]) for k in
                    ("wins", "gap", "gate", "rest", "rest_sd", "gate_nearly_zero")}
            lines.append(f"| `{name}` | {kind} | {len(mine)} | {vals['wins']:.3f} | {vals['gap']:.2f} | "
                         f"{vals['gate']:.2f} | {vals['rest']:.2f} | {vals['rest_sd']:.2f} | "
                         f"{vals['gate_nearly_zero']:.2f} |")
    with_lm = list(dict.fromkeys(r["contender"] for r in rows if "path_lm_weights" in r))
    if with_lm:
        lines += ["", "Path's mean weight on the LM's columns (given prompt, alone, 10th percentile, end; PMI, end), "
                  "mean over seeds:", ""]
    for name in with_lm:
        w = np.mean([r["path_lm_weights"] for r in rows if r["contender"] == name], axis=0)
        lines.append(f"- `{name}`: " + ", ".join(f"{v:+.3f}" for v in w))
    lost = [(r["contender"], r["seed"], x) for r in rows for x in r.get("losers", [])]
    if lost:
        lines += ["", "Real answers that junk outranks (`--losers`); texts cut short:", "",
                  "| contender | seed | kind | real: words | real refuses | gap | gate part | instruction | real answer | "
                  "junk |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, seed, x in sorted(lost, key=lambda t: (t[0], t[2]["kind"], t[2]["words"])):
            lines.append(f"| `{name}` | {seed} | {x['kind']} | {x['words']} | {'yes' if x['refusal'] else ''} | "
                         f"{x['gap']:+.2f} | {x['gate']:+.2f} | {_short(x['prompt'], 60)} | {_short(x['real'], 90)} | "
                         f"{_short(x['junk'], 50)} |")
    with_columns = [r for r in rows if "column_parts" in r]
    if with_columns:
        lines += ["", "The gate's logits by column and by factor, at the guide's means (mean over seeds): each column's part of "
                  "`t_junk - t_real` (negative: the column counts against the junk), and each factor's logit for the "
                  "junk and for its real answers:", ""]
    for name in dict.fromkeys(r["contender"] for r in with_columns):
        mine = [r for r in with_columns if r["contender"] == name]
        cols, factors = mine[0]["gate_column_names"], mine[0]["gate_factors"]
        lines += [f"`{name}` (factors: " + "; ".join(",".join(c for c, f in zip(cols, factors) if f == k)
                                                      for k in range(max(factors) + 1)) + ")", "",
                  "| kind | " + " | ".join(cols) + " | t_k junk | t_k real |", "| --- |" + " --- |" * (len(cols) + 2)]
        for kind in sorted(mine[0]["column_parts"]):
            part = np.mean([r["column_parts"][kind] for r in mine], axis=0)
            tj = np.mean([r["factor_logits"][kind]["junk"] for r in mine], axis=0)
            tr = np.mean([r["factor_logits"][kind]["real"] for r in mine], axis=0)
            lines.append(f"| {kind} | " + " | ".join(f"{v:+.2f}" for v in part) + " | "
                         + ", ".join(f"{v:+.2f}" for v in tj) + " | " + ", ".join(f"{v:+.2f}" for v in tr) + " |")
        lines.append("")
    split = [r for r in rows if "shuffle_split" in r]
    if split:
        lines += ["", "Sentence shuffles that keep the answer's bag of sentences and those that do not: how many, the "
                  "reward's win rate, the sentence-order model's alone (`order_score` as the only reward):", "",
                  "| contender | seed | same bag: n | wins | order model alone | other bag: n | wins | "
                  "order model alone |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in split:
            a, b = r["shuffle_split"]["same_bag"], r["shuffle_split"]["changed_bag"]
            lines.append(f"| `{r['contender']}` | {r['seed']} | " + " | ".join(
                f"{x['n']} | {_rate(x['wins'])} | {_rate(x['order_model_wins'])}" for x in (a, b)) + " |")
    mapped = [r for r in rows if "map" in r]
    if mapped:
        lines += ["", "`--map`: the gate at the guide's means (`loc`) and at its MAP on the training pairs' validity "
                  "observations; negative log posterior (up to a constant) and held-out win rates with the gate's term "
                  "at either point:", "", "| contender | seed | −log post. (loc) | −log post. (MAP) | weights (loc) | "
                  "weights (MAP) | " + " | ".join(sorted(mapped[0]["kinds"])) + " |",
                  "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in mapped[0]["kinds"]) + " |"]
        for r in mapped:
            m = r["map"]
            lines.append(f"| `{r['contender']}` | {r['seed']} | {m['nlp_trained']:.1f} | {m['nlp_map']:.1f} | "
                         + ", ".join(f"{w:+.2f}" for w in r["gate_weights"]) + " | "
                         + ", ".join(f"{w:+.2f}" for w in m["weights_map"]) + " | "
                         + " | ".join(f"{r['kinds'][k]['wins_loc']:.3f} → {r['kinds'][k]['wins_map']:.3f}"
                                      for k in sorted(r["kinds"])) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--likelihood-model", default=None)
    ap.add_argument("--likelihood-response-tokens", type=int, default=cb.EncoderConfig.likelihood_response_tokens)
    ap.add_argument("--contenders", nargs="+", required=True, choices=list(cb.CONTENDERS), metavar="CONTENDER",
                    help="compare_bt.py list names them")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default="coherence_vg256/gate_anatomy", help="results/<stage>/<name> (.json and .md)")
    ap.add_argument("--losers", nargs="*", default=[], choices=list(JUNK_KINDS),
                    help="List the real answers that junk of these kinds outranks.")
    ap.add_argument("--map", action="store_true", help="Also fit the gate's MAP on the validity observations and "
                    "score the held-out junk with it (is the trained gate an unfinished fit?).")
    args = ap.parse_args(argv)
    bench = cb.Bench(encoder=args.encoder, pairs_per_instruction=10, likelihood_model=args.likelihood_model,
                     likelihood_response_tokens=args.likelihood_response_tokens)
    rows = [anatomy(bench, name, seed, tuple(args.losers), args.map) for name in args.contenders for seed in args.seeds]
    text = render(rows)
    write_result(RESULTS / args.out, command_line("gate_anatomy", argv), text, {"rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
