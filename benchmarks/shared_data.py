"""The shared preference data (``../shared/data``) as the benchmarks use it.

- AlpacaEval pairs, split by instruction into folds (every instruction held out once);
- the best-of-N dev set (11 samples per instruction, gold = judge's P(beats the reference), raw and
  length-controlled);
- the concise/verbose twins;
- a stress set (junk made from the best dev sample of each instruction) and out-of-distribution
  answers (random tokens, repeated text, another prompt's answer, text in another language);
- HH-RLHF harmless pairs;

and the scripts' results files: :func:`write_result` writes a table under ``results/`` headed by the command
that wrote it (what ``benchmarks/README.md`` quotes).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the shared data folder (``$VRM_SHARED_DATA`` to read a copy elsewhere)
SHARED = Path(os.environ.get("VRM_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE_DIR = ROOT / "benchmarks" / ".cache"
FILES = {"hh": "hh_rlhf_harmless.jsonl.gz", "alpaca": "alpaca_eval_gpt4_turbo_pairs.jsonl.gz",
         "bon": "alpaca_bon_dev.jsonl.gz", "twins": "alpaca_eval_length_twins.jsonl.gz"}
RESULTS = ROOT / "benchmarks" / "results"


def command_line(script: str, argv: list[str] | None) -> str:
    """``python benchmarks/<script>.py ARGS`` as run (``argv``, else the process's own arguments)."""
    return f"python benchmarks/{script}.py " + " ".join(argv if argv is not None else sys.argv[1:])


def write_result(path: Path, command: str, markdown: str, payload: dict | None = None) -> None:
    """``path.md``: ``markdown`` headed by ``command``; with ``payload``, ``path.json`` too (the command in it).
    ``path`` is without suffix; its folder is made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if payload is not None:
        path.with_suffix(".json").write_text(json.dumps({"command": command, **payload}, indent=1))
    path.with_suffix(".md").write_text(f"Command: `{command}`\n\n{markdown}")


OTHER_LANGUAGES = ("de_DE", "fr_FR", "es_ES", "it_IT", "ru_RU", "zh_CN", "ja_JP")


def read_jsonl(name: str) -> list[dict]:
    with gzip.open(SHARED / FILES[name], "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_shared_texts(name: str) -> tuple[list[str], list[str]]:
    """Every (prompt, response) text pair of a shared file, one entry per response."""
    if name in ("hh", "alpaca"):
        pairs = load_pairs_file(name)
        return pairs.prompt + pairs.prompt, pairs.response_a + pairs.response_b
    rows = read_jsonl(name)
    if name == "bon":
        return ([r["instruction"] for r in rows for _ in r["samples"]],
                [s["output"] for r in rows for s in r["samples"]])
    return ([r["instruction"] for r in rows] * 2, [r["concise"] for r in rows] + [r["verbose"] for r in rows])


def load_pairs_file(name: str):
    from vrm_pyro.formats import load_pairs

    return load_pairs(str(SHARED / FILES[name]), "hh" if name == "hh" else "alpaca_eval", skip_invalid=True)


def instruction_folds(instructions: list[str], folds: int, seed: int, val_fraction: float = 0.1):
    """``folds`` (train, validation, test) splits of the instructions: each instruction is in one test fold;
    validation is ``val_fraction`` of the others (seeded)."""
    rng = np.random.default_rng(seed)
    order = [instructions[i] for i in rng.permutation(len(instructions))]
    parts = np.array_split(np.arange(len(order)), folds)
    out = []
    for k, part in enumerate(parts):
        test = {order[i] for i in part}
        rest = [p for p in order if p not in test]
        r = np.random.default_rng([seed, k])
        val = {rest[i] for i in r.permutation(len(rest))[:max(1, int(round(val_fraction * len(rest))))]}
        out.append(({p for p in rest if p not in val}, val, test))
    return out


@dataclass
class BestOfN:
    """Per instruction: the samples, raw gold, length-controlled gold and the reference's length."""

    instructions: list[str]
    samples: list[list[str]]
    gold: list[np.ndarray]
    gold_lc: list[np.ndarray]
    length_effect: dict = field(default_factory=dict)
    references: list[str] = field(default_factory=list)  # the gpt-3.5-turbo answer each sample was judged against

    def judged_pairs(self, instructions: set[str]):
        """The judge's own observations on ``instructions``, as training pairs: per sample, the reference
        (``response_a``) against the sample (``response_b``), ``label`` = P(reference preferred) = 1 - gold, in
        AlpacaEval's orientation (output_1 the reference). 11 pairs per instruction, in file order."""
        from vrm_pyro.data import PreferencePairs

        rows = [(p, ref, s, 1.0 - g, j) for p, ref, samples, gold in
                zip(self.instructions, self.references, self.samples, self.gold) if p in instructions
                for j, (s, g) in enumerate(zip(samples, gold))]
        if not rows:
            return PreferencePairs([], [], [], np.zeros(0), source=str(SHARED / FILES["bon"]))
        prompt, ref, sample, label, j = zip(*rows)
        return PreferencePairs(list(prompt), list(ref), list(sample), np.array(label),
                               meta=[{"generator_2": "tulu-2-dpo-13b", "sample": k} for k in j],
                               source=str(SHARED / FILES["bon"]))


def best_of_n_dev(length_effect: dict) -> BestOfN:
    from vrm_pyro.hacking import length_controlled_gold

    rows = read_jsonl("bon")
    gold = [np.array([s["preference"] - 1 for s in r["samples"]]) for r in rows]
    lc = [length_controlled_gold(g, np.array([len(s["output"]) - len(r["reference"]) for s in r["samples"]]),
                                 length_effect["beta"], length_effect["sigma"]) for r, g in zip(rows, gold)]
    return BestOfN([r["instruction"] for r in rows], [[s["output"] for s in r["samples"]] for r in rows], gold, lc,
                   length_effect, [r["reference"] for r in rows])


def twins() -> list[tuple[str, str, str]]:
    """``(instruction, concise, verbose)`` rows, and whether the judge preferred the verbose one."""
    return [(r["instruction"], r["concise"], r["verbose"], r["pref_verbose"] > r["pref_concise"])
            for r in read_jsonl("twins")]


def ood_answers(bon: BestOfN, tokenizer, seed: int = 0) -> dict[str, list[str]]:
    """Out-of-distribution answers per instruction (aligned with ``bon.instructions``): ``in_distribution``
    (the first dev sample, a real answer), ``random_tokens`` (150 random word pieces of the encoder's
    vocabulary), ``repeated_many`` (the answer's first sentence 25 times), ``other_prompt`` (the first sample
    of another instruction) and ``other_language`` (Faker paragraphs in one of seven other languages)."""
    from faker import Faker

    vocab = [t for t in tokenizer.get_vocab() if t.isalpha() and t.isascii() and len(t) > 2]
    vocab.sort()
    out: dict[str, list[str]] = {k: [] for k in ("in_distribution", "random_tokens", "repeated_many", "other_prompt",
                                                  "other_language")}
    n = len(bon.instructions)
    for i, samples in enumerate(bon.samples):
        rng = np.random.default_rng([seed, i])
        answer = samples[0]
        out["in_distribution"].append(answer)
        out["random_tokens"].append(" ".join(vocab[j] for j in rng.integers(len(vocab), size=150)))
        first = answer.split(". ")[0].strip().rstrip(".") + ". "
        out["repeated_many"].append((first * 25).strip())
        out["other_prompt"].append(bon.samples[(i + 1 + int(rng.integers(n - 1))) % n][0])
        fake = Faker(OTHER_LANGUAGES[i % len(OTHER_LANGUAGES)])
        fake.seed_instance(seed * 100_003 + i)
        out["other_language"].append(" ".join(fake.paragraph(nb_sentences=6) for _ in range(3)))
    return out


def stress_rows(bon: BestOfN, answers: int = 1) -> tuple[list[str], list[str]]:
    """The real answers junk is made from: per instruction, the ``answers`` dev samples the judge liked most, best
    first (``answers=1``: the stress test's rows; more: the wider validation stress set of round 15)."""
    prompts, real = [], []
    for prompt, samples, gold in zip(bon.instructions, bon.samples, bon.gold):
        for b in np.argsort(-np.asarray(gold), kind="stable")[:answers]:
            prompts.append(prompt)
            real.append(samples[int(b)])
    return prompts, real
