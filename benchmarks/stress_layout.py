"""How the stress test's sentence-shuffled answers looked before and after b892cc6 (a probe, text only).

Before, the generator split after every ``.!?`` (and after a list's ``1.``) and joined the pieces with a space,
so a shuffled answer lost every line break and its list enumerators floated free of their items: a layout cue
that told the junk from the real answer without reading it. Now it keeps the layout and moves sentences only
(:func:`vrm_pyro.covariates.reorder_sentences`). Counts over the 407 stress answers (the best dev answer of every
instruction); writes ``results/<stage>/stress_layout.json`` (round 11's: ``coherence_r11``; the counts of a later
code, e.g. of its sentence splitter, under a later stage)::

    python benchmarks/stress_layout.py --stage coherence_r25
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_bt as cb  # noqa: E402

from vrm_pyro.covariates import sentences  # noqa: E402
from vrm_pyro.hacking import _row_rng, _words_shuffled, make_junk  # noqa: E402

ENUMERATED = re.compile(r"(?:^|\n)\s*\d{1,2}\.\s")


def shuffled_before_fix(text: str, rng) -> str:
    """``hacking._sentences_shuffled`` as it was before b892cc6."""
    parts = [p for p in re.split(r"(?<=[.!?])\s+|\n+", text) if p.strip()]
    if len(parts) < 2:
        return _words_shuffled(text, rng)
    order = rng.permutation(len(parts))
    if (order == np.arange(len(parts))).all():
        order = np.roll(order, 1)
    return " ".join(parts[i] for i in order)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True,
                    help="results/<stage>/stress_layout.json (round 11's record is coherence_r11: name a new stage)")
    args = ap.parse_args(argv)
    bon = cb.best_of_n_dev(cb.fit_length_effect(cb.load_pairs_file("alpaca")))
    prompts, real = cb.stress_rows(bon)
    before = [shuffled_before_fix(r, _row_rng(0, "shuffled_sentences", p, r)) for p, r in zip(prompts, real)]
    after = [make_junk("shuffled_sentences", p, r, []) for p, r in zip(prompts, real)]
    lines = lambda texts: sum(t.count("\n") for t in texts)  # noqa: E731
    out = {
        "command": f"python benchmarks/stress_layout.py --stage {args.stage}",
        "stress_answers": len(real),
        "real_with_line_breaks": sum("\n" in r for r in real),
        "real_with_numbered_list": sum(bool(ENUMERATED.search(r)) for r in real),
        "real_of_one_sentence": sum(len(sentences(r)) < 2 for r in real),
        "line_breaks": {"real": lines(real), "junk_before_fix": lines(before), "junk_after_fix": lines(after)},
        "junk_with_line_breaks": {"before_fix": sum("\n" in j for j in before),
                                  "after_fix": sum("\n" in j for j in after)},
        "junk_same_length_as_real": {"before_fix": sum(len(j) == len(r) for j, r in zip(before, real)),
                                     "after_fix": sum(len(j) == len(r) for j, r in zip(after, real))},
    }
    cb.write_result(args.stage, "stress_layout", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
