"""Can more hashed features lift the linear sentence-order model? A probe of three feature families.

After round 29 the one junk kind over 2% held out is the answer's own sentences shuffled (VRM 0.068, BT 0.072 over
24 fits), and on the shuffles that keep the answer's bag the reward errs where its order channel does, the linear
:class:`vrm_pyro.order_model.SentenceOrderModel` (``order_score``). This probe fits that model as ``vrm train`` does
(``vrm_pyro.config.TRAIN_RECIPE``: sentence words, L2 1e-4, two reorderings per answer; on every answer of the split's
training instructions, as the benchmark's default ``+oswa`` fits it, or with ``--sampled`` on the sampled pairs' answers)
with each family below added to its hashed features, and measures it alone:

- ``mentions``: the entity-grid idea without a parser. For every content word said in two or more sentences, the
  words just before and after its *first* mention and those around its later mentions, as separate hashed features
  (a noun introduced with "a", an acronym defined in brackets, a name given in full at first and short after),
  and the share of such words first said in the first sentence;
- ``transitions``: the first words of adjacent sentences as a pair (``Firstly`` > ``Secondly``, ``Sure`` > ``Here``),
  and the last word of a sentence with the first of the next;
- ``paragraphs``: every word of a paragraph's first and of its last sentence (a shuffle that keeps the layout moves
  sentences across paragraph openings and closings, which the model's global positions do not see).

Each row: ``val_reorder_wins``, the share of the validation instructions' answers' reorderings (two each, made as the
fit makes them) scored at or above their original, what to choose by; ``shuffles``, the same for the held-out stress
set's sentence shuffles (one per test instruction, 81–82 per fold); ``other_at_or_above_KIND``, what a positive weight
on the column rewards in the other junk kinds. Text only, no encoder: about 100 s per fit on every answer on 2 cores
(13–17 s on the sampled answers).

    python benchmarks/order_feature_probe.py --folds 0 1 2 3 --seeds 0

writes ``results/coherence/order_feature_probe.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402
from order_model_probe import (  # noqa: E402
    default_fit,
    distinct_answers,
    reorder_wins,
    split_answers,
    stress_scores,
)

from vrm_pyro.covariates import STOPWORDS, WORD, sentences, unmarked  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.order_model import SentenceOrderModel  # noqa: E402

_PARAGRAPH = re.compile(r"\n\s*\n")


def _adder(out: dict[int, float], buckets: int):
    def add(key: str, value: float) -> None:
        b = zlib.crc32(key.encode()) % buckets
        out[b] = out.get(b, 0.0) + value
    return add


def mentions(response: str, add) -> None:
    """First and later mentions of the content words said in two or more sentences (see the module docstring)."""
    said = [WORD.findall(unmarked(s).lower()) for s in sentences(response)]
    where: dict[str, set[int]] = {}
    for i, words in enumerate(said):
        for w in words:
            if len(w) >= 3 and w not in STOPWORDS:
                where.setdefault(w, set()).add(i)
    repeated = {w for w, at in where.items() if len(at) >= 2}
    if not repeated:
        return
    first, later, seen = [], [], set()
    for words in said:
        for j, w in enumerate(words):
            if w in repeated:
                around = (words[j - 1] if j else "^", words[j + 1] if j + 1 < len(words) else "$")
                (later if w in seen else first).append(around)
                seen.add(w)
    for tag, found in (("m1", first), ("m2", later)):
        for before, after in found:
            add(f"{tag}<{before}", 1.0 / len(found))
            add(f"{tag}>{after}", 1.0 / len(found))
    add("m1:first_sentence", sum(min(where[w]) == 0 for w in repeated) / len(repeated))


def transitions(response: str, add) -> None:
    """The first words of adjacent sentences as a pair, and a sentence's last word with the next one's first."""
    said = [WORD.findall(unmarked(s).lower()) or [""] for s in sentences(response)]
    n = len(said)
    for a, b in zip(said, said[1:]):
        add(f"ff:{a[0]}>{b[0]}", 1.0 / (n - 1))
        add(f"lf:{a[-1]}>{b[0]}", 1.0 / (n - 1))


def paragraphs(response: str, add) -> None:
    """Every word of each paragraph's first and (where it has two or more) last sentence."""
    blocks = [p for p in _PARAGRAPH.split(response) if p.strip()]
    if len(blocks) < 2:
        return
    units = []
    for block in blocks:
        said = [sorted(set(WORD.findall(unmarked(s).lower()))) for s in sentences(block)]
        units += [(j == 0, j == len(said) - 1 and len(said) > 1, words) for j, words in enumerate(said)]
    for opens, closes, words in units:
        for tag, on in (("pf", opens), ("pl", closes)):
            if on and words:
                for w in words:
                    add(f"{tag}:{w}", 4.0 / (len(units) * len(words)))


