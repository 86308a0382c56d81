"""Does a fine-tuned cross-encoder see sentence order the linear order model misses? A probe.

After round 29 the one junk kind over 2% held out is the answer's own sentences shuffled (VRM 0.068, BT 0.072), and the
reward errs there where its order channel, the linear :class:`vrm_pyro.order_model.SentenceOrderModel`, does (about
8% of validation reorderings; more hashed features, section 2ae, and a Transformer over hashed sentences, section 2v,
did not lower it; only an LM's fluency did, section 2w, at ~4 texts/s on 2 cores). Every text model tried so far reads
words, not meaning. This probe fine-tunes the encoder itself as a *local coherence* model, the way ALBERT's
sentence-order prediction and the "next sentence among the candidates" models of discourse coherence do:

    f(c, s) = w · meanpool(MiniLM([c] [SEP] [s])) + b,

where ``c`` is the sentence before ``s`` (the prompt for the first sentence), trained on the fold's training answers
(every answer of the training instructions, as the default order model) by the pairwise loss
``softplus(f(c, s_i) − f(c, s_j))`` against another sentence ``s_j`` of the same answer (not ``c`` itself), one position
per answer. An answer's coherence is ``g(y) = mean_i f(c_i, s_i)`` over its sentences (list enumerators and Markdown
marks stripped, as the order model strips them), so a shuffle that keeps the answer's bag changes ``g`` only by
which sentence follows which, and which comes first after the prompt.

Rows per (seed, fold): ``val_reorder_wins`` (the validation instructions' answers against two reorderings each,
made as the order model's fit makes them; scored at or above the original) and ``shuffles`` (the held-out stress
set's sentence shuffles) for the linear model alone (the default's, fitted as in section 2ae), ``g`` alone, and the
sum ``order_score + λ g`` with λ chosen on the validation reorderings; ``other_at_or_above_KIND`` for ``g`` alone (what
a positive weight on it rewards in the other junk kinds). Fine-tuning: ``--examples`` pairs, batch 16, AdamW
(``--lr``, 5e-5) with linear decay, words cut to 40 a side (``--objective binary``, ``--context 2``: the variants
screened on fold 0); 8,000 pairs take 450-530 s on 2 cores (the rows' ``fine_tune_seconds``).

    python benchmarks/order_cross_probe.py --folds 0 1 2 3 --seeds 0

writes ``results/coherence/order_cross_probe.json`` (``--out``); ``--pool NAME ...`` pools the rows of earlier
files (folds run separately) into ``--out``.

``--posthoc CONTENDER ...`` asks whether the gain reaches a reward: each contender is fitted on the split as
``compare_bt.py`` fits it, and its reward gets ``μ`` times the column ``m(y) = g(y) − mean_k g(π_k(y))``
(:meth:`CrossOrderModel.margin`: ``g`` against the answer's four canonical reorderings, as the part ``order_margin``
reads the linear model, so the column is 0 for a text with nothing to reorder and the same mean cancels between an
answer and its shuffle; its first :data:`POSTHOC_PIECES` sentences), over ``σ`` (the validation answers' spread of
``m``), as it is or saturated (:data:`POSTHOC_SCALES`). ``μ`` (:data:`POSTHOC_WEIGHTS`) is chosen per form on the
validation instructions' wide stress set (four answers each; the mean junk rate over the kinds, the smallest ``μ``
among equals), and every junk kind is read held out at each ``μ`` and at the chosen one (``chosen_*``); ``alone_*``:
the column alone. The fine-tuned model is cached per split (``benchmarks/.cache``); a fold takes about 17 minutes on
2 cores (fine-tuning 450 s, the column on both stress sets 420 s):

    python benchmarks/order_cross_probe.py --posthoc VRM BT --folds 0 --lr 1.5e-4 --out order_cross_posthoc_f0

writes ``results/coherence/order_cross_posthoc_f0.json``, one row per contender and fold, pooled per contender.
``--posthoc-accuracy NAME`` reads those rows (their ``σ`` and chosen ``μ``) and measures what the column costs on the
real labels: the authentic reward's pairwise accuracy on the split's held-out AlpacaEval pairs at every ``μ``
(``results/coherence/order_cross_accuracy.json``; about 8 minutes a fold, the column on ~1,640 answers), and the
chosen ``μ``'s accuracy paired with ``μ = 0``'s over the same fits (:func:`accuracy_mean`). ``--pool`` pools either
kind of row (seeds or folds run separately).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402
from order_lm_probe import (  # noqa: E402
    pooled_posthoc,
    rates_by_weight,
    stress_rewards,
    weight_columns,
)
from order_model_probe import (  # noqa: E402
    default_fit,
    distinct_answers,
    reorderings,
    split_answers,
    stress_scores,
)

from vrm_pyro.covariates import sentences, unmarked  # noqa: E402
from vrm_pyro.encoders import resolve_model_path  # noqa: E402
from vrm_pyro.evaluate import pairwise_metrics  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.order_model import canonical_reorderings, margin_against  # noqa: E402

#: words kept of the context (its end) and of the candidate sentence (its start)
WORDS = 40
#: λ for ``order_score + λ g``, chosen on the validation reorderings
LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: the sentences of an answer ``--posthoc`` reads at most (its first; a five-fold repetition has hundreds)
POSTHOC_PIECES = 24
#: ``--posthoc``'s forms of the column ``m(y) = g(y) − mean_k g(π_k(y))`` over ``σ``, the spread of the validation
#: answers' ``m``: as it is (None), or saturated, ``tanh(m / (s σ))``
POSTHOC_SCALES = (None, 0.5, 1.0, 2.0)
#: ``--posthoc``'s weights ``μ`` of the column (over ``σ``, so one unit is a typical answer's margin)
POSTHOC_WEIGHTS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def pieces(prompt: str, response: str, context: int = 1) -> tuple[list[str], list[str]]:
    """``(ends, starts)`` of an answer's ``n`` sentences (enumerators and Markdown marks stripped): ``ends`` ``n + 1``
    contexts, the prompt's first :data:`WORDS` words then the last :data:`WORDS` words of each sentence with the
    ``context − 1`` before it; ``starts`` each sentence's first :data:`WORDS` words. Sentence ``i`` follows ``ends[i]``."""
    said = [unmarked(s) for s in sentences(response)] or [response.strip()]
    ends = [" ".join(prompt.split()[:WORDS])] + [" ".join(" ".join(said[max(0, k + 1 - context):k + 1]).split()[-WORDS:])
                                                 for k in range(len(said))]
    return ends, [" ".join(s.split()[:WORDS]) for s in said]


