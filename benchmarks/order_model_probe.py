"""How well does the sentence-order model of the part ``order_score`` rank on its own? A probe beside
``order_ceiling.py`` (whose order models read the encoder's sentence embeddings).

:class:`vrm_pyro.order_model.SentenceOrderModel` is fitted as ``vrm train`` fits it
(:func:`vrm_pyro.experiment.fit_order_model`: the training instructions' answers against two reorderings each,
self-supervised), then scores the stress set's sentence-shuffled answers of the held-out (test) instructions
against their originals, as ``vrm stress`` builds them. ``junk_wins``: the share of shuffles scored at or above
their original (82 test instructions per seed and fold); ``order_at_or_above_KIND``: the same for the other junk kinds
(what a reward head's weight on the column rewards in them). Text only, no encoder: about 40 s per fit on 2 cores.

    python benchmarks/order_model_probe.py --folds 0 --seeds 0 1 2

writes ``results/coherence/order_model_probe.json``. ``--reorderings R ...``, ``--l2 L ...`` (and ``--word-bigrams``: each
with and without adjacent word pairs; ``--sentence-words``: each with and without every word of a sentence by position; ``--all-answers``: on every answer of the training
instructions) fit every combination of the fit's options instead of its defaults (``--out NAME`` for the file); each row then also has
``val_reorder_wins``: the share of the *validation* instructions' answers (every distinct answer of their pairs, two
reorderings each, as the fit makes them) scored at or above their original, the measure to choose options by (the
stress set has one answer per instruction, 32 on validation; this has some 600 reorderings).
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

from vrm_pyro.config import TRAIN_RECIPE  # noqa: E402
from vrm_pyro.experiment import fit_order_model  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.order_model import SentenceOrderModel, parse_order_features  # noqa: E402


def reorderings(prompts: list[str], responses: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, answers, reorderings)``: two reorderings per answer, made as the order model's fit makes them."""
    shuffle, rng = JUNK_KINDS["shuffled_sentences"], np.random.default_rng([seed, 11])
    rows = [(p, r, s) for p, r in zip(prompts, responses) for s in (shuffle(p, r, "", rng) for _ in range(2)) if s != r]
    return tuple(map(list, zip(*rows)))


def reorder_wins(model, prompts: list[str], responses: list[str], seed: int) -> float:
    """The share of :func:`reorderings` scored at or above the answer."""
    p, r, s = reorderings(prompts, responses, seed)
    return float((model.score(p, s) >= model.score(p, r)).float().mean())


def distinct_answers(pairs) -> tuple[list[str], list[str]]:
    """The distinct (prompt, answer) texts of preference ``pairs``, in first-seen order, as two lists."""
    texts = dict.fromkeys((p, r) for p, a, b in zip(pairs.prompt, pairs.response_a, pairs.response_b) for r in (a, b))
    return [p for p, _ in texts], [r for _, r in texts]


def split_answers(bench: cb.Bench, rows: list[int]) -> tuple[list[str], list[str]]:
    """The distinct (prompt, answer) texts of the AlpacaEval pairs ``rows``, as two lists."""
    return distinct_answers(bench.alpaca.subset(rows))


def default_fit(prompts: list[str], responses: list[str], model: type = SentenceOrderModel) -> SentenceOrderModel:
    """``model`` fitted with ``vrm train``'s order options (:data:`vrm_pyro.config.TRAIN_RECIPE`), seed 0."""
    options = {**parse_order_features(TRAIN_RECIPE["order_features"]), "l2": TRAIN_RECIPE["order_l2"]}
    return model.fit(prompts, responses, seed=0, **options)


