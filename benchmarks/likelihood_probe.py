"""What a small language model sees of junk, before any training. A probe, not a library feature.

For the stress set of the held-out (test) instructions of the coherence stage (fold 0, seeds 0 1 2: the same
answers and junk ``vrm stress`` builds), each statistic of the representation part ``likelihood``
(:mod:`vrm_pyro.likelihood`, here SmolLM2-135M-Instruct in bfloat16) is used alone as a reward, zero-shot: how
often does a junk answer score at or above the real answer it was made from? ``pmi`` is ``given_prompt - alone``.
The reward models of ``compare_bt.py`` learn a weighting of these beside the other parts; this shows what each
statistic can give them.

    python benchmarks/likelihood_probe.py --encoder .gpu/minilm --likelihood-model .gpu/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

writes ``results/coherence/likelihood_probe.json`` (also: how often the PMI is negative, per junk kind, for the
real answers and for the training pairs' answers). ``--order-gain`` adds the part ``likelihood_order``'s two
statistics (an answer's log-probability minus that of its sentences reordered; one more LM pass pair per text)
and writes ``likelihood_probe_order.json``. The statistics come from the embedding cache when
``compare_bt.py prepare --every-text`` has filled it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402
from vrm_pyro.likelihood import LIKELIHOOD_STATISTICS, LikelihoodScorer  # noqa: E402
from vrm_pyro.representations import response_features  # noqa: E402

STATISTICS = (*LIKELIHOOD_STATISTICS, "pmi")


ORDER_STATISTICS = ("order_gain_given_prompt", "order_gain_alone")


def statistics(scores: np.ndarray, order: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {name: scores[:, j] for j, name in enumerate(LIKELIHOOD_STATISTICS)}
    out["pmi"] = out["given_prompt"] - out["alone"]
    if order is not None:
        out.update({name: order[:, j] for j, name in enumerate(ORDER_STATISTICS)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--likelihood-model", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-response-tokens", type=int, default=None,
                    help="Another response window than the library's (a separate cache; results go to "
                         "likelihood_probe_r<N>.json).")
    ap.add_argument("--kinds", nargs="+", default=list(JUNK_KINDS), choices=list(JUNK_KINDS))
    ap.add_argument("--order-gain", action="store_true", help="Also the part likelihood_order's statistics "
                    "(results go to likelihood_probe_order.json; the library's window only).")
    args = ap.parse_args(argv)
    if args.order_gain and args.max_response_tokens:
        ap.error("--order-gain uses the library's window: drop --max-response-tokens")
    stats_run = STATISTICS + (ORDER_STATISTICS if args.order_gain else ())
    bench = cb.Bench(encoder=args.encoder, pairs_per_instruction=10, likelihood_model=args.likelihood_model)
    scorer = bench.encoder.likelihood
    if args.max_response_tokens:
        scorer = LikelihoodScorer(args.likelihood_model, dtype="bfloat16", cache_dir=bench.encoder.config.cache_dir,
                                  max_response_tokens=args.max_response_tokens)
    kinds_run = list(args.kinds)
    sp, sr, sj, sk = bench.stress_junk(kinds_run)
    real_of = dict(zip(bench.stress_prompts, bench.stress_real))
    per_seed = []
    for seed in args.seeds:
        _, (_, _, test) = cb.split_rows(bench, seed, 0)
        sel = [i for i, p in enumerate(sp) if p in test]
        prompts, junk_texts = [sp[i] for i in sel], [sj[i] for i in sel]
        real_texts = [real_of[p] for p in prompts]

        def order(texts: list[str], prompts: list[str] = prompts) -> np.ndarray | None:
            if not args.order_gain:
                return None
            return response_features(bench.encoder, prompts, texts, spec="likelihood_order").numpy()

        junk = statistics(scorer.score(prompts, junk_texts).numpy(), order(junk_texts))
        real = statistics(scorer.score(prompts, real_texts).numpy(), order(real_texts))
        kinds = np.array([sk[i] for i in sel])
        row = {"seed": seed, "n_per_kind": int(np.sum(kinds == kinds[0]))}
        for stat in stats_run:
            wins = junk[stat] >= real[stat]
            row[stat] = {k: float(wins[kinds == k].mean()) for k in kinds_run}
        # how often the PMI is negative (what the likelihood_gate part keeps): junk, the real answers, and the
        # answers of the seed's training pairs
        idx, _ = cb.split_rows(bench, seed, 0)
        train = bench.alpaca.subset(idx["train"])
        answers = statistics(scorer.score(train.prompt + train.prompt, train.response_a + train.response_b).numpy())
        row["pmi_below_zero"] = {**{k: float((junk["pmi"][kinds == k] < 0).mean()) for k in kinds_run},
                                 "real": float((real["pmi"] < 0).mean()),
                                 "training_answers": float((answers["pmi"] < 0).mean())}
        per_seed.append(row)
    mean = {stat: {k: float(np.mean([r[stat][k] for r in per_seed])) for k in kinds_run} for stat in stats_run}
    mean["pmi_below_zero"] = {k: float(np.mean([r["pmi_below_zero"][k] for r in per_seed]))
                              for k in per_seed[0]["pmi_below_zero"]}
    suffix = f"_r{args.max_response_tokens}" if args.max_response_tokens else "_order" if args.order_gain else ""
    out = cb.RESULTS / "coherence" / f"likelihood_probe{suffix}.json"
    out.write_text(json.dumps({"command": "python benchmarks/likelihood_probe.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "likelihood_identity": scorer.identity,
        "junk_wins_mean_over_seeds": mean, "per_seed": per_seed}, indent=1) + "\n")
    print(f"{'statistic':<18}" + "".join(f"{k[:12]:>13}" for k in kinds_run))
    for stat in stats_run:
        print(f"{stat:<18}" + "".join(f"{mean[stat][k]:>13.3f}" for k in kinds_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