class CrossOrderModel(torch.nn.Module):
    """``f(c, s)``: MiniLM over the pair, mean-pooled, one linear unit; :meth:`score` gives ``g(y)`` ``(N,)``."""

    def __init__(self, path: str, context: int = 1):
        super().__init__()
        self.context = context
        from transformers import AutoModel, AutoTokenizer
        self.tokenizer, self.encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)

    def forward(self, contexts: list[str], candidates: list[str]) -> torch.Tensor:
        enc = self.tokenizer(contexts, candidates, truncation=True, max_length=128, padding=True, return_tensors="pt")
        hidden = self.encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return self.head((hidden * mask).sum(1) / mask.sum(1)).squeeze(-1)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], batch: int = 64, cap: int | None = None) -> torch.Tensor:
        """``g(y)`` ``(N,)`` over each answer's sentences (its first ``cap``); each distinct text scored once."""
        self.eval()
        texts = list(dict.fromkeys(zip(prompts, responses)))
        owner, contexts, candidates = [], [], []
        for i, (p, r) in enumerate(texts):
            c, s = pieces(p, r, self.context)
            s = s[:cap]
            owner += [i] * len(s)
            contexts += c[:len(s)]
            candidates += s
        order = np.argsort([len(c) + len(s) for c, s in zip(contexts, candidates)])  # similar lengths per batch
        logits = torch.empty(len(order))
        for k in range(0, len(order), batch):
            rows = order[k:k + batch]
            logits[torch.as_tensor(rows)] = self([contexts[j] for j in rows], [candidates[j] for j in rows])
        idx = torch.tensor(owner)
        total = torch.zeros(len(texts)).index_add_(0, idx, logits)
        g = total / torch.zeros(len(texts)).index_add_(0, idx, torch.ones(len(owner)))
        where = {t: i for i, t in enumerate(texts)}
        return g[torch.tensor([where[t] for t in zip(prompts, responses)])]

    def margin(self, prompts: list[str], responses: list[str], cap: int | None = POSTHOC_PIECES) -> torch.Tensor:
        """``m(y) = g(y) − mean_k g(π_k(y))`` ``(N,)`` over the answer's canonical reorderings
        (:func:`vrm_pyro.order_model.canonical_reorderings`, as the part ``order_margin`` reads the linear model):
        the same mean for an answer and any shuffle that keeps its sentences, 0 where nothing can be reordered, so
        what ``g`` thinks of an answer's sentences in any order (their style, their topic) cancels."""
        return margin_against(self.score(prompts, responses, cap=cap), [canonical_reorderings(r) for r in responses],
                              lambda rows, texts: self.score([prompts[i] for i in rows], texts, cap=cap))


