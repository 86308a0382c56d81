"""Text statistics of the stress set, no model: where a column of the representation puts junk against its real answer,
and where the real answers that junk outranks sit among all answers. A probe, not a library feature.

- ``kinds``: for each junk kind (:data:`vrm_pyro.hacking.JUNK_KINDS`), made from the best dev answer of each of the
  407 stress instructions as ``vrm stress`` makes it, the share of rows where the junk's ``--column`` (a column of a
  text part of the representation, :data:`~vrm_pyro.representations.TEXT_PARTS`, default ``bag_prompt_coverage``) is
  below, equal to or above the real answer's: which way a reward that can only rise with the column (``--monotone``) is pushed on that kind
  (the rest of the reward decides the ranking).
- ``losers`` (with ``--losers FILE``, a ``gate_anatomy.py --losers`` JSON): each distinct real answer that junk
  outranked there, on the text columns of the default's validity gate (the bag statistics and the gate's columns
  ``prompt_copy`` and ``line_ending``, the library's ``prompt_copied`` and ``ends_like_its_lines``; not
  ``bag_cosine``, which needs the encoder), as z-scores against 3,000 AlpacaEval answers drawn at random (seed 0),
  with that sample's 1st, 50th and 99th percentiles. The gate itself standardises over the training answers and
  their augmented junk, so these are not its units.

    python benchmarks/stress_statistics.py --losers results/coherence_r21/losers_fold0.json --out coherence_r21/stress_statistics

writes ``results/<out>.json`` and ``.md`` (seconds, text only). ``--junk-losers FILE`` (a ``gate_anatomy.py
--losers`` JSON) adds ``--column`` of each junk answer that won there, beside its real answer's. ``--real-above T``
adds ``--column`` over every AlpacaEval answer (both sides of every pair): its percentiles and the share above ``T``
(how clean a column is: how many real answers sit where its junk does). ``--real-at-most T`` counts the distinct
AlpacaEval (instruction, answer) pairs whose ``--column`` is at most ``T`` and how their last lines end (:func:`last_line_ending`): which
real answers an ending column reads as cut.

    python benchmarks/stress_statistics.py --column last_line_complete --real-at-most 0 --out coherence_r29/last_line_real

    python benchmarks/stress_statistics.py --column prompt_jaccard --real-above 0.5 --out coherence_r27/prompt_jaccard
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.covariates import BAG_STATISTICS  # noqa: E402
from vrm_pyro.hacking import JUNK_KINDS, make_junk  # noqa: E402
from vrm_pyro.representations import TEXT_PARTS  # noqa: E402

#: ``column -> (statistics function, its index there)`` for every column of the text parts
TEXT_COLUMNS = {c: (fn, i) for fn, columns in TEXT_PARTS.values() for i, c in enumerate(columns)}

#: the text parts of the default's validity gate, and their columns' names as the tables show them
GATE_TEXT_PARTS = ("bag_statistics", "prompt_copy", "line_ending")
GATE_TEXT_COLUMNS = (*BAG_STATISTICS, "prompt_copy", "line_ending")
SAMPLE = 3000


def gate_text_columns(prompts: list[str], responses: list[str]) -> np.ndarray:
    """``(N, 10)``: the columns :data:`GATE_TEXT_COLUMNS` (the default gate reads all but ``bag_prompt_echo``)."""
    return np.concatenate([TEXT_PARTS[part][0](prompts, responses) for part in GATE_TEXT_PARTS], 1)


#: how a text's last non-blank line ends, for ``--real-at-most``: a hashtag, a symbol outside ASCII (an emoji), a
#: letter or digit, anything else (punctuation)
ENDINGS = ("hashtag", "non_ascii", "letter_or_digit", "other")


def last_line_ending(text: str) -> str:
    r"""One of :data:`ENDINGS` for ``text``'s last non-blank line ("" has ``other``).

    >>> [last_line_ending(t) for t in ("Join us! #Together", "See you 🌟", "a list\nitem 3", "Done.")]
    ['hashtag', 'non_ascii', 'letter_or_digit', 'other']
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if re.search(r"#[^\W\d]\w*$", last):  # "#Crowdsourcing", not "#1"
        return "hashtag"
    if last and not last[-1].isascii():
        return "non_ascii"
    return "letter_or_digit" if last and last[-1].isalnum() else "other"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--column", default="bag_prompt_coverage", choices=sorted(TEXT_COLUMNS))
    ap.add_argument("--losers", default=None, help="a gate_anatomy.py --losers JSON (relative to benchmarks/)")
    ap.add_argument("--junk-losers", default=None,
                    help="a gate_anatomy.py --losers JSON (relative to benchmarks/): --column of each junk answer that "
                         "won there and of its real answer")
    ap.add_argument("--real-above", type=float, default=None,
                    help="the share of all AlpacaEval answers whose --column is above this, with its percentiles")
    ap.add_argument("--real-at-most", type=float, default=None,
                    help="the share of the distinct AlpacaEval (instruction, answer) pairs whose --column is at most this, and how their last "
                         "lines end (a hashtag, a symbol outside ASCII, a letter or digit, other)")
    ap.add_argument("--out", default="coherence_r21/stress_statistics", help="results/<out>.json and .md")
    args = ap.parse_args(argv)
    alpaca = cb.load_pairs_file("alpaca")
    prompts, real = cb.stress_rows(cb.best_of_n_dev(cb.fit_length_effect(alpaca)))
    others = list(zip(prompts, real))
    statistics, j = TEXT_COLUMNS[args.column]
    real_column = statistics(prompts, real)[:, j]
    kinds = {}
    for kind in JUNK_KINDS:
        junk = statistics(prompts, [make_junk(kind, p, r, others) for p, r in zip(prompts, real)])[:, j]
        kinds[kind] = {"below": float(np.mean(junk < real_column)), "equal": float(np.mean(junk == real_column)),
                       "above": float(np.mean(junk > real_column)), "junk_at_1": float(np.mean(junk >= 1.0))}
    out = {"command": "python benchmarks/stress_statistics.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "column": args.column, "rows": len(prompts), "real_below_1": float(np.mean(real_column < 1.0)),
           "kinds": kinds}
    lines = [f"Command: `{out['command']}`", "",
             f"`{args.column}` of the junk against the real answer's, {len(prompts)} stress rows (real answers "
             f"below 1: {out['real_below_1']:.3f}; 'at 1': the junk's column 1 or more):", "",
             "| kind | below | equal | above | at 1 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['below']:.3f} | {v['equal']:.3f} | {v['above']:.3f} | {v['junk_at_1']:.3f} |"
              for k, v in kinds.items()]
    if args.real_above is not None:
        every = statistics([*alpaca.prompt, *alpaca.prompt], [*alpaca.response_a, *alpaca.response_b])[:, j]
        quantiles = dict(zip(("p50", "p90", "p99", "p99.9"), np.quantile(every, [0.5, 0.9, 0.99, 0.999]).tolist()))
        out["real_answers"] = {"answers": len(every), "above": args.real_above,
                               "share_above": float(np.mean(every > args.real_above)), **quantiles}
        lines += ["", f"`{args.column}` over all {len(every):,} AlpacaEval answers (both sides of every pair): above "
                  f"{args.real_above:g} for {out['real_answers']['share_above']:.4f} of them; percentiles "
                  + ", ".join(f"{k} {v:.3f}" for k, v in quantiles.items())]
    if args.real_at_most is not None:
        pairs = list(dict.fromkeys(zip([*alpaca.prompt, *alpaca.prompt], [*alpaca.response_a, *alpaca.response_b])))
        texts = [r for _, r in pairs]  # the distinct (instruction, answer) pairs' answers
        every = statistics([p for p, _ in pairs], texts)[:, j]
        low = [t for t, v in zip(texts, every) if v <= args.real_at_most]
        endings = {e: sum(last_line_ending(t) == e for t in low) for e in ENDINGS}
        out["real_at_most"] = {"answers": len(texts), "at_most": args.real_at_most, "count": len(low),
                               "share": len(low) / len(texts), "endings": endings}
        lines += ["", f"`{args.column}` over the {len(texts):,} distinct AlpacaEval (instruction, answer) pairs: at most "
                  f"{args.real_at_most:g} for {len(low)} ({len(low) / len(texts):.4f}); how their last lines end: "
                  + ", ".join(f"{e} {n}" for e, n in endings.items())]
    if args.junk_losers:
        anatomy = json.loads((Path(__file__).resolve().parent / args.junk_losers).read_text())
        out["junk_losers"] = [
            {"contender": row["contender"], "seed": row["seed"], "kind": loser["kind"], "prompt": loser["prompt"][:60],
             "junk_end": loser["junk"][-40:].replace("|", "/"), "junk": float(statistics([loser["prompt"]], [loser["junk"]])[0, j]),
             "real": float(statistics([loser["prompt"]], [loser["real"]])[0, j])}
            for row in anatomy["rows"] for loser in row["losers"]]
        lines += ["", f"`{args.column}` of each junk answer that outranked its real answer in `{args.junk_losers}`:", "",
                  "| contender | seed | kind | instruction | the junk ends | junk | real |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| `{r['contender']}` | {r['seed']} | {r['kind']} | {r['prompt'].replace(chr(10), ' ')}… | "
                  f"{r['junk_end']!r} | {r['junk']:.2f} | {r['real']:.2f} |" for r in out["junk_losers"]]
    if args.losers:
        idx = np.random.default_rng(0).choice(len(alpaca), SAMPLE, replace=False)
        sample = gate_text_columns([alpaca.prompt[i] for i in idx], [alpaca.response_a[i] for i in idx])
        mean, sd = sample.mean(0), sample.std(0)
        z_sample = (sample - mean) / sd
        answers = dict(zip(prompts, real))
        losers = json.loads((Path(__file__).resolve().parent / args.losers).read_text())
        wins: dict[str, list[str]] = {}
        for row in losers["rows"]:
            for loser in row["losers"]:
                wins.setdefault(loser["prompt"], []).append(f"{loser['kind']} (seed {row['seed']})")
        out["sample"] = {"answers": SAMPLE, "percentiles": {
            c: dict(zip(("p1", "p50", "p99"), np.percentile(z_sample[:, i], [1, 50, 99]).round(2).tolist()))
            for i, c in enumerate(GATE_TEXT_COLUMNS)}}
        out["losers"] = []
        for prompt, kinds_won in wins.items():
            z = (gate_text_columns([prompt], [answers[prompt]])[0] - mean) / sd
            out["losers"].append({"prompt": prompt, "words": len(answers[prompt].split()), "junk_won": kinds_won,
                                  "z": dict(zip(GATE_TEXT_COLUMNS, z.round(2).tolist()))})
        lines += ["", f"The real answers that junk outranked (`{args.losers}`), their gate text columns as z-scores "
                  f"against {SAMPLE} AlpacaEval answers (the sample's 1st / 50th / 99th percentiles in the last rows):",
                  "", "| instruction | words | junk that won | " + " | ".join(GATE_TEXT_COLUMNS) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in GATE_TEXT_COLUMNS) + " |"]
        for loser in out["losers"]:
            lines.append(f"| {loser['prompt'][:60].replace('|', '/').replace(chr(10), ' ')}… | {loser['words']} | "
                         f"{', '.join(loser['junk_won'])} | " + " | ".join(f"{v:+.2f}" for v in loser["z"].values())
                         + " |")
        for p in ("p1", "p50", "p99"):
            lines.append(f"| sample {p} | | | " + " | ".join(
                f"{out['sample']['percentiles'][c][p]:+.2f}" for c in GATE_TEXT_COLUMNS) + " |")
    path = cb.RESULTS / args.out
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
