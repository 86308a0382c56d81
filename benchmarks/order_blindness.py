"""How far does a sentence shuffle move each part of the representation? A probe for the order-blind base (round 19).

A reward compares an answer with its own sentence shuffle through every part of ``h(x, y)``. The parts meant to see
order (``order``, ``discourse``, ``sentence_order``) should move; every other part that moves adds noise to that
comparison. For every sentence-shuffled answer of the stress set (the wide one: the best and a random dev answer of
every instruction, as ``compare_bt`` builds it; answers of one sentence left out, whose "shuffle" is their words),
per part: ``moved`` the share of shuffles that change it at all (any column by more than 1e-6), ``relative_change``
the mean and median of ``|h(shuffle) - h(answer)|`` over the part's spread across the answers,
``sqrt(mean |h(answer) - mean h(answer)|^2)`` (1: a shuffle moves it as far as another answer would, on average); and
``same_sentences`` the share of shuffles that
split back into the answer's sentences (:func:`vrm_pyro.covariates.sentences`), ``same_bag`` the share that give the
answer's bag of sentences (:func:`vrm_pyro.covariates.bag_sentences`), where the ``bag`` parts cannot move.
Text and the embedding cache only (a minute on 2 cores once the cache holds the sentences):

    python benchmarks/order_blindness.py

writes ``results/coherence_r19/order_blindness.json`` and ``.md`` (``--out NAME`` under ``results/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.covariates import bag_sentences, sentences  # noqa: E402
from vrm_pyro.representations import response_features  # noqa: E402

PARTS = ("response_tokens", "response", "interaction", "statistics", "prompt_copy", "line_ending", "order", "discourse",
         "sentence_order", "sentence_bag", "bag_interaction", "bag_statistics")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="coherence_r19/order_blindness")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bench = cb.Bench(pairs_per_instruction=10)
    prompts, real, junk, _ = bench.stress_junk(["shuffled_sentences"], True)
    keep = [i for i, r in enumerate(real) if len(sentences(r)) >= 2]
    prompts, real, junk = ([x[i] for i in keep] for x in (prompts, real, junk))
    same = sum(sorted(sentences(r)) == sorted(sentences(j)) for r, j in zip(real, junk)) / len(real)
    same_bag = sum(bag_sentences(r) == bag_sentences(j) for r, j in zip(real, junk)) / len(real)
    rows = []
    for part in PARTS:
        a = response_features(bench.encoder, prompts, real, spec=part)
        b = response_features(bench.encoder, prompts, junk, spec=part)
        spread = (a - a.mean(0)).pow(2).sum(-1).mean().sqrt().clamp_min(1e-9)
        change = (a - b).norm(dim=-1) / spread
        rows.append({"part": part, "moved": float(((a - b).abs() > 1e-6).any(-1).float().mean()),
                     "relative_change_mean": float(change.mean()), "relative_change_median": float(change.median())})
    out = Path(__file__).resolve().parent / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"shuffles": len(real), "same_sentences": same, "same_bag": same_bag, "parts": rows}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"{len(real)} sentence shuffles of answers with two or more sentences (the wide stress set); "
             f"{same:.3f} of them split back into the answer's sentences (`sentences`), {same_bag:.3f} give its bag "
             "of sentences (`bag_sentences`).", "",
             "| part | moved | change / spread across answers (mean) | (median) |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r['part']}` | {r['moved']:.3f} | {r['relative_change_mean']:.4f} | {r['relative_change_median']:.4f} |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