FAMILIES = {"mentions": mentions, "transitions": transitions, "paragraphs": paragraphs}


def model_with(families: tuple[str, ...]) -> type[SentenceOrderModel]:
    """:class:`SentenceOrderModel` whose hashed features also hold ``families`` (the fit and score are its own)."""

    class Extended(SentenceOrderModel):
        def features(self, response):
            out = super().features(response)
            if len(sentences(response)) >= 2:
                for name in families:
                    FAMILIES[name](response, _adder(out, self.buckets))
            return out

    return Extended


def run(bench: cb.Bench, seed: int, fold: int, families: tuple[str, ...], all_answers: bool = True) -> dict:
    idx, (train_instructions, _, test) = cb.split_rows(bench, seed, fold)
    prompts, responses = distinct_answers(bench.order_training(idx["train"], train_instructions, all_answers))
    start = time.perf_counter()
    model = default_fit(prompts, responses, model_with(families))
    seconds = time.perf_counter() - start
    kinds, real, junk = stress_scores(bench, model, test)
    kinds, wins = np.array(kinds), (junk >= real).numpy()
    row = {"seed": seed, "fold": fold, "families": "+".join(families) or "none", "all_answers": all_answers,
           "train_answers": len(responses), "fit_seconds": round(seconds, 1),
           "val_reorder_wins": reorder_wins(model, *split_answers(bench, idx["validation"]), seed),
           "shuffles": float(wins[kinds == "shuffled_sentences"].mean()),
           **{f"other_at_or_above_{k}": float(wins[kinds == k].mean()) for k in JUNK_KINDS if k != "shuffled_sentences"}}
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--variants", nargs="+", default=["none", "mentions", "transitions", "paragraphs",
                                                       "mentions+transitions+paragraphs"],
                    help="feature families added to the default's, '+'-joined; 'none' is the default order model")
    ap.add_argument("--sampled", action="store_true",
                    help="fit on the sampled pairs' answers (10 per instruction), not every answer of the instructions")
    ap.add_argument("--out", default="order_feature_probe", help="results/coherence/<out>.json")
    args = ap.parse_args(argv)
    variants = [tuple(f for f in v.split("+") if f != "none") for v in args.variants]
    bad = sorted({f for v in variants for f in v} - set(FAMILIES))
    if bad:
        ap.error(f"--variants: unknown families {bad}; choose from {', '.join(FAMILIES)} ('+'-joined) or none")
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    rows = [run(bench, seed, fold, v, not args.sampled) for fold in args.folds for seed in args.seeds for v in variants]
    keys = [k for k in rows[0] if k not in ("seed", "fold", "families", "all_answers")]
    mean = {}
    for v in variants:
        name = "+".join(v) or "none"
        mine = [r for r in rows if r["families"] == name]
        base = [r for r in rows if r["families"] == "none"]
        mean[name] = {k: round(float(np.mean([r[k] for r in mine])), 4) for k in keys}
        if base and name != "none":  # paired over the same (seed, fold) fits
            d = np.array([m["val_reorder_wins"] - b["val_reorder_wins"] for m, b in zip(mine, base)])
            mean[name]["val_reorder_wins_minus_none"] = round(float(d.mean()), 4)
            mean[name]["val_reorder_wins_minus_none_se"] = round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)
    cb.write_probe(args.out, rows, mean, argv, script="order_feature_probe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
