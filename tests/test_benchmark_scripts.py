"""The benchmark scripts' command lines: each ``--help`` prints and exits 0 (a ``%`` in a help string once made
``coherence_table.py --help`` raise ``ValueError`` while every real invocation worked)."""

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: every script (``shared_data`` is the scripts' shared module, not a command)
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "shared_data")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_and_exits_zero(name, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != "httpx":  # the serving benchmark's optional extra; any other missing module is a bug
            raise
        pytest.skip(f"{name}: {err}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_every_script_takes_its_arguments_from_main():
    """``main(argv)`` is what the test above calls: a script that reads ``sys.argv`` itself would run for real."""
    assert {"coherence_table", "compare_bt", "gate_anatomy", "stress_layout", "stress_statistics"} <= set(SCRIPTS)
    lacking = [n for n in SCRIPTS if "def main(argv" not in (BENCHMARKS / f"{n}.py").read_text()]
    assert not lacking, f"benchmarks/{lacking[0]}.py: give it main(argv=None) and parse_args(argv)"


def test_posthoc_weight_is_chosen_on_validation_and_read_held_out(monkeypatch):
    """``order_lm_probe``'s post-hoc helpers: a column that tells junk from the real answer lowers the junk rate as its
    weight grows, the weight is chosen on validation only (the smallest among equals), the held-out rates at that weight
    are what ``chosen_*`` reports, and pooling averages rows per contender."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    probe = importlib.import_module("order_lm_probe")
    import numpy as np
    import torch

    kinds = np.array([k for k in probe.JUNK_KINDS for _ in range(4)])
    gap = torch.full((len(kinds),), 0.5)  # the reward ranks every junk row above its real answer
    column = torch.full((len(kinds),), -1.0)  # the column ranks every junk row below it
    weights = (0.0, 0.25, 1.0, 4.0)
    val = probe.rates_by_weight(gap, column, kinds, weights)
    assert val[0.0] == {k: 1.0 for k in probe.JUNK_KINDS}
    assert val[0.25] == val[0.0] and val[1.0] == {k: 0.0 for k in probe.JUNK_KINDS}
    held_out = probe.rates_by_weight(gap, torch.where(torch.arange(len(kinds)) % 2 == 0, column, -column), kinds, weights)
    row = probe.weight_columns("raw", val, held_out, weights)
    assert row["weight_raw"] == 1.0  # 1 and 4 tie on validation; the smaller wins
    assert row["chosen_junk_raw"] == row["test_junk_raw_mu1"] == 0.5
    other = dict(row, chosen_junk_raw=0.25, weight_raw=4.0)
    pooled = probe.pooled_posthoc([{"contender": "c", "seed": 0, "fold": f, **r} for f, r in enumerate((row, other))])
    assert pooled["c"]["chosen_junk_raw"] == 0.375
    assert pooled["c"]["weights_chosen"] == {"raw": [1.0, 4.0]} and pooled["c"]["folds"] == [0, 1]


def test_cross_probe_column_forms(monkeypatch):
    """``order_cross_probe.column_forms``: the margin over σ as it is, and saturated at s σ (bounded by 1, the same sign)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    probe = importlib.import_module("order_cross_probe")
    import torch

    m = torch.tensor([-3.0, 0.0, 0.2, 5.0])
    forms = probe.column_forms({"junk": m}, sigma=0.5)
    assert list(forms) == ["raw", "tanh0.5", "tanh1", "tanh2"]
    assert torch.allclose(forms["raw"]["junk"], m / 0.5)
    assert torch.allclose(forms["tanh0.5"]["junk"], torch.tanh(m / 0.25))
    assert forms["tanh2"]["junk"].abs().max() < 1 and torch.equal(forms["tanh1"]["junk"].sign(), m.sign())


def test_cross_probe_accuracy_pooling_pairs_the_chosen_weight_with_mu0(monkeypatch):
    """``order_cross_probe.accuracy_mean``: per contender, the mean of each accuracy column and the chosen weight's
    accuracy minus μ = 0's over the same fits, with its standard error."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    probe = importlib.import_module("order_cross_probe")

    def row(contender, fold, mu0, chosen):
        return {"contender": contender, "seed": 0, "fold": fold, "test_accuracy_authentic": mu0,
                "pair_accuracy_tanh0.5_mu0": mu0, "pair_accuracy_tanh0.5_mu0.1": chosen, "pair_accuracy_tanh0.5": chosen}

    mean = probe.accuracy_mean([row("v", 0, 0.60, 0.62), row("v", 1, 0.70, 0.70), row("b", 0, 0.5, 0.4)])
    assert mean["v"]["fits"] == 2 and mean["b"]["fits"] == 1
    assert mean["v"]["pair_accuracy_tanh0.5"] == 0.66 and mean["v"]["pair_accuracy_tanh0.5_mu0"] == 0.65
    assert mean["v"]["pair_accuracy_tanh0.5_minus_mu0"] == 0.01 and mean["v"]["pair_accuracy_tanh0.5_minus_mu0_se"] == 0.01
    assert mean["b"]["pair_accuracy_tanh0.5_minus_mu0"] == -0.1 and "pair_accuracy_tanh0.5_minus_mu0_se" not in mean["b"]


def test_last_line_ending_classes(monkeypatch):
    """``stress_statistics.last_line_ending``: how an answer's last non-blank line ends, the trailing blank lines
    ignored (what ``--real-at-most`` counts among the answers an ending column reads as cut)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    probe = importlib.import_module("stress_statistics")
    texts = ("Join us today! 🌟 #Crowdsourcing #TogetherWeCan\n\n", "Happy coding 🚀", "1. apples\n2. pears", "Done.", "",
             "C# is fine.", "Price: 5 #1")
    assert [probe.last_line_ending(t) for t in texts] == [
        "hashtag", "non_ascii", "letter_or_digit", "other", "other", "other", "letter_or_digit"]
