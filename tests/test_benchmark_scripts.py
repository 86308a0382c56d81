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
