"""The validation rule that picks ``vrm train``'s default (``benchmarks/coherence_table.py --select``): the lowest
validation junk among the contenders within 0.01 of the best validation NLL, a paired difference under its
standard error being a tie that goes to the lower validation NLL (or, with ``tie_break="kinds"``, first to the
most validation kinds under 2%)."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from coherence_table import select  # noqa: E402


def fits(name: str, nll: float, junk: list[float], kinds: dict | None = None) -> list[dict]:
    """Four fits; ``kinds``: ``kind -> per-fit rates`` (the ``val_wide_junk_<kind>`` columns)."""
    return [{"contender": name, "seed": i // 2, "fold": i % 2, "val_nll": nll, "val_wide_junk_mean": j,
             **{f"val_wide_junk_{k}": v[i] for k, v in (kinds or {}).items()}} for i, j in enumerate(junk)]


def chosen(text: str) -> str:
    return text.rsplit("chosen: `", 1)[1].split("`")[0]


def test_a_clear_difference_picks_the_lower_junk_and_a_tie_the_lower_nll():
    base = [0.020, 0.022, 0.018, 0.021]
    clear = [j - 0.004 for j in base]  # lower on every fit: not a tie
    noisy = [0.019, 0.024, 0.017, 0.023]  # +0.0005 on average, its SE about 0.0009: a tie
    rows = pd.DataFrame(fits("a", 0.352, base) + fits("b", 0.355, clear) + fits("c", 0.347, noisy))
    assert chosen(select(rows, ["a", "b"])) == "b"
    text = select(rows, ["a", "c"])
    assert chosen(text) == "c" and "| `c` | 4 | 0.347 | yes | 0.0207 | 0 of 0 | +0.0005 ±" in text and "| 2 / 2 | yes |" in text
    # a contender more than 0.01 above the best validation NLL is not eligible, however little junk it lets through
    rows = pd.DataFrame(fits("a", 0.352, base) + fits("far", 0.363, [0.0] * 4))
    assert chosen(select(rows, ["a", "far"])) == "a"
    with pytest.raises(SystemExit, match="no rows"):
        select(rows, ["a", "missing"])


def test_the_kinds_tie_break_goes_to_more_kinds_under_two_percent_before_the_nll():
    # the same mean junk over two kinds; "spread" has one kind at 3% (mean over fits), "even" none
    spread = {"truncated": [0.03] * 4, "echo": [0.01] * 4}
    even = {"truncated": [0.018, 0.020, 0.018, 0.020], "echo": [0.019, 0.018, 0.019, 0.018]}
    rows = pd.DataFrame(fits("spread", 0.340, [0.02] * 4, spread) + fits("even", 0.345, [0.02] * 4, even))
    assert chosen(select(rows, ["spread", "even"])) == "spread"  # the same junk on every fit, a tie: the lower NLL
    text = select(rows, ["spread", "even"], tie_break="kinds")
    assert chosen(text) == "even" and "| 1 of 2 |" in text and "| 2 of 2 |" in text
    # the tie-break breaks ties only: a clear difference in mean junk still decides
    rows = pd.DataFrame(fits("spread", 0.340, [0.015] * 4, spread) + fits("even", 0.345, [0.02] * 4, even))
    assert chosen(select(rows, ["spread", "even"], tie_break="kinds")) == "spread"


def test_a_missing_rate_or_no_common_fit_is_no_tie_and_one_fit_apart_is_no_tie():
    base = [0.020, 0.022, 0.018, 0.021]
    rows = pd.DataFrame(fits("a", 0.340, base) + fits("nan", 0.345, [0.06, float("nan"), 0.06, 0.06]))
    assert chosen(select(rows, ["a", "nan"])) == "a" and "| no |" in select(rows, ["a", "nan"])
    other = [dict(r, seed=r["seed"] + 10) for r in fits("elsewhere", 0.339, [0.03] * 4)]  # no (seed, fold) in common
    assert chosen(select(pd.DataFrame(fits("a", 0.340, base) + other), ["a", "elsewhere"])) == "a"
    for x in (0.001, 0.0025, 0.003, 0.0075, 0.01):  # one fit apart: |mean| equals its SE, not smaller: no tie
        rows = pd.DataFrame(fits("a", 0.345, base) + fits("b", 0.340, [base[0] + x, *base[1:]]))
        assert chosen(select(rows, ["a", "b"])) == "a", x


def test_paired_gives_each_column_as_mean_difference_with_its_standard_error_and_the_fits_either_side():
    from coherence_table import paired

    ref = fits("ref", 0.340, [0.02] * 4, {"echo": [0.010, 0.012, 0.014, 0.016]})
    new = fits("new", 0.342, [0.02] * 4, {"echo": [0.000, 0.002, 0.004, 0.014]})
    for rows, accs in ((ref, [0.70, 0.68, 0.69, 0.71]), (new, [0.66, 0.66, 0.65, 0.72])):
        for r, a in zip(rows, accs):
            r.update(test_accuracy=0.86, test_accuracy_authentic=a, junk_echo=r["val_wide_junk_echo"])
    text = paired(pd.DataFrame(ref + new), ["ref", "new"], ["echo"])
    # echo: differences -0.010, -0.010, -0.010, -0.002 -> mean -0.0080, sd 0.004, SE 0.0020; 4 fits lower, none higher
    assert "| echo | 0.0130 | 0.0050 | -0.0080 ± 0.0020 | 4 / 0 |" in text
    assert "| val: echo | 0.0130 | 0.0050 | -0.0080 ± 0.0020 | 4 / 0 |" in text
    # the authentic reward's accuracy: -0.04, -0.02, -0.04, +0.01 -> mean -0.0225, SE 0.0118; 3 lower, 1 higher
    assert "| acc (authentic) | 0.6950 | 0.6725 | -0.0225 ± 0.0118 | 3 / 1 |" in text
    assert "| test acc | 0.8600 | 0.8600 | +0.0000 ± 0.0000 | 0 / 0 |" in text
    assert "verbose pref." not in text  # a column the rows do not hold is left out, not shown as NaN
    new[0]["test_accuracy_authentic"] = float("nan")  # one fit without it: the other three paired, and counted
    text = paired(pd.DataFrame(ref + new), ["ref", "new"], ["echo"])
    # -0.02, -0.04, +0.01 -> mean -0.0167, SE 0.0145
    assert "| acc (authentic) (3 fits) | 0.6933 | 0.6767 | -0.0167 ± 0.0145 | 2 / 1 |" in text


def test_the_best_of_n_table_sets_each_reward_beside_chance_and_the_longest_answer():
    from coherence_table import bon_table

    rows = {"a": {"bon_raw_mean": 0.3204, "bon_lc_mean": 0.3264, "bon_raw_total": 0.3634, "bon_lc_total": 0.348,
                  "bon_raw_random": 0.3272, "bon_lc_random": 0.3327, "bon_raw_longest": 0.3638},
            "b": {"bon_raw_mean": 0.309}}
    text = bon_table(rows, ["a", "b"])
    assert "| `a` | 0.320 / 0.326 | 0.363 / 0.348 | 0.327 / 0.333 | – / – | 0.364 / – | – / – |" in text
    assert "| `b` | 0.309 / – | – / – | – / – |" in text
    assert bon_table({"b": rows["b"]}, ["b"]) == ""  # rows from before the judge-facing pick was recorded


def test_bon_history_counts_the_contenders_that_pick_better_than_chance(tmp_path):
    import json

    from bon_history import history

    rows = [{"dataset": "alpaca_eval", "contender": c, "seed": s, "fold": 0, "bon_raw_mean": m, "bon_lc_mean": m + 0.01,
             "bon_raw_random": 0.30, "bon_lc_random": 0.32} for c, m in (("a", 0.28), ("b", 0.34)) for s in (0, 1)]
    rows.append({"dataset": "alpaca_eval", "contender": "a", "seed": 0, "fold": 0, "size": 250, "bon_raw_mean": 0.9,
                 "bon_lc_mean": 0.9, "bon_raw_random": 0.30, "bon_lc_random": 0.32})  # a learning-curve point: left out
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "old").mkdir()  # a stage from before the random pick was recorded: no row
    (tmp_path / "old" / "rows.jsonl").write_text(json.dumps({"contender": "a", "bon_raw_mean": 0.3}))
    rows.append({"dataset": "alpaca_eval", "contender": "c", "seed": 0, "fold": 1, "bon_raw_mean": 0.5,
                 "bon_lc_mean": 0.5, "bon_raw_random": 0.52, "bon_lc_random": 0.52})  # other instructions: a row apart
    (tmp_path / "st" / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    text = history(tmp_path)
    assert "| st | 2 (0 × 0,1) | 2 | 0.280 – 0.340 | 0.300 | 1 of 2 | 0.290 – 0.350 | 0.320 | 1 of 2 |" in text
    assert "| st | 1 (1 × 0) | 1 | 0.500 – 0.500 | 0.520 | 0 of 1 | 0.500 – 0.500 | 0.520 | 0 of 1 |" in text
    assert "| old |" not in text


def test_bon_chance_subtracts_each_fits_own_random_pick_and_refuses_folds_that_are_not_the_stages():
    from bon_chance import chance_table

    picks = {(0, 0): {"val_bon_raw_random": 0.30, "val_bon_lc_random": 0.31, "bon_raw_random": 0.32,
                      "bon_lc_random": 0.33},
             (1, 0): {"val_bon_raw_random": 0.40, "val_bon_lc_random": 0.41, "bon_raw_random": 0.42,
                      "bon_lc_random": 0.43}}
    rows = pd.DataFrame([{"contender": "a", "seed": s, "fold": 0, "bon_raw_random": picks[s, 0]["bon_raw_random"],
                          "val_bon_raw_mean": v, "val_bon_lc_mean": v, "bon_raw_mean": t, "bon_lc_mean": t}
                         for s, v, t in ((0, 0.32, 0.30), (1, 0.38, 0.46))])
    text = chance_table(rows, picks, ["a"])
    # validation raw: +0.02, -0.02 -> +0.0000 ± 0.0200, one fit of two above; LC: +0.01, -0.03 -> -0.0100 ± 0.0200;
    # held out raw: -0.02, +0.04 -> +0.0100 ± 0.0300; LC: -0.03, +0.03 -> +0.0000 ± 0.0300
    assert "| `a` | 2 | +0.0000 ± 0.0200 (1 of 2 above) | -0.0100 ± 0.0200 (1 of 2 above) | " \
           "+0.0100 ± 0.0300 (1 of 2 above) | +0.0000 ± 0.0300 (1 of 2 above) |" in text
    rows.loc[0, "bon_raw_random"] = 0.5  # the rows' own held-out random pick disagrees: other folds
    with pytest.raises(SystemExit, match="not the stage's"):
        chance_table(rows, picks, ["a"])


def test_bon_chance_recomputes_the_random_pick_a_stage_recorded():
    """The folds rebuilt here are the stage's: seed 0, fold 0's held-out random pick as round 27's rows hold it."""
    import json

    from bon_chance import random_picks

    from .conftest import ALPACA_FILE, require

    require(ALPACA_FILE)
    rows = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "coherence_r27" / "rows.jsonl"
    row = next(r for r in map(json.loads, rows.open()) if (r["seed"], r["fold"]) == (0, 0))
    picks = random_picks([0], [0])[0, 0]
    assert picks["bon_raw_random"] == pytest.approx(row["bon_raw_random"], abs=1e-12)
    assert picks["bon_lc_random"] == pytest.approx(row["bon_lc_random"], abs=1e-12)
    assert 0.2 < picks["val_bon_lc_random"] < 0.45