#: the fine-tuning objectives (``--objective``)
OBJECTIVES = ("pairwise", "binary")


def training_examples(prompts: list[str], responses: list[str], count: int, rng,
                      objective: str = "pairwise", context: int = 1) -> list[tuple[str, str, str, str]]:
    """``count`` examples ``(context, the sentence that follows it, context', a sentence that does not follow it)``,
    one position of one answer each, answers drawn without replacement. ``pairwise``: ``context'`` is ``context``, the
    other sentence another of the answer's (not the context itself); ``binary``: any ordered pair of the answer's
    pieces (the prompt first or not) that is not adjacent in it, as a shuffle makes them."""
    out = []
    for a in rng.permutation(len(responses)):
        ends, starts = pieces(prompts[a], responses[a], context)
        n = len(starts)
        if n < 2:
            continue
        i = int(rng.integers(n))
        if objective == "pairwise":
            others = [(i, j) for j in range(n) if j != i and j != i - 1 and starts[j] != starts[i]]
        else:  # ends[k] is followed by starts[k]; ends[k] (k >= 1) is sentence k - 1 itself
            others = [(k, j) for k in range(n + 1) for j in range(n) if j != k and j != k - 1]
        if others:
            k, j = others[int(rng.choice(len(others)))]
            out.append((ends[i], starts[i], ends[k], starts[j]))
        if len(out) == count:
            break
    return out


