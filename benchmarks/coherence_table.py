"""A markdown table of chosen contenders from a stage's ``summary.json`` (what benchmarks/README.md quotes).

    python benchmarks/coherence_table.py --stage coherence --contenders vrm_part2+nuis+ord+disc+sord+rrm6+both+glr ...

prints one row per contender (3-decimal means over seeds), with the junk kinds of the coherence issue; ``--out``
also writes it to ``results/<stage>/<out>.md``, so a table in the README is a file the same commit wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [("val NLL", "val_nll"), ("test acc", "test_accuracy"), ("acc (authentic)", "test_accuracy_authentic"),
           ("verbose pref.", "twins_verbose"), ("BoN-11 raw", "bon_raw_mean"), ("BoN-11 LC", "bon_lc_mean"),
           ("OOD AUROC", "ood_auroc"), ("val junk", "val_junk_mean"), ("junk (mean)", "junk_mean")]
KINDS = ["other_prompt", "refusal", "scaffold", "shuffled_sentences", "shuffled_words", "truncated", "echo",
         "template", "repeated", "shuffled_other"]


def table(stage: str, contenders: list[str], kinds: list[str]) -> str:
    rows = {r["contender"]: r for r in json.loads((RESULTS / stage / "summary.json").read_text())
            if r.get("dataset", "alpaca_eval") == "alpaca_eval"}
    missing = [c for c in contenders if c not in rows]
    if missing:
        raise SystemExit(f"coherence_table.py: not in results/{stage}/summary.json: {missing}")
    cell = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    head = ["contender"] + [n for n, _ in COLUMNS] + [k.replace("_", " ") for k in kinds]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for c in contenders:
        r = rows[c]
        out.append("| " + " | ".join([f"`{c}`"] + [cell(r.get(key)) for _, key in COLUMNS]
                                     + [cell(r.get(f"junk_{k}")) for k in kinds]) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="coherence")
    ap.add_argument("--contenders", nargs="+", required=True)
    ap.add_argument("--kinds", nargs="+", default=KINDS)
    ap.add_argument("--out", default=None, help="Also write results/<stage>/<out>.md (with the command).")
    args = ap.parse_args(argv)
    text = table(args.stage, args.contenders, args.kinds)
    if args.out:
        command = "python benchmarks/coherence_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
        (RESULTS / args.stage / f"{args.out}.md").write_text(f"Command: `{command}`\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