def test_bon_length_averages_the_within_instruction_correlation_and_leaves_constant_instructions_out():
    import numpy as np
    from bon_length import within

    scores = [np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]), np.array([1.0, 1.0, 1.0])]
    lengths = [np.array([10, 20, 30]), np.array([10, 30, 20]), np.array([5, 6, 7])]
    # +1 and -0.5; the third instruction's score is constant: no correlation to average
    assert within(scores, lengths) == pytest.approx(0.25)


def test_bon_length_reports_the_gate_free_pick_against_the_authentic_one_per_fit():
    from bon_length import SCORES, render

    def row(seed, authentic, quality, random):
        r = {"contender": "a", "seed": seed, "fold": 0, "instructions": 80, "random_gold_raw": random,
             "random_gold_lc": random, "rho_length_gold_raw": 0.1, "rho_length_gold_lc": 0.0,
             "rho_authentic_gold_raw": 0.07, "rho_authentic_gold_lc": 0.06}
        for s in SCORES:
            r.update({f"rho_length_{s}": 0.0, f"pick_length_rank_{s}": 0.5})
            r.update({f"pick_gold_{g}_{s}": {"authentic": authentic, "quality": quality}.get(s, 0.3)
                      for g in ("raw", "lc")})
        return r

    text = render([row(0, 0.30, 0.31, 0.29), row(1, 0.28, 0.28, 0.29)])
    # quality - authentic: +0.01 and 0 -> +0.0050 ± 0.0050; the authentic pick above random on seed 0 only
    assert ("Gold lc: the quality score's pick minus the authentic reward's +0.0050 ± 0.0050 (higher on 1 fits, "
            "lower on 0); the authentic reward's pick above picking at random on 1 of 2 fits.") in text
    assert "(2 fits: seeds 0, 1 × folds 0; 80–80 held-out instructions each)" in text


def test_the_best_of_n_judged_pairs_put_the_reference_first_and_keep_only_the_instructions_asked():
    import numpy as np
    from shared_data import BestOfN

    bon = BestOfN(["a?", "b?"], [["a1", "a2"], ["b1", "b2", "b3"]], [np.array([0.9, 0.2]), np.array([0.5, 0.0, 1.0])],
                  [np.zeros(2), np.zeros(3)], references=["ref a", "ref b"])
    pairs = bon.judged_pairs({"b?"})
    assert pairs.prompt == ["b?"] * 3
    assert pairs.response_a == ["ref b"] * 3 and pairs.response_b == ["b1", "b2", "b3"]
    # P(reference preferred) = 1 - gold, gold = P(sample preferred): AlpacaEval's orientation
    assert np.allclose(pairs.label, [0.5, 1.0, 0.0])
    assert pairs.judged.all() and not pairs.invalid.any()
    assert len(bon.judged_pairs(set())) == 0
