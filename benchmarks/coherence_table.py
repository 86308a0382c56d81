"""A markdown table of chosen contenders from a stage's ``summary.json`` (what benchmarks/README.md quotes).

    python benchmarks/coherence_table.py --stage coherence --contenders vrm_part2+nuis+ord+disc+sord+rrm6+both+glr ...

prints one row per contender (3-decimal means over seeds), with the junk kinds of the coherence issue; ``--out``
also writes it to ``results/<stage>/<out>.md``, so a table in the README is a file the same commit wrote.
``--pool STAGE ...`` reads those stages' ``rows.jsonl`` instead (folds of one setting run as several stages):
the mean over the folds of each seed, then over seeds (``--seeds``, ``--folds``: only these), ``n`` the fits pooled.
``--select`` (with ``--pool``) applies the selection rule of ``benchmarks/README.md`` to the contenders and prints
the choice with its paired differences (:func:`select`); ``--paired`` (with ``--pool``) every contender against the
first, column by column and kind by kind (:func:`paired`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import RESULTS, command_line, write_result  # noqa: E402

from vrm_pyro.hacking import JUNK_KINDS  # noqa: E402

COLUMNS = [("val NLL", "val_nll"), ("test acc", "test_accuracy"), ("acc (authentic)", "test_accuracy_authentic"),
           ("verbose pref.", "twins_verbose"), ("len ρ", "length_spearman"), ("BoN-11 raw", "bon_raw_mean"),
           ("BoN-11 LC", "bon_lc_mean"), ("OOD AUROC", "ood_auroc"), ("val junk", "val_junk_mean"), ("val junk (4 answers)", "val_wide_junk_mean"),
           ("junk (mean)", "junk_mean")]
#: the junk kinds in the order the tables show them (every kind of vrm_pyro.hacking.JUNK_KINDS)
KINDS = ["other_prompt", "refusal", "scaffold", "shuffled_sentences", "shuffled_words", "truncated", "echo",
         "template", "repeated", "shuffled_other"]


def pooled_rows(stages: list[str], seeds: list[int] | None = None, contenders: list[str] | None = None,
                folds: list[int] | None = None):
    """The AlpacaEval rows of ``stages`` (a DataFrame, one row per fit, with the mean junk rates over kinds).
    Refuses a (contender, seed, fold) found twice and a contender's rows from two LM windows."""
    import pandas as pd

    frames = []
    for stage in stages:
        path = RESULTS / stage / "rows.jsonl"
        if not path.exists():
            raise SystemExit(f"coherence_table.py: no {path} (run compare_bt.py run --stage {stage} first)")
        frames.append(pd.read_json(path, lines=True))
    df = pd.concat(frames, ignore_index=True)
    if "dataset" in df:
        df = df[df["dataset"].fillna("alpaca_eval") == "alpaca_eval"]
    if "size" in df:  # learning-curve points are not the stage's full-data fits
        df = df[df["size"].isna()]
    if seeds is not None:
        df = df[df["seed"].isin(seeds)]
    if folds is not None:
        df = df[df["fold"].isin(folds)]
    if contenders is not None:
        df = df[df["contender"].isin(contenders)]
    twice = df[df.duplicated(["contender", "seed", "fold"], keep=False)]
    if len(twice):
        raise SystemExit("coherence_table.py: the pooled stages hold the same (contender, seed, fold) more than once: "
                         f"{sorted(set(map(tuple, twice[['contender', 'seed', 'fold']].values.tolist())))[:5]}")
    if "likelihood_response_tokens" in df:
        windows = df.groupby("contender")["likelihood_response_tokens"].nunique()
        if (windows > 1).any():
            raise SystemExit(f"coherence_table.py: rows of {list(windows[windows > 1].index)} come from different LM "
                             "windows (likelihood_response_tokens); pool stages of one window")
    for pre in ("", "val_", "val_wide_"):  # as compare_bt.summarise: the mean junk rate over kinds
        kinds = [c for c in df.columns if c.startswith(pre + "junk_") and c[len(pre) + 5:] in JUNK_KINDS]
        df[pre + "junk_mean"] = df[kinds].mean(axis=1)
    return df


