"""Does the authentic reward pick better than chance at best-of-11, on validation as on the held-out instructions?

    python benchmarks/bon_chance.py --pool coherence_r23 coherence_r24 coherence_r24s coherence_r25 coherence_r26 \
        coherence_r27 --folds 0 1 2 3 --seeds 0 1 2 3 4 5 --contenders NAME ... --out coherence_r27/bon_chance

The stages' rows record the reward's best-of-11 gold on the validation instructions (``val_bon_<gold>_mean``) but,
before round 27, not what picking at random scores there. This recomputes it per (seed, fold) from the folds
themselves (``shared_data.instruction_folds``, the split every stage uses; ``bon_<gold>_random`` is the mean gold
of an instruction's samples, :func:`compare_bt.reference_picks`) and prints, per contender, the reward's
best-of-11 minus the random pick's on validation and held out, raw and length-controlled: the mean over fits ± its
standard error, and on how many fits the reward picks above chance. The held-out random pick is recomputed too and
checked against the rows' own ``bon_<gold>_random`` (a mismatch means the folds here are not the stage's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coherence_table import pooled_rows  # noqa: E402
from shared_data import RESULTS, command_line, write_result  # noqa: E402

GOLDS = ("raw", "lc")


def random_picks(seeds: list[int], folds: list[int]) -> dict[tuple[int, int], dict]:
    """``(seed, fold) -> {"val_bon_raw_random", "val_bon_lc_random", "bon_raw_random", "bon_lc_random"}`` from the
    AlpacaEval folds and the best-of-N dev set, as ``compare_bt.py run`` splits them."""
    from compare_bt import FOLDS, reference_picks
    from shared_data import best_of_n_dev, instruction_folds, load_pairs_file

    from vrm_pyro.hacking import fit_length_effect

    alpaca = load_pairs_file("alpaca")
    bon = best_of_n_dev(fit_length_effect(alpaca))
    instructions = sorted(set(alpaca.prompt))
    out = {}
    for seed in seeds:
        splits = instruction_folds(instructions, FOLDS, seed)
        for fold in folds:
            _, va, te = splits[fold]
            picks = {}
            for prefix, part in (("val_", va), ("", te)):
                keep = [i for i, p in enumerate(bon.instructions) if p in part]
                picks.update({prefix + k: v for k, v in reference_picks(bon, keep).items() if k.endswith("_random")})
            out[seed, fold] = picks
    return out


def chance_table(df, picks: dict[tuple[int, int], dict], contenders: list[str]) -> str:
    """Markdown: per contender and gold, the reward's best-of-11 minus the random pick's, on validation and held
    out (mean ± SE over fits; fits above chance). Refuses held-out random picks that differ from the rows'."""
    stale = [(r.seed, r.fold) for r in df.itertuples() if abs(picks[r.seed, r.fold]["bon_raw_random"]
                                                               - r.bon_raw_random) > 1e-9]
    if stale:
        raise SystemExit(f"bon_chance.py: the held-out random pick of (seed, fold) {stale[0]} differs from the rows': "
                         "these folds are not the stage's")
    head = ["contender", "fits"] + [f"{where} {g}: reward − random" for where in ("val", "held out") for g in GOLDS]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in contenders:
        rows = df[df["contender"] == c]
        cells = []
        for prefix in ("val_", ""):
            for g in GOLDS:
                d = np.array([getattr(r, f"{prefix}bon_{g}_mean") - picks[r.seed, r.fold][f"{prefix}bon_{g}_random"]
                              for r in rows.itertuples()])
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                cells.append(f"{d.mean():+.4f} ± {se:.4f} ({(d > 0).sum()} of {len(d)} above)")
        out.append(f"| `{c}` | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", nargs="+", required=True, metavar="STAGE", help="The stages whose rows.jsonl to read.")
    ap.add_argument("--contenders", nargs="+", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, required=True)
    ap.add_argument("--folds", nargs="+", type=int, required=True)
    ap.add_argument("--out", default=None, help="Also write results/<out>.md (with the command).")
    args = ap.parse_args(argv)
    df = pooled_rows(args.pool, args.seeds, args.contenders, args.folds)
    text = chance_table(df, random_picks(args.seeds, args.folds), args.contenders)
    if args.out:
        write_result(RESULTS / args.out, command_line("bon_chance", argv), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
