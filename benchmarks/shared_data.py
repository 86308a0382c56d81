"""The shared preference data (``../shared/data``) as the benchmarks use it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE_DIR = ROOT / "benchmarks" / ".cache"
FILES = {"hh": "hh_rlhf_harmless.jsonl.gz", "alpaca": "alpaca_eval_gpt4_turbo_pairs.jsonl.gz",
         "bon": "alpaca_bon_dev.jsonl.gz", "twins": "alpaca_eval_length_twins.jsonl.gz"}


def read_jsonl(name: str) -> list[dict]:
    with gzip.open(SHARED / FILES[name], "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_shared_texts(name: str) -> tuple[list[str], list[str]]:
    """Every (prompt, response) text pair of a shared file, one entry per response."""
    from vrm_pyro.formats import load_pairs

    if name in ("hh", "alpaca"):
        pairs = load_pairs(str(SHARED / FILES[name]), "hh" if name == "hh" else "alpaca_eval", skip_invalid=True)
        return pairs.prompt + pairs.prompt, pairs.response_a + pairs.response_b
    rows = read_jsonl(name)
    if name == "bon":
        return ([r["instruction"] for r in rows for _ in r["samples"]],
                [s["output"] for r in rows for s in r["samples"]])
    return ([r["instruction"] for r in rows] * 2, [r["concise"] for r in rows] + [r["verbose"] for r in rows])