def pooled(stages: list[str], seeds: list[int] | None = None, contenders: list[str] | None = None,
           folds: list[int] | None = None) -> dict[str, dict]:
    """``contender -> means`` over :func:`pooled_rows`: per seed over its folds, then over seeds."""
    import pandas as pd

    df = pooled_rows(stages, seeds, contenders, folds)
    scalar = [c for c in df.columns if c not in ("seed", "fold") and pd.api.types.is_numeric_dtype(df[c])]
    per_seed = df.groupby(["contender", "seed"])[scalar].mean()
    mean = per_seed.groupby(level=0).mean()
    n = df.groupby("contender").size()
    return {c: {**{k: (None if pd.isna(v) else float(v)) for k, v in mean.loc[c].items()}, "n": int(n[c])}
            for c in mean.index}


#: what a choice may cost beside junk, in :func:`paired` (the reward without the judge's nuisance term against the
#: judge's labels, its preference for verbose twins, its Spearman correlation with length, best-of-11 gold held out and
#: on the validation instructions)
COST_COLUMNS = [(label, key) for label, key in COLUMNS if key in (
    "test_accuracy_authentic", "twins_verbose", "length_spearman", "bon_raw_mean", "bon_lc_mean")] + [
    ("val BoN-11 raw", "val_bon_raw_mean"), ("val BoN-11 LC", "val_bon_lc_mean")]

#: the issue's target: every junk kind outranks the real answer less often than this
TARGET = 0.02


def by_fit(df, contenders: list[str]) -> dict:
    """``contender -> its rows indexed by (seed, fold)``."""
    return {c: df[df["contender"] == c].set_index(["seed", "fold"]) for c in contenders}


def paired_difference(fits: dict, ref: str, other: str, column: str, few: float = float("inf")):
    """``(d, se)``: ``other``'s ``column`` minus ``ref``'s over their common (seed, fold) fits, and the standard error
    of its mean (``few`` for fewer than two fits)."""
    import numpy as np

    common = fits[other].index.intersection(fits[ref].index)
    d = (fits[other].loc[common, column] - fits[ref].loc[common, column]).to_numpy()
    return d, (d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else few)


