"""Why the authentic reward picks below chance at best-of-11 (a probe, not a timed test): its ties to length within
an instruction's samples, against the judge's gold.

    python benchmarks/bon_length.py --contenders NAME ... --seeds 0 1 2 --out coherence_r27/bon_length

For each contender, seed and fold (AlpacaEval, 10 pairs per instruction, ``--folds``, fold 0 by default, refitted
as ``compare_bt.py`` fits it),
every held-out instruction's best-of-N dev samples are scored; per instruction, the Spearman correlation with the
samples' length (characters) of: the authentic reward, its validity gate's term (``log σ`` summed over the factors;
0 without a gate), the rest of it (the quality score), the judge-facing total (with ``γ·φ``), and the judge's raw
and length-controlled gold. Then, for the pick of each score (its argmax), the pick's length rank among the samples
(0 the shortest, 1 the longest) and its gold, raw and length-controlled, beside picking at random. Means over
instructions, then over fits. Writes ``results/<out>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402
from shared_data import RESULTS, command_line, write_result  # noqa: E402

SCORES = ("authentic", "gate", "quality", "total")


def within(scores: list[np.ndarray], other: list[np.ndarray]) -> float:
    """The mean over instructions of the Spearman correlation of ``scores`` and ``other`` within each (instructions
    where either is constant left out)."""
    rho = [spearmanr(s, o).statistic for s, o in zip(scores, other) if np.ptp(s) > 0 and np.ptp(o) > 0]
    return float(np.mean(rho))


def probe(bench: cb.Bench, name: str, seed: int, fold: int = 0) -> dict:
    """One contender refitted on (seed, fold) and its best-of-N picks on the held-out instructions."""
    c = cb.CONTENDERS[name]
    rm, _, _, (_, _, te) = cb.fit_split(bench, c, seed, fold)
    bon = bench.bon
    keep, counts, flat_r, (p, h, phi) = bench.bon_texts(te, c.representation, rm.config.nuisance)
    with torch.no_grad():
        authentic = rm.reward(p, h, seed=seed).reward.numpy()
        gate = (rm.model.gate_moments(rm.guide, p, rm.transform.features(h), 32, seed)[0].numpy()
                if rm.model.gate is not None else np.zeros_like(authentic))
        total = authentic + (rm.nuisance_reward(p, phi).numpy() if rm.model.nuisance is not None else 0.0)
    split = lambda x: cb._split(np.asarray(x, float), counts)  # noqa: E731
    scores = {"authentic": split(authentic), "gate": split(gate), "quality": split(authentic - gate),
              "total": split(total)}
    length = split([len(r) for r in flat_r])
    gold = {"raw": [bon.gold[i] for i in keep], "lc": [bon.gold_lc[i] for i in keep]}
    out = {"contender": name, "seed": seed, "fold": fold, "instructions": len(keep)}
    for s in SCORES:
        out[f"rho_length_{s}"] = within(scores[s], length)
        picks = [int(np.argmax(x)) for x in scores[s]]
        out[f"pick_length_rank_{s}"] = float(np.mean([(np.argsort(np.argsort(L))[k]) / (len(L) - 1)
                                                      for k, L in zip(picks, length)]))
        for g, gs in gold.items():
            out[f"pick_gold_{g}_{s}"] = float(np.mean([x[k] for k, x in zip(picks, gs)]))
    for g, gs in gold.items():
        out[f"rho_length_gold_{g}"] = within(gs, length)
        out[f"rho_authentic_gold_{g}"] = within(scores["authentic"], gs)
        out[f"random_gold_{g}"] = float(np.mean([x.mean() for x in gs]))
    return out


def render(rows: list[dict]) -> str:
    by = {}
    for r in rows:
        by.setdefault(r["contender"], []).append(r)
    mean = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    out = []
    for name, rs in by.items():
        folds = sorted({r.get("fold", 0) for r in rs})
        out += [f"`{name}` ({len(rs)} fits: seeds {', '.join(map(str, sorted({r['seed'] for r in rs})))} × folds "
                f"{', '.join(map(str, folds))}; {min(r['instructions'] for r in rs)}–"
                f"{max(r['instructions'] for r in rs)} held-out instructions each)", "",
                "| score | ρ with length, within an instruction | its pick's length rank (0 shortest, 1 longest) | "
                "its pick's gold, raw | its pick's gold, LC |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {s} | {mean(rs, f'rho_length_{s}'):+.3f} | {mean(rs, f'pick_length_rank_{s}'):.3f} | "
                f"{mean(rs, f'pick_gold_raw_{s}'):.3f} | {mean(rs, f'pick_gold_lc_{s}'):.3f} |" for s in SCORES]
        out += [f"| the judge's gold, raw | {mean(rs, 'rho_length_gold_raw'):+.3f} | | | |",
                f"| the judge's gold, LC | {mean(rs, 'rho_length_gold_lc'):+.3f} | | | |",
                f"| picking at random | | 0.500 | {mean(rs, 'random_gold_raw'):.3f} | {mean(rs, 'random_gold_lc'):.3f} |",
                "", f"The authentic reward's ρ with the gold within an instruction: raw "
                f"{mean(rs, 'rho_authentic_gold_raw'):+.3f}, LC {mean(rs, 'rho_authentic_gold_lc'):+.3f}."]
        for g in ("raw", "lc"):
            d = np.array([r[f"pick_gold_{g}_quality"] - r[f"pick_gold_{g}_authentic"] for r in rs])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            above = sum(r[f"pick_gold_{g}_authentic"] > r[f"random_gold_{g}"] for r in rs)
            out.append(f"Gold {g}: the quality score's pick minus the authentic reward's {d.mean():+.4f} ± {se:.4f} "
                       f"(higher on {(d > 0).sum()} fits, lower on {(d < 0).sum()}); the authentic reward's pick "
                       f"above picking at random on {above} of {len(rs)} fits.")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contenders", nargs="+", required=True, choices=list(cb.CONTENDERS), metavar="CONTENDER",
                    help="compare_bt.py list names them")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--folds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", default="coherence_r27/bon_length", help="results/<stage>/<name> (.json and .md)")
    args = ap.parse_args(argv)
    bench = cb.Bench(pairs_per_instruction=10)
    rows = [probe(bench, name, seed, fold) for name in args.contenders for seed in args.seeds for fold in args.folds]
    text = render(rows)
    write_result(RESULTS / args.out, command_line("bon_length", argv), text, {"rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