def stress_scores(bench: cb.Bench, model, instructions: set[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The stress set's rows of ``instructions`` (every junk kind once): ``(kinds, order score of the real answer,
    order score of the junk)``."""
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS))
    rows = [i for i, p in enumerate(sp) if p in instructions]
    real = model.score([sp[i] for i in rows], [sr[i] for i in rows])
    junk = model.score([sp[i] for i in rows], [sj[i] for i in rows])
    return [sk[i] for i in rows], real, junk


def run(bench: cb.Bench, seed: int, fold: int, options: dict | None = None, all_answers: bool = False) -> dict:
    idx, (train_instructions, _, test) = cb.split_rows(bench, seed, fold)
    start = time.perf_counter()
    if options is None:  # the defaults, memoised as compare_bt fits them
        contender = cb.Contender({}, representation="order_score", order_all_answers=all_answers)
        bench.use_split_order_model(contender, seed, fold, idx["train"], train_instructions)
    else:
        train = bench.order_training(idx["train"], train_instructions, all_answers)
        fit_order_model(bench.encoder, {"train": train}, seed=0, representation="order_score", **options)
    seconds = time.perf_counter() - start
    model = bench.encoder.order_model
    kinds, real, junk = stress_scores(bench, model, test)
    shuffled = torch.tensor([k == "shuffled_sentences" for k in kinds])
    row = {"seed": seed, "fold": fold, **(options or {}), "all_answers": all_answers, "test_shuffled": int(shuffled.sum()),
           "fit_seconds": round(seconds, 1),
           "junk_wins": float((junk >= real)[shuffled].float().mean()),
           "mean_gap": float((real - junk)[shuffled].mean())}
    # every other kind too: how often the order model alone scores the junk at or above the real answer (what a
    # head's weight on the column rewards in it)
    for kind in JUNK_KINDS:
        if kind != "shuffled_sentences":
            mine = torch.tensor([k == kind for k in kinds])
            row[f"order_at_or_above_{kind}"] = float((junk >= real)[mine].float().mean())
    if options is not None:
        row["val_reorder_wins"] = reorder_wins(model, *split_answers(bench, idx["validation"]), seed)
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--folds", nargs="+", type=int, default=[0])
    ap.add_argument("--reorderings", nargs="+", type=int, default=None, help="fit options to sweep (with --l2)")
    ap.add_argument("--l2", nargs="+", type=float, default=None, help="fit options to sweep (with --reorderings)")
    ap.add_argument("--word-bigrams", action="store_true",
                    help="also fit each variant with adjacent word pairs among the features (fit option word_bigrams)")
    ap.add_argument("--sentence-words", action="store_true",
                    help="also fit each variant with every word of a sentence by position (fit option sentence_words)")
    ap.add_argument("--all-answers", action="store_true",
                    help="fit on every answer of the training instructions, not only the sampled pairs' answers")
    ap.add_argument("--out", default="order_model_probe", help="results/coherence/<out>.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    if args.reorderings is None and args.l2 is None and not args.word_bigrams and not args.sentence_words:
        variants = [None]
    else:
        variants = [{"reorderings": r, "l2": l2, "word_bigrams": w, "sentence_words": sw} for r in args.reorderings or [2]
                    for l2 in args.l2 or [1e-3] for w in ((False, True) if args.word_bigrams else (False,))
                    for sw in ((False, True) if args.sentence_words else (False,))]
    rows = [run(bench, seed, fold, v, args.all_answers) for fold in args.folds for seed in args.seeds for v in variants]
    keys = ("junk_wins", "mean_gap", "fit_seconds") + (("val_reorder_wins",) if variants != [None] else ()) + tuple(
        f"order_at_or_above_{k}" for k in JUNK_KINDS if k != "shuffled_sentences")
    mean = {}
    for v in variants:
        mine = [r for r in rows if all(r.get(k) == x for k, x in (v or {}).items())]
        name = "default" if v is None else f"reorderings={v['reorderings']},l2={v['l2']:g}" + (
            ",word_bigrams" if v["word_bigrams"] else "") + (",sentence_words" if v["sentence_words"] else "")
        mean[name] = {k: round(float(np.mean([r[k] for r in mine])), 4) for k in keys}
    cb.write_probe(args.out, rows, mean if variants != [None] else mean["default"], argv, script="order_model_probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
