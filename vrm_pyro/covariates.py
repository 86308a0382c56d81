r"""Observable properties of response texts, computed from the text alone (no encoder, no model).

Two families, with different jobs in the model:

**Nuisance covariates** ``φ(y)``: what a judge may reward beyond content — length and
formatting. They enter the judgment model as ``γ · (φ(a) − φ(b))`` (see
:class:`vrm_pyro.models.nuisance.NuisanceTerm`), so the judge's bias is *estimated*, and the
authentic reward ``w · u`` need not carry it. Each covariate is ``log2(1 + count)``, so its
coefficient reads as "logits per doubling". The set is a registry:
``NUISANCE_COVARIATES["emoji"] = lambda text: ...`` adds one.

==============  ===========================================================================
``length``      ``log2(1 + tokens)``; tokens are words and punctuation marks (``\w+|[^\w\s]``)
``list_items``  ``log2(1 + lines starting with -, *, •, or "1." / "1)")``
``headers``     ``log2(1 + Markdown header lines)`` (``#`` … ``######``)
``code_blocks`` ``log2(1 + fenced code blocks)``
``bold``        ``log2(1 + **bold** or __bold__ spans)``
==============  ===========================================================================

**Coherence statistics** ``s(x, y)``: signals of degenerate text, used as one part of a
representation (``statistics`` in :mod:`vrm_pyro.representations`), in the spirit of the
repetition and symbol filters of Gopher's data pipeline (Rae et al., 2021): distinct words,
repeated word 4-grams, compressibility, echo of the prompt, coverage of the prompt's words, a
clean ending, words per sentence. None of them measures length.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

TOKEN = re.compile(r"\w+|[^\w\s]")
WORD = re.compile(r"\w+")
LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)
HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n\s*\n")
CLEAN_END = set(".!?)]}\"'`*>»”’:;")


def _log2_count(n: int) -> float:
    return math.log2(1 + n)


NUISANCE_COVARIATES: dict[str, Callable[[str], float]] = {
    "length": lambda t: _log2_count(len(TOKEN.findall(t))),
    "list_items": lambda t: _log2_count(len(LIST_ITEM.findall(t))),
    "headers": lambda t: _log2_count(len(HEADER.findall(t))),
    "code_blocks": lambda t: _log2_count(t.count("```") // 2),
    "bold": lambda t: _log2_count(len(BOLD.findall(t))),
}
DEFAULT_NUISANCE = "length,list_items,headers,code_blocks,bold"


def parse_names(names: str | Sequence[str] | None, table: dict, what: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> checked list of registered names (empty for None/"")."""
    from vrm_pyro.errors import ConfigError

    if not names:
        return []
    out = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in out if n not in table]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; choose from: {', '.join(table)}")
    return out


def nuisance_covariates(responses: Sequence[str], names: str | Sequence[str] = DEFAULT_NUISANCE) -> np.ndarray:
    """``φ(y)`` for each response: ``(N, C)`` float32, one column per name (see the module docstring)."""
    cols = parse_names(names, NUISANCE_COVARIATES, "nuisance covariate(s)")
    out = np.zeros((len(responses), len(cols)), np.float32)
    for j, name in enumerate(cols):
        fn = NUISANCE_COVARIATES[name]
        out[:, j] = [fn(t) for t in responses]
    return out


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _coherence_row(prompt: str, response: str) -> list[float]:
    words = [w.lower() for w in WORD.findall(response)]
    distinct = len(set(words)) / len(words) if words else 1.0
    grams = _ngrams(words, 4)
    seen: set = set()
    repeated = 0
    for g in grams:
        repeated += g in seen
        seen.add(g)
    repeated_frac = repeated / len(grams) if grams else 0.0
    raw = response.encode("utf-8", "surrogatepass")
    compression = len(zlib.compress(raw, 6)) / max(len(raw), 1)
    p_words = [w.lower() for w in WORD.findall(prompt)]
    p_tri = set(_ngrams(p_words, 3))
    r_tri = _ngrams(words, 3)
    echo = sum(g in p_tri for g in r_tri) / len(r_tri) if r_tri else 0.0
    content = {w for w in p_words if len(w) >= 4}
    coverage = len(content & set(words)) / len(content) if content else 0.0
    stripped = response.rstrip()
    clean_end = float(bool(stripped) and (stripped[-1] in CLEAN_END or stripped.endswith("```")))
    sentences = max(len(SENTENCE_END.findall(response)), 1)
    per_sentence = math.log2(1 + len(words) / sentences)
    return [distinct, repeated_frac, compression, echo, coverage, clean_end, per_sentence]


COHERENCE_STATISTICS = ("distinct_words", "repeated_4grams", "compression_ratio", "prompt_echo",
                        "prompt_coverage", "clean_ending", "log2_words_per_sentence")


def coherence_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``s(x, y)``: ``(N, 7)`` float32, columns :data:`COHERENCE_STATISTICS`."""
    return np.asarray([_coherence_row(p, r) for p, r in zip(prompts, responses)], np.float32).reshape(
        len(responses), len(COHERENCE_STATISTICS))


__all__ = ["COHERENCE_STATISTICS", "DEFAULT_NUISANCE", "NUISANCE_COVARIATES", "coherence_statistics",
           "nuisance_covariates", "parse_names"]
