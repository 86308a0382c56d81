"""The benchmark scripts' command lines: each ``--help`` prints and exits 0 (a ``%`` in a help string once made
``coherence_table.py --help`` raise ``ValueError`` while every real invocation worked)."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if "def main(argv" in p.read_text())


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_and_exits_zero(name, monkeypatch, capsys):
    pytest.importorskip("pandas")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:  # an optional extra (httpx for the serving benchmark)
        pytest.skip(f"{name}: {err}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_the_scripts_are_found():
    assert {"coherence_table", "compare_bt", "gate_anatomy", "stress_statistics"} <= set(SCRIPTS)
    assert all(name not in sys.builtin_module_names for name in SCRIPTS)