def fine_tune(model: CrossOrderModel, examples, batch: int = 16, lr: float = 5e-5,
              objective: str = "pairwise") -> list[float]:
    """One pass over ``examples``: ``pairwise`` ``softplus(f(c, s') − f(c, s))``, ``binary`` ``softplus(−f(c, s)) +
    softplus(f(c', s'))`` (a pair that follows scored high in absolute terms, as ``g``'s mean over contexts needs);
    the mean loss per 50 steps."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = (len(examples) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / steps)
    losses, curve = [], []
    for k in range(steps):
        c, pos, c_neg, neg = zip(*examples[k * batch:(k + 1) * batch])
        logits = model(list(c) + list(c_neg), list(pos) + list(neg))
        good, bad = logits[:len(c)], logits[len(c):]
        loss = (F.softplus(bad - good) if objective == "pairwise" else F.softplus(-good) + F.softplus(bad)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if len(losses) == 50:
            curve.append(round(float(np.mean(losses)), 4))
            print(f"  step {k + 1}/{steps}: loss {curve[-1]}", flush=True)
            losses = []
    return curve


def tuned_model(prompts: list[str], responses: list[str], seed: int, fold: int, examples: int, lr: float,
                objective: str, context: int) -> tuple[CrossOrderModel, list[float], float]:
    """``f`` fine-tuned on a split's training answers: ``(model, loss curve, seconds)``, kept in ``benchmarks/.cache``
    so that a second use of the split (``--posthoc`` after the probe) does not tune it again."""
    path = cb.CACHE_DIR / f"cross_order_{seed}_{fold}_{examples}_{lr:g}_{objective}_{context}.pt"
    torch.manual_seed(seed)
    cross = CrossOrderModel(resolve_model_path("all-MiniLM-L6-v2"), context)
    if path.exists():
        saved = torch.load(path)
        cross.load_state_dict(saved["state"])
        return cross, saved["curve"], saved["seconds"]
    start = time.perf_counter()
    tuning = training_examples(prompts, responses, examples, np.random.default_rng([seed, fold, 5]), objective,
                               context)
    curve = fine_tune(cross, tuning, lr=lr, objective=objective)
    seconds = round(time.perf_counter() - start, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": cross.state_dict(), "curve": curve, "seconds": seconds}, path)
    return cross, curve, seconds


def run(bench: cb.Bench, seed: int, fold: int, examples: int, lr: float, objective: str, context: int) -> dict:
    idx, (train_instructions, _, test) = cb.split_rows(bench, seed, fold)
    prompts, responses = distinct_answers(bench.order_training(idx["train"], train_instructions, True))
    start = time.perf_counter()
    linear = default_fit(prompts, responses)
    linear_seconds = time.perf_counter() - start
    cross, curve, tune_seconds = tuned_model(prompts, responses, seed, fold, examples, lr, objective, context)

    vp, vr, vs = reorderings(*split_answers(bench, idx["validation"]), seed)
    val = {name: (m.score(vp, vr), m.score(vp, vs)) for name, m in (("linear", linear), ("cross", cross))}
    wins = {lam: float(((val["linear"][1] + lam * val["cross"][1]) >= (val["linear"][0] + lam * val["cross"][0]))
                       .float().mean()) for lam in LAMBDAS}
    lam = min(LAMBDAS, key=lambda x: (wins[x], x))
    kinds, real_l, junk_l = stress_scores(bench, linear, test)
    _, real_c, junk_c = stress_scores(bench, cross, test)
    kinds = np.array(kinds)
    shuffled = kinds == "shuffled_sentences"
    held = {"linear": (junk_l >= real_l).numpy(), "cross": (junk_c >= real_c).numpy(),
            "sum": ((junk_l + lam * junk_c) >= (real_l + lam * real_c)).numpy()}
    row = {"seed": seed, "fold": fold, "train_answers": len(responses), "examples": examples, "lr": lr,
           "objective": objective, "context": context, "loss_curve": curve,
           "linear_fit_seconds": round(linear_seconds, 1), "fine_tune_seconds": round(tune_seconds, 1),
           "val_reorderings": len(vr),
           "val_reorder_wins_linear": wins[0.0],
           "val_reorder_wins_cross": float((val["cross"][1] >= val["cross"][0]).float().mean()),
           "val_reorder_wins_sum": wins[lam], "lambda": lam, "val_reorder_wins_by_lambda": wins,
           **{f"shuffles_{k}": float(v[shuffled].mean()) for k, v in held.items()},
           **{f"cross_other_at_or_above_{k}": float(held["cross"][kinds == k].mean())
              for k in JUNK_KINDS if k != "shuffled_sentences"}}
    print({k: v for k, v in row.items() if k != "val_reorder_wins_by_lambda"}, flush=True)
    return row


def split_model(bench: cb.Bench, seed: int, fold: int, examples: int, lr: float):
    """The split's row indices and instructions (:func:`compare_bt.split_rows`) and its fine-tuned ``f`` (the pairwise
    objective, one sentence of context; :func:`tuned_model`): ``(idx, (train, validation, test), model, seconds)``."""
    idx, instructions = cb.split_rows(bench, seed, fold)
    prompts, responses = distinct_answers(bench.order_training(idx["train"], instructions[0], True))
    cross, _, seconds = tuned_model(prompts, responses, seed, fold, examples, lr, "pairwise", 1)
    return idx, instructions, cross, seconds


def column_forms(column: dict[str, torch.Tensor], sigma: float) -> dict[str, dict[str, torch.Tensor]]:
    """``{form: {key: column}}``: each of :data:`POSTHOC_SCALES`'s forms of the margins ``column`` over ``σ``, as it is
    (``raw``) or saturated (``tanh{s}``: ``tanh(m / (s σ))``)."""
    return {"raw" if s is None else f"tanh{s:g}": {k: v / sigma if s is None else torch.tanh(v / (s * sigma))
                                                   for k, v in column.items()} for s in POSTHOC_SCALES}


def posthoc(bench: cb.Bench, names: list[str], seed: int, fold: int, examples: int, lr: float) -> list[dict]:
    """Each contender fitted on the split, its reward plus ``μ`` times the column ``m`` (:meth:`CrossOrderModel.margin`,
    over ``σ``, in each of :data:`POSTHOC_SCALES`'s forms) on the stress sets: ``μ`` chosen on the validation
    instructions' wide stress set (four answers each), rates per kind held out, one row per contender."""
    _, (_, validation, test), cross, tune_seconds = split_model(bench, seed, fold, examples, lr)
    rows, column, sigma = [], {}, None
    for name in names:
        c = cb.CONTENDERS[name]
        rm, _, _, _ = cb.fit_split(bench, c, seed, fold)
        out, rates = {"contender": name, "seed": seed, "fold": fold, "fine_tune_seconds": tune_seconds}, {}
        for split, instructions, wide in (("val", validation, True), ("test", test, False)):
            sp, texts, reward, kinds = stress_rewards(bench, rm, c, f"cross:{seed}:{fold}:{split}", instructions, wide)
            if split not in column:  # the same texts for every contender
                start = time.perf_counter()
                column[split] = {which: cross.margin(sp, t) for which, t in texts.items()}
                out[f"{split}_column_seconds"] = round(time.perf_counter() - start, 1)
                sigma = sigma or float(column["val"]["real"].std())
            for form, m in column_forms(column[split], sigma).items():
                rates[split, form] = rates_by_weight(reward["junk"] - reward["real"], m["junk"] - m["real"], kinds,
                                                     POSTHOC_WEIGHTS)
            out[f"{split}_n_per_kind"] = int((kinds == kinds[0]).sum())
            alone = column[split]["junk"] >= column[split]["real"]  # what a positive weight on m rewards
            out.update({f"alone_{split}_{k}": float(alone[torch.from_numpy(kinds == k)].float().mean())
                        for k in JUNK_KINDS})
        out["sigma"] = round(sigma, 4)
        for form in dict.fromkeys(form for _, form in rates):
            out.update(weight_columns(form, rates["val", form], rates["test", form], POSTHOC_WEIGHTS))
        print({k: v for k, v in out.items() if k.startswith(("weight_", "chosen_", "sigma", "contender"))}, flush=True)
        rows.append(out)
    return rows


def posthoc_accuracy(bench: cb.Bench, chosen: list[dict], seed: int, fold: int, examples: int, lr: float) -> list[dict]:
    """What the column costs on the real labels: for each of ``chosen``'s rows of the split (:func:`posthoc`'s rows,
    their ``σ`` and ``weight_*``), the contender refitted, its authentic reward plus ``μ`` times the column on the
    split's held-out AlpacaEval pairs, and the pairwise accuracy (decided pairs; a tie counts half) at every ``μ``
    (``pair_accuracy_{form}_mu*``) and at the ``μ`` chosen on the validation stress set (``pair_accuracy_{form}``)."""
    idx, _, cross, _ = split_model(bench, seed, fold, examples, lr)
    texts = bench.alpaca.subset(idx["test"])
    start = time.perf_counter()
    column = {side: cross.margin(texts.prompt, getattr(texts, side)) for side in ("response_a", "response_b")}
    seconds = round(time.perf_counter() - start, 1)
    rows = []
    for row in chosen:
        c = cb.CONTENDERS[row["contender"]]
        rm, fitted, _, _ = cb.fit_split(bench, c, seed, fold)
        test = bench.pairs(bench.alpaca, "alpaca", c.representation, c.model.get("nuisance", "")).subset(idx["test"])
        with torch.no_grad():
            gap = rm.reward(test.prompt, test.response_a).reward - rm.reward(test.prompt, test.response_b).reward
        out = {"contender": row["contender"], "seed": seed, "fold": fold, "test_pairs": len(test),
               "column_seconds": seconds, "test_accuracy_authentic": fitted["test_accuracy_authentic"]}
        for tag, m in column_forms(column, row["sigma"]).items():
            for mu in POSTHOC_WEIGHTS:
                d = gap + mu * (m["response_a"] - m["response_b"])
                out[f"pair_accuracy_{tag}_mu{mu:g}"] = pairwise_metrics(torch.sigmoid(d).numpy(),
                                                                        test.label.cpu().numpy())["accuracy"]
            out[f"pair_accuracy_{tag}"] = out[f"pair_accuracy_{tag}_mu{row[f'weight_{tag}']:g}"]
        print({k: v for k, v in out.items() if not k.startswith("pair_accuracy_") or "_mu" not in k}, flush=True)
        rows.append(out)
    return rows


def accuracy_mean(rows: list[dict]) -> dict[str, dict]:
    """:func:`posthoc_accuracy`'s rows pooled per contender: the mean of every accuracy column, and for each form the
    chosen weight's accuracy paired with μ = 0 over the same fits (``pair_accuracy_{form}_minus_mu0``, mean and
    standard error, ``_se``, where there are two fits or more)."""
    mean = {}
    for c in dict.fromkeys(r["contender"] for r in rows):
        mine = [r for r in rows if r["contender"] == c]
        out = {k: round(float(np.mean([r[k] for r in mine])), 4)
               for k in mine[0] if k.startswith(("pair_accuracy_", "test_accuracy"))}
        for form in dict.fromkeys(k.split("_")[2] for k in mine[0] if k.startswith("pair_accuracy_")):
            d = np.array([r[f"pair_accuracy_{form}"] - r[f"pair_accuracy_{form}_mu0"] for r in mine])
            out[f"pair_accuracy_{form}_minus_mu0"] = round(float(d.mean()), 4)
            if len(d) > 1:
                out[f"pair_accuracy_{form}_minus_mu0_se"] = round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)
        mean[c] = dict(out, fits=len(mine))
    return mean


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--examples", type=int, default=8000, help="fine-tuning pairs (one pass, batch 16)")
    ap.add_argument("--lr", type=float, default=5e-5, help="AdamW's learning rate (linear decay to 0)")
    ap.add_argument("--out", default=None, help="results/coherence/<out>.json (order_cross_probe, order_cross_posthoc)")
    ap.add_argument("--objective", choices=OBJECTIVES, default="pairwise",
                    help="pairwise: which of two sentences follows a context; binary: adjacent pairs against others")
    ap.add_argument("--context", type=int, default=1, help="sentences of context before a candidate sentence")
    ap.add_argument("--posthoc", nargs="+", default=None, metavar="CONTENDER",
                    help="fit these contenders (compare_bt.py's names) and add mu times the fine-tuned model's "
                         "order margin to their reward (the pairwise objective, one sentence of context)")
    ap.add_argument("--pool", nargs="+", metavar="NAME", default=None,
                    help="no fitting: pool the rows of results/coherence/<NAME>.json files into --out")
    ap.add_argument("--posthoc-accuracy", metavar="NAME", default=None,
                    help="the pairwise accuracy on the held-out real pairs of results/coherence/<NAME>.json's "
                         "--posthoc rows (their folds among --folds), at every weight and the chosen one")
    args = ap.parse_args(argv)
    if args.pool:
        rows = [r for name in args.pool
                for r in json.loads((cb.RESULTS / "coherence" / f"{name}.json").read_text())["rows"]]
        if "pair_accuracy_raw" in rows[0]:  # --posthoc-accuracy rows
            cb.write_probe(args.out or "order_cross_accuracy", rows, accuracy_mean(rows), argv, script="order_cross_probe")
            return 0
        if "contender" in rows[0]:  # --posthoc rows
            cb.write_probe(args.out or "order_cross_posthoc", rows, pooled_posthoc(rows), argv, script="order_cross_probe")
            return 0
    else:
        torch.set_num_threads(2)
        bench = cb.Bench(pairs_per_instruction=10)
        if args.posthoc_accuracy:
            chosen = json.loads((cb.RESULTS / "coherence" / f"{args.posthoc_accuracy}.json").read_text())["rows"]
            rows = [r for fold in args.folds for seed in args.seeds
                    for r in posthoc_accuracy(bench, [c for c in chosen if (c["seed"], c["fold"]) == (seed, fold)],
                                              seed, fold, args.examples, args.lr)]
            cb.write_probe(args.out or "order_cross_accuracy", rows, accuracy_mean(rows), argv, script="order_cross_probe")
            return 0
        if args.posthoc:
            rows = [r for fold in args.folds for seed in args.seeds
                    for r in posthoc(bench, args.posthoc, seed, fold, args.examples, args.lr)]
            cb.write_probe(args.out or "order_cross_posthoc", rows, pooled_posthoc(rows), argv, script="order_cross_probe")
            return 0
        rows = [run(bench, seed, fold, args.examples, args.lr, args.objective, args.context)
                for fold in args.folds for seed in args.seeds]
    keys = [k for k, v in rows[0].items() if isinstance(v, float) and k not in ("lambda", "lr")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    for name in ("cross", "sum"):  # paired with the linear model over the same fits
        d = np.array([r[f"val_reorder_wins_{name}"] - r["val_reorder_wins_linear"] for r in rows])
        mean[f"val_reorder_wins_{name}_minus_linear"] = round(float(d.mean()), 4)
        if len(d) > 1:
            mean[f"val_reorder_wins_{name}_minus_linear_se"] = round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)
    cb.write_probe(args.out or "order_cross_probe", rows, mean, argv, script="order_cross_probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
