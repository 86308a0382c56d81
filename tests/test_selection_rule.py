"""The validation rule that picks ``vrm train``'s default (``benchmarks/coherence_table.py --select``): the lowest
validation junk among the contenders within 0.01 of the best validation NLL, a paired difference under its
standard error being a tie that goes to the lower validation NLL."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from coherence_table import select  # noqa: E402


def fits(name: str, nll: float, junk: list[float]) -> list[dict]:
    return [{"contender": name, "seed": i // 2, "fold": i % 2, "val_nll": nll, "val_wide_junk_mean": j}
            for i, j in enumerate(junk)]


def chosen(text: str) -> str:
    return text.rsplit("chosen: `", 1)[1].split("`")[0]


def test_a_clear_difference_picks_the_lower_junk_and_a_tie_the_lower_nll():
    base = [0.020, 0.022, 0.018, 0.021]
    clear = [j - 0.004 for j in base]  # lower on every fit: not a tie
    noisy = [0.019, 0.024, 0.017, 0.023]  # +0.0005 on average, its SE about 0.0009: a tie
    rows = pd.DataFrame(fits("a", 0.352, base) + fits("b", 0.355, clear) + fits("c", 0.347, noisy))
    assert chosen(select(rows, ["a", "b"])) == "b"
    text = select(rows, ["a", "c"])
    assert chosen(text) == "c" and "| `c` | 4 | 0.347 | yes | 0.0207 | +0.0005 ±" in text and "| 2 / 2 | yes |" in text
    # a contender more than 0.01 above the best validation NLL is not eligible, however little junk it lets through
    rows = pd.DataFrame(fits("a", 0.352, base) + fits("far", 0.363, [0.0] * 4))
    assert chosen(select(rows, ["a", "far"])) == "a"
    with pytest.raises(SystemExit, match="no rows"):
        select(rows, ["a", "missing"])
