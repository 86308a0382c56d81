"""Zero-shot, how well does each column of the representation part ``sentence_flow`` tell an answer from its own
sentences shuffled? A probe, not a library feature.

For every stress answer (the best dev answer of each of the 407 instructions) and its ``shuffled_sentences`` junk
(as ``vrm stress`` builds it, the layout kept), each column of :func:`vrm_pyro.representations.sentence_flow` in
the direction that favours the real answer on average: the share of junk at or above its original (the stress
measure; ties count as wins). ``all`` counts every answer; ``three_or_more_sentences`` only answers where every
column is defined (``adjacent_similarity`` and ``lead_centrality`` are 0 for two sentences, a tie). Read beside
the reward models' 0.09-0.14 on the same kind: a column that ranks the shuffle below the original far more often
would be a signal the heads fail to use; one that does not is no help. Every instruction, no training, no fold.

    python benchmarks/flow_probe.py

writes ``results/coherence_r11/flow_probe.json`` (the embedding cache makes it cheap after a stage has run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.representations import SENTENCE_FLOW, sentence_flow, sentence_order, sentences  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default=None, help="Encoder model directory (default: the bundled MiniLM).")
    args = ap.parse_args(argv)
    bench = cb.Bench(encoder=args.encoder, pairs_per_instruction=10)
    prompts, real, junk, _ = bench.stress_junk(["shuffled_sentences"])
    x = bench.encoder.encode(prompts)
    flow_real = sentence_flow(bench.encoder, real, prompt_emb=x)
    flow_junk = sentence_flow(bench.encoder, junk, prompt_emb=x)
    # sentence_order read by its best single direction would need training; the mean difference is its zero-shot
    # stand-in: the direction from the shuffles' mean to the originals' (fitted and scored on the same answers,
    # so an optimistic bound for a linear head on o(y) alone)
    o_real, o_junk = sentence_order(bench.encoder, real), sentence_order(bench.encoder, junk)
    direction = (o_real - o_junk).mean(0)
    several = torch.tensor([len(sentences(r)) >= 3 for r in real])
    out = {"command": "python benchmarks/flow_probe.py" + (f" --encoder {args.encoder}" if args.encoder else ""),
           "answers": len(real), "answers_of_three_or_more_sentences": int(several.sum()), "junk_wins": {}}
    for j, name in enumerate(SENTENCE_FLOW):
        gap = flow_real[:, j] - flow_junk[:, j]
        sign = 1.0 if gap.mean() >= 0 else -1.0
        out["junk_wins"][name] = {"direction": "higher is real" if sign > 0 else "lower is real",
                                  "all": round(float((sign * gap <= 0).float().mean()), 3),
                                  "three_or_more_sentences": round(float((sign * gap[several] <= 0).float().mean()), 3)}
    gap = (o_real - o_junk) @ direction
    out["junk_wins"]["sentence_order (mean-difference direction, in-sample)"] = {
        "all": round(float((gap <= 0).float().mean()), 3),
        "three_or_more_sentences": round(float((gap[several] <= 0).float().mean()), 3)}
    cb.write_result("coherence_r11", "flow_probe", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
