"""Best-of-11 gold of the authentic reward against picking at random, stage by stage (what rounds of the coherence
work did to it).

    python benchmarks/bon_history.py --out coherence_r27/bon_history

reads every ``results/<stage>/rows.jsonl`` with AlpacaEval fits that record ``bon_*_random`` (full-data fits only,
not learning-curve points) and prints one row per stage and set of fits (contenders fitted on the same (seed, fold)
pairs, so on the same held-out instructions): its contenders, the fits each has, the authentic reward's best-of-11
gold (``bon_<gold>_mean``: the reward without the judge's nuisance term picks one of each instruction's eleven
samples), lowest and highest over those contenders (each the mean over its fits), picking at random
(``bon_<gold>_random``, the mean over the same fits) and how many contenders pick better than it, raw and
length-controlled. Stages are in the order of their directory names, which is not the order of the rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import RESULTS, command_line, write_result  # noqa: E402

GOLDS = ("raw", "lc")


def stage_rows(path: Path):
    """The AlpacaEval full-data fits of one ``rows.jsonl`` that record the random pick (a DataFrame, maybe empty)."""
    import pandas as pd

    df = pd.read_json(path, lines=True)
    if "bon_raw_random" not in df:
        return df.iloc[0:0]
    if "dataset" in df:
        df = df[df["dataset"].fillna("alpaca_eval") == "alpaca_eval"]
    if "size" in df:
        df = df[df["size"].isna()]
    return df.dropna(subset=["bon_raw_mean", "bon_raw_random"])


def span(values) -> str:
    """``0-3`` for a run of integers, else the values joined by commas."""
    v = sorted(set(int(x) for x in values))
    return f"{v[0]}–{v[-1]}" if len(v) > 2 and v == list(range(v[0], v[-1] + 1)) else ",".join(map(str, v))


def history(results: Path = RESULTS, stages: list[str] | None = None) -> str:
    """Markdown, one row per stage and set of fits (see the module docstring)."""
    paths = sorted(results.glob("*/rows.jsonl")) if stages is None else [results / s / "rows.jsonl" for s in stages]
    out = ["| stage | fits (folds × seeds) | contenders | authentic, raw (lowest – highest) | random, raw | "
           "above random, raw | authentic, LC (lowest – highest) | random, LC | above random, LC |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        if not path.exists():
            raise SystemExit(f"bon_history.py: no {path}")
        df = stage_rows(path)
        if df.empty:
            continue
        fit_set = {c: tuple(sorted(zip(g["seed"], g["fold"]))) for c, g in df.groupby("contender")}
        for fits in sorted(set(fit_set.values()), key=lambda f: (-len(f), f)):
            part = df[df["contender"].isin([c for c, f in fit_set.items() if f == fits])]
            cells = []
            for gold in GOLDS:
                means = part.groupby("contender")[[f"bon_{gold}_mean", f"bon_{gold}_random"]].mean()
                above = int((means[f"bon_{gold}_mean"] > means[f"bon_{gold}_random"]).sum())
                cells += [f"{means[f'bon_{gold}_mean'].min():.3f} – {means[f'bon_{gold}_mean'].max():.3f}",
                          f"{part[f'bon_{gold}_random'].mean():.3f}", f"{above} of {len(means)}"]
            where = f"{len(fits)} ({span(f for _, f in fits)} × {span(s for s, _ in fits)})"
            out.append(f"| {path.parent.name} | {where} | {len(means)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", default=None, help="Only these stages (default: every stage with rows).")
    ap.add_argument("--out", default=None, help="Also write results/<out>.md (with the command).")
    args = ap.parse_args(argv)
    text = history(stages=args.stages)
    if args.out:
        write_result(RESULTS / args.out, command_line("bon_history", argv), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