def select(df, contenders: list[str], nll_margin: float = 0.01, junk: str = "val_wide_junk_mean",
           tie_break: str = "nll") -> str:
    """The selection rule (``benchmarks/README.md``, sections 2e and 2p) on the fits of :func:`pooled_rows`: among
    the contenders within ``nll_margin`` of the best validation NLL, the lowest validation junk (``junk``: the wider
    validation set); a contender whose paired difference to that one over the common (seed, fold) fits is smaller
    than its standard error ties with it, and of the tied the lower validation NLL wins. ``tie_break="kinds"``
    (declared in section 2y before the fits it first decided were run): of the tied, the most validation kinds
    under the issue's :data:`TARGET` (means over each contender's fits), then the lower validation NLL. A fit with no
    junk rate (NaN) makes the difference no tie; no common fits, none. Markdown, the choice last."""
    import numpy as np

    fits = by_fit(df, contenders)
    empty = [c for c, f in fits.items() if f.empty]
    if empty:
        raise SystemExit(f"coherence_table.py --select: no rows for {empty}")
    mean = {c: (f["val_nll"].mean(), f[junk].mean()) for c, f in fits.items()}
    prefix = junk[: -len("mean")]
    kind_columns = [k for k in df.columns if k.startswith(prefix) and k != junk]
    under = {c: int((f[kind_columns].mean() < TARGET).sum()) for c, f in fits.items()}
    best_nll = min(m[0] for m in mean.values())
    eligible = [c for c in contenders if mean[c][0] <= best_nll + nll_margin]
    leader = min(eligible, key=lambda c: mean[c][1])
    then = ("to the most validation kinds under the target (2%), then to the lower validation NLL" if tie_break == "kinds"
            else "to the lower validation NLL")
    out = [f"Rule: within {nll_margin} of the best validation NLL ({best_nll:.3f}), the lowest `{junk}`; a paired "
           f"difference smaller than its standard error is a tie, and a tie goes {then}.", "",
           "| contender | fits | val NLL | eligible | val junk | kinds < 2% (val) | paired diff. to the lowest ± SE | "
           "fits lower / higher | tie |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    tied = [leader]
    for c in contenders:
        cell = "–", "–", "–"
        if c != leader:
            d, se = paired_difference(fits, leader, c, junk)  # a mean over kinds: equal rates can differ by 1e-17,
            # which is not a fit lower or higher
            # the same on every common fit (no NaN) is a tie; a difference on one fit alone sits at exactly its
            # standard error, which is not smaller than it (the margin keeps rounding from deciding)
            same = len(d) > 0 and not np.isnan(d).any() and bool(np.all(np.abs(d) <= 1e-9))
            diff = d.mean() if len(d) else float("nan")
            tie = c in eligible and (same or abs(diff) < se - 1e-12)
            tied += [c] if tie else []
            cell = f"{diff:+.4f} ± {se:.4f} ({len(d)})", f"{(d < -1e-9).sum()} / {(d > 1e-9).sum()}", "yes" if tie else "no"
        out.append(f"| `{c}` | {len(fits[c])} | {mean[c][0]:.3f} | {'yes' if c in eligible else 'no'} | "
                   f"{mean[c][1]:.4f} | {under[c]} of {len(kind_columns)} | " + " | ".join(cell) + " |")
    chosen = min(tied, key=lambda c: (-under[c], mean[c][0]) if tie_break == "kinds" else mean[c][0])
    return "\n".join(out + ["", f"Lowest validation junk: `{leader}`; chosen: `{chosen}`."]) + "\n"


def paired(df, contenders: list[str], kinds: list[str]) -> str:
    """Each contender after the first against the first, over their common (seed, fold) fits: the validation NLL,
    test accuracy, what a choice may cost beside junk (:data:`COST_COLUMNS` the rows hold) and every junk kind held
    out and on the wider validation set, as the mean of the paired differences ± its standard error, and on how
    many fits it is lower / higher. Markdown."""
    import numpy as np

    ref, *others = contenders
    fits = by_fit(df, contenders)
    cost = [(label, col) for label, col in COST_COLUMNS if col in df.columns]
    columns = [("val NLL", "val_nll"), ("test acc", "test_accuracy")] + cost + [
        (f"{where}{k.replace('_', ' ')}", f"{prefix}junk_{k}") for where, prefix in (("", ""), ("val: ", "val_wide_"))
        for k in kinds]
    out = [f"Paired differences to `{ref}` (mean ± SE over the common fits; fits lower / higher):", ""]
    for c in others:
        common = fits[c].index.intersection(fits[ref].index)
        out += [f"`{c}` ({len(common)} fits)", "", "| column | reference | this | difference ± SE | lower / higher |",
                "| --- | --- | --- | --- | --- |"]
        for label, col in columns:
            a, b = fits[ref].loc[common, col].to_numpy(float), fits[c].loc[common, col].to_numpy(float)
            both = ~(np.isnan(a) | np.isnan(b))  # a fit without the column on either side is left out, and counted
            a, b, d = a[both], b[both], b[both] - a[both]
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            label += "" if both.all() else f" ({len(d)} fits)"
            out.append(f"| {label} | {a.mean():.4f} | {b.mean():.4f} | {d.mean():+.4f} ± {se:.4f} | "
                       f"{(d < -1e-9).sum()} / {(d > 1e-9).sum()} |")
        out.append("")
    return "\n".join(out)


def table(stage: str, contenders: list[str], kinds: list[str], rows: dict[str, dict] | None = None,
          kind_prefix: str = "") -> str:
    source = "the pooled rows"
    if rows is None:
        source = f"results/{stage}/summary.json"
        rows = {r["contender"]: r for r in json.loads((RESULTS / stage / "summary.json").read_text())
                if r.get("dataset", "alpaca_eval") == "alpaca_eval"}
    missing = [c for c in contenders if c not in rows]
    if missing:
        raise SystemExit(f"coherence_table.py: not in {source}: {missing}")
    cell = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    count = any("n" in rows[c] for c in contenders)
    head = ["contender"] + (["fits"] if count else []) + [n for n, _ in COLUMNS] + [k.replace("_", " ") for k in kinds]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for c in contenders:
        r = rows[c]
        out.append("| " + " | ".join([f"`{c}`"] + ([str(r.get("n", ""))] if count else [])
                                     + [cell(r.get(key)) for _, key in COLUMNS]
                                     + [cell(r.get(f"{kind_prefix}junk_{k}")) for k in kinds]) + " |")
    return "\n".join(out) + "\n"


#: best-of-11 gold by what picks (``bon_<gold>_<picker>`` in the rows): the authentic reward, the judge-facing total
#: (with the nuisance term), and the fixed pickers of the same fits' instructions
BON_PICKERS = [("authentic", "mean"), ("with γ·φ", "total"), ("random", "random"), ("shortest", "shortest"),
               ("longest", "longest"), ("oracle", "oracle")]


def bon_table(rows: dict[str, dict], contenders: list[str]) -> str:
    """Best-of-11 gold, raw / length-controlled, per contender and picker (:data:`BON_PICKERS`): whether a reward
    picks better than chance, the shortest or the longest answer on the same instructions. Markdown; empty when no row has it."""
    if not any(rows[c].get("bon_raw_total") is not None for c in contenders):
        return ""
    cell = lambda r, p: " / ".join("–" if r.get(f"bon_{g}_{p}") is None else f"{r[f'bon_{g}_{p}']:.3f}"  # noqa: E731
                                   for g in ("raw", "lc"))
    out = ["Best-of-11 gold, raw / length-controlled, by what picks:", "",
           "| contender | " + " | ".join(n for n, _ in BON_PICKERS) + " |", "| --- |" + " --- |" * len(BON_PICKERS)]
    out += [f"| `{c}` | " + " | ".join(cell(rows[c], p) for _, p in BON_PICKERS) + " |" for c in contenders]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="coherence")
    ap.add_argument("--contenders", nargs="+", required=True)
    ap.add_argument("--kinds", nargs="+", default=KINDS)
    ap.add_argument("--kind-prefix", default="", choices=["", "val_", "val_wide_"],
                    help="The junk kinds' columns from the held-out stress test (default), the validation one "
                         "('val_') or the wider validation one ('val_wide_').")
    ap.add_argument("--out", default=None, help="Also write results/<stage>/<out>.md (with the command).")
    ap.add_argument("--pool", nargs="+", default=None, metavar="STAGE",
                    help="Read these stages' rows.jsonl (mean over folds per seed, then over seeds), not "
                         "results/<stage>/summary.json.")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="With --pool: only these seeds.")
    ap.add_argument("--folds", nargs="+", type=int, default=None, help="With --pool: only these folds.")
    ap.add_argument("--select", action="store_true",
                    help="With --pool: apply the selection rule to the contenders (the choice and its paired "
                         "differences) instead of the table.")
    ap.add_argument("--paired", action="store_true",
                    help="With --pool: every contender after the first against the first, per column and junk kind, "
                         "as paired differences over the common fits, instead of the table.")
    ap.add_argument("--tie-break", default="nll", choices=["nll", "kinds"],
                    help="With --select: a tie goes to the lower validation NLL (the rule since section 2p), or "
                         "first to the most validation kinds under 2%% (declared in section 2y).")
    args = ap.parse_args(argv)
    if (args.select or args.paired) and not args.pool:
        ap.error("--select and --paired need --pool (they pair fits by seed and fold)")
    if args.paired:
        text = paired(pooled_rows(args.pool, args.seeds, args.contenders, args.folds), args.contenders, args.kinds)
    elif args.select:
        text = select(pooled_rows(args.pool, args.seeds, args.contenders, args.folds), args.contenders,
                      tie_break=args.tie_break)
    else:
        rows = pooled(args.pool, args.seeds, args.contenders, args.folds) if args.pool else None
        text = table(args.stage, args.contenders, args.kinds, rows, args.kind_prefix)
        picks = bon_table(rows, args.contenders) if rows is not None else ""
        text += "\n" + picks if picks else ""
    if args.out:
        write_result(RESULTS / args.stage / args.out, command_line("coherence_table", argv), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
