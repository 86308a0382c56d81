r"""Observable properties of response texts, computed from the text alone (no encoder, no model).

Two kinds, with different jobs in the model: nuisance covariates and three families of statistics.

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

**Order statistics** ``o(y)``: signals that the words or sentences of a response are in an order
no writer would choose, which mean-pooled encoders barely see (``order`` in
:mod:`vrm_pyro.representations`): how often a sentence end is followed by a lower-case word and a
capitalised word follows a non-terminal word (shuffled words), the share of adjacent word pairs
that are frequent English bigrams ("of the", "it is"), numbered list items out of sequence and a
first sentence that opens with a connective or anaphor ("However", "This", shuffled sentences),
the lexical cohesion of adjacent sentences beyond that of any two sentences, list markers
that no longer start a line, and how much more of the prompt's words the first sentence
carries than the average sentence (answers open on the question's topic).

**Discourse statistics** ``d(y)``: where an answer's formulas sit and whether its sequences run
forwards (``discourse``): an opening formula ("Sure!", "As an AI language model") after the body
has begun, a closing one ("In conclusion", "I hope this helps") in the first half, sentence-initial
sequence words ("First", "Then", "Finally") or numbered labels ("Verse 2", "Step 3") going
backwards. Rare in real answers, common once their sentences are shuffled.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import zlib
from collections import Counter
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


def judged_covariates(phi_a, phi_b, judged):
    """The covariates of pairs as the judgment model sees them: ``φ(b)`` replaced by ``φ(a)`` where
    ``judged`` ``(N,)`` is False. A pair made by construction (an answer beats junk made from it) was
    never shown to the judge, so the judge's bias has no part in its label: its nuisance difference
    ``φ(a) − φ(b)`` is zero, and the authentic reward alone must explain it (otherwise the length
    term explains why an answer beats its own truncation, and the reward learns nothing from it)."""
    import torch

    keep = torch.as_tensor(np.asarray(judged, dtype=bool))
    if keep.all() or not phi_a.shape[-1]:
        return phi_a, phi_b
    return phi_a, torch.where(keep[:, None], phi_b, phi_a)


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _word_statistics(prompt: str, pieces: list[list[str]], raw: str) -> list[float]:
    """Distinct words, repeated word 4-grams, compressibility of ``raw``, the share of the response's word trigrams
    found in the prompt, and the share of the prompt's content words the response has: ``pieces`` are the
    response's lower-cased words, in one list or one per sentence (n-grams are read within a piece)."""
    words = [w for piece in pieces for w in piece]
    distinct = len(set(words)) / len(words) if words else 1.0
    grams = [g for piece in pieces for g in _ngrams(piece, 4)]
    repeated = (len(grams) - len(set(grams))) / len(grams) if grams else 0.0
    data = raw.encode("utf-8", "surrogatepass")
    compression = len(zlib.compress(data, 6)) / max(len(data), 1)
    p_words = [w.lower() for w in WORD.findall(prompt)]
    p_tri = set(_ngrams(p_words, 3))
    r_tri = [g for piece in pieces for g in _ngrams(piece, 3)]
    echo = sum(g in p_tri for g in r_tri) / len(r_tri) if r_tri else 0.0
    content = {w for w in p_words if len(w) >= 4}
    coverage = len(content & set(words)) / len(content) if content else 0.0
    return [distinct, repeated, compression, echo, coverage]


def _coherence_row(prompt: str, response: str) -> list[float]:
    words = [w.lower() for w in WORD.findall(response)]
    distinct, repeated, compression, echo, coverage = _word_statistics(prompt, [words], response)
    stripped = response.rstrip()
    clean_end = float(bool(stripped) and (stripped[-1] in CLEAN_END or stripped.endswith("```")))
    sentences = max(len(SENTENCE_END.findall(response)), 1)
    per_sentence = math.log2(1 + len(words) / sentences)
    return [distinct, repeated, compression, echo, coverage, clean_end, per_sentence]


COHERENCE_STATISTICS = ("distinct_words", "repeated_4grams", "compression_ratio", "prompt_echo",
                        "prompt_coverage", "clean_ending", "log2_words_per_sentence")


#: frequent English word bigrams (function-word patterns): shuffling words destroys them
COMMON_BIGRAMS = frozenset(tuple(b.split()) for b in (
    "of the", "in the", "to the", "on the", "for the", "and the", "with the", "from the", "by the", "at the",
    "is the", "that the", "to be", "it is", "is a", "is an", "of a", "in a", "as a", "for a", "with a", "can be",
    "will be", "should be", "such as", "you can", "there are", "there is", "this is", "it can", "they are",
    "we can", "do not", "does not", "is not", "are not", "has been", "have been", "one of", "some of", "each of",
    "the same", "in order", "order to", "able to", "used to", "need to", "want to", "how to", "as well",
    "well as", "more than", "the most", "a few", "a lot", "lot of", "number of", "part of", "based on",
    "in this", "of this", "this can", "if you", "you are", "you have", "make sure", "sure to", "it was",
    "i am", "i have", "here is", "here are", "the first", "at least", "and a", "to a", "that is", "which is"))
#: words that open a sentence by pointing back at an earlier one
CONNECTIVES = frozenset((
    "however", "additionally", "also", "furthermore", "moreover", "therefore", "thus", "finally", "overall",
    "lastly", "then", "this", "these", "that", "those", "it", "they", "such", "instead", "similarly",
    "consequently", "hence", "otherwise", "meanwhile", "next", "second", "third", "besides", "but", "and",
    "so", "in", "as"))
NUMBERED = re.compile(r"(?:^|\n|(?<=[.!?:]\s))\s*(\d{1,2})[.)]\s")
LIST_MARKER = re.compile(r"(?:(?<=\s)|^)(?:[-*•]|\d{1,2}[.)])\s+(?=[A-Z*_`\[(\"])")
#: a seam between sentences: a line break (with the white space around it) or the white space after ``.!?``
SENTENCE_SEAM = re.compile(r"(\s*\n\s*|(?<=[.!?])[^\S\n]+)")
ENUMERATOR = re.compile(r"\d{1,2}\.")
#: a list's enumerator at the start of a sentence (``2. Then bake.``)
LEADING_ENUMERATOR = re.compile(r"^\d{1,2}[.)]\s+")


#: a piece that ends in an abbreviation or a name's initial, after which a space does not end the sentence:
#: ``Inc.``, ``vs.``, ``e.g.``, ``U.S.``, ``J.K.``, ``Dr.``, a lone capital other than ``I`` (``J. Cole``)
#: (``No.`` is read as "number", as every one of its 45 uses within a line in the shared AlpacaEval answers is;
#: known misses: a sentence that ends in a lone capital or ``p.m.``, "Plan B. Then ...")
ABBREVIATION_END = re.compile(
    r"(?:(?<![\w.])(?:Inc|Ltd|Corp|Co|Jr|Sr|Dr|Mr|Mrs|Ms|Prof|St|Mt|Gen|Col|Lt|Sgt|Rev|Dept|Univ|vs|approx|"
    r"Fig|Vol|No|Eq|al|cf)|(?<![\w.])(?:[A-Za-z]\.)+[A-Za-z]|(?<![\w.°])[A-HJ-Z])\.$")


def sentence_pieces(text: str) -> list[str]:
    """``text`` cut at :data:`SENTENCE_SEAM` into sentence, seam, sentence, ..., sentence (joined, they give the
    text back), except after a list's enumerator (``2.`` at a line's start stays with the item on its line) and,
    within a line, after an abbreviation or an initial (:data:`ABBREVIATION_END`) or before a lower-case letter."""
    pieces = SENTENCE_SEAM.split(text)
    i = 0
    while i + 2 < len(pieces):
        enumerator = ENUMERATOR.fullmatch(pieces[i]) and (i == 0 or "\n" in pieces[i - 1])
        inline = "\n" not in pieces[i + 1] and (ABBREVIATION_END.search(pieces[i]) or pieces[i + 2][:1].islower())
        if (enumerator and "\n" not in pieces[i + 1]) or inline:
            pieces[i:i + 3] = ["".join(pieces[i:i + 3])]
        else:
            i += 2
    return pieces


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (:func:`sentence_pieces`: split after ``.!?`` and at line breaks, a list item
    kept with its enumerator, no cut after an abbreviation or an initial within a line or before a lower-case
    letter); pieces without a word dropped.

    >>> sentences("Steps:\\n1. Mix. Add water.\\n2. Bake at 200. Serve.")
    ['Steps:', '1. Mix.', 'Add water.', '2. Bake at 200.', 'Serve.']
    """
    return [s.strip() for s in sentence_pieces(text.strip())[0::2] if WORD.search(s)]


def reorder_sentences(text: str, shuffle: Callable[[list[int]], None]) -> str:
    """``text`` with its sentences in the order ``shuffle`` (an in-place shuffle of a list of indices, e.g.
    ``random.Random(0).shuffle``) gives: the seams (spaces, line breaks) and the text's leading and trailing
    white space stay where they were, and a list item keeps its enumerator, so only the order changes. Never the
    original text when another order exists: the order is rotated until the text differs. Unchanged when no
    rotation changes it (fewer than two distinct pieces, counting pieces without a word such as ``---``)."""
    body = text.strip()
    if not body:
        return text
    lead, tail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    pieces = sentence_pieces(body)  # sentence, seam, sentence, ..., sentence
    parts = pieces[0::2]
    if len(set(parts)) < 2:
        return text
    order = list(range(len(parts)))
    shuffle(order)
    for _ in range(len(order)):
        pieces[0::2] = [parts[i] for i in order]
        if "".join(pieces) != body:
            return lead + "".join(pieces) + tail
        order = order[1:] + order[:1]
    return text


STOPWORDS = frozenset("the a an of to in on for and or is are was be it this that with as by at from can you your "
                      "i we they he she not but if so do does have has will would should could".split())


def _order_row(prompt: str, response: str) -> list[float]:
    raw = response.split()
    ends = [i for i, w in enumerate(raw[:-1]) if w[-1:] in ".!?"]
    lower_after_end = sum(raw[i + 1][:1].islower() for i in ends) / len(ends) if ends else 0.0
    mid = [i for i in range(1, len(raw)) if raw[i - 1][-1:] not in ".!?:;\"'”)" and raw[i][:1].isalpha()]
    caps_mid = sum(raw[i][:1].isupper() and raw[i] != "I" for i in mid) / len(mid) if mid else 0.0
    words = [w.lower() for w in WORD.findall(response)]
    pairs = list(zip(words, words[1:]))
    common = sum(p in COMMON_BIGRAMS for p in pairs) / len(pairs) if pairs else 0.0
    numbers = [int(n) for n in NUMBERED.findall(response)]
    steps = list(zip(numbers, numbers[1:]))
    out_of_order = sum(b != a + 1 and b != 1 for a, b in steps) / len(steps) if steps else 0.0
    parts = sentences(response)
    first = WORD.findall(parts[0].lower())[:1] if parts else []
    opens_with_connective = float(bool(first) and first[0] in CONNECTIVES and len(parts) > 1)
    bags = [{w for w in WORD.findall(s.lower()) if w not in STOPWORDS} for s in parts]
    cohesion = 0.0
    if len(bags) >= 3:
        def jac(x, y):
            return len(x & y) / len(x | y) if x | y else 0.0
        adjacent = np.mean([jac(bags[i], bags[i + 1]) for i in range(len(bags) - 1)])
        every = np.mean([jac(bags[i], bags[j]) for i in range(len(bags)) for j in range(i + 1, len(bags))])
        cohesion = float(adjacent - every)
    starts = [m.start() for m in LIST_MARKER.finditer(response)]
    inline = (sum(bool(response[response.rfind("\n", 0, i) + 1:i].strip()) for i in starts) / len(starts)
              if starts else 0.0)
    topic = {w for w in WORD.findall(prompt.lower()) if w not in STOPWORDS and len(w) > 2}
    lead = 0.0
    if topic and len(bags) >= 2:
        hits = [len(b & topic) / len(topic) for b in bags]
        lead = float(hits[0] - np.mean(hits))
    return [lower_after_end, caps_mid, common, out_of_order, opens_with_connective, cohesion, inline, lead]


ORDER_STATISTICS = ("lower_after_sentence_end", "capital_mid_sentence", "common_bigrams", "list_out_of_order",
                    "opens_with_connective", "adjacent_cohesion", "inline_list_markers", "prompt_words_lead")


def order_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``o(x, y)``: ``(N, 8)`` float32, columns :data:`ORDER_STATISTICS` (see the module docstring)."""
    return np.asarray([_order_row(p, r) for p, r in zip(prompts, responses)], np.float32).reshape(
        len(responses), len(ORDER_STATISTICS))


#: sentence-initial formulas that open an answer ("Sure!", "As an AI language model, ...") or close one ("In
#: conclusion", "I hope this helps"); in another position they mark sentences out of order
OPENERS = re.compile(r"^(?:sure|certainly|of course|absolutely|great question|good question|as an ai|hello|hi|"
                     r"thank you for)\b", re.IGNORECASE)
CLOSERS = re.compile(r"^(?:in conclusion|in summary|to summarize|to sum up|overall|ultimately|in short|i hope|hope "
                     r"this|let me know|feel free|good luck|in the end|all in all)\b", re.IGNORECASE)
#: sentence-initial sequence words, by rank
SEQUENCE_WORDS = {"first": 1, "firstly": 1, "to begin": 1, "second": 2, "secondly": 2, "next": 2, "then": 2,
                  "third": 3, "thirdly": 3, "fourth": 4, "fifth": 5, "finally": 9, "lastly": 9, "last": 9}
SEQUENCE = re.compile(r"^(" + "|".join(sorted(SEQUENCE_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
#: numbered labels in running text: "Verse 2", "Step 3", "Day 1"
LABEL_NUMBER = re.compile(r"\b(?:verse|step|part|day|chapter|stanza|round|phase|level|week|tip|rule|example|"
                          r"option|stage|scene|act)\s+(\d{1,2})\b", re.IGNORECASE)


def unmarked(sentence: str) -> str:
    """``sentence`` without its list enumerator ("2. ") and Markdown marks ("*", "#", ">", "-") at either end."""
    return LEADING_ENUMERATOR.sub("", sentence.strip(" \t*#>-"))


def _discourse_row(response: str) -> list[float]:
    parts = [unmarked(s) for s in sentences(response)]
    n = len(parts)
    opens = [bool(OPENERS.match(s)) for s in parts]
    closes = [bool(CLOSERS.match(s)) for s in parts]
    body = opens.index(False) if False in opens else n  # the answer's opening formulas come first...
    opener_late = float(any(opens[body:]))
    closer_early = float(any(closes[:n // 2]))  # ...and its closing ones in the second half
    ranks = [SEQUENCE_WORDS[m.group(1).lower()] for s in parts if (m := SEQUENCE.match(s))]
    steps = list(zip(ranks, ranks[1:]))
    sequence_back = sum(b < a for a, b in steps) / len(steps) if steps else 0.0
    labels = [int(x) for x in LABEL_NUMBER.findall(response)]
    label_steps = list(zip(labels, labels[1:]))
    labels_back = sum(b < a for a, b in label_steps) / len(label_steps) if label_steps else 0.0
    return [opener_late, closer_early, sequence_back, labels_back]


DISCOURSE_STATISTICS = ("opener_not_first", "closer_in_first_half", "sequence_words_backwards", "numbered_labels_backwards")


def discourse_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``d(y)``: ``(N, 4)`` float32, columns :data:`DISCOURSE_STATISTICS`: an opening formula ("Sure!", "As an
    AI language model") after a sentence that is not one, a closing one ("In conclusion", "I hope this helps")
    in the first half, sentence-initial sequence words ("First", "Then", "Finally") and numbered labels ("Verse 2",
    "Step 3") going backwards. ``prompts`` is unused (the signature of every statistics part)."""
    return np.asarray([_discourse_row(r) for r in responses], np.float32).reshape(len(responses),
                                                                                   len(DISCOURSE_STATISTICS))


def coherence_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``s(x, y)``: ``(N, 7)`` float32, columns :data:`COHERENCE_STATISTICS`."""
    return np.asarray([_coherence_row(p, r) for p, r in zip(prompts, responses)], np.float32).reshape(
        len(responses), len(COHERENCE_STATISTICS))


#: the columns of :func:`bag_statistics`
#: (named apart from :data:`COHERENCE_STATISTICS`' columns, so that ``--gate`` can name either)
BAG_STATISTICS = ("bag_distinct_words", "bag_repeated_4grams", "repeated_sentences", "bag_compression_ratio",
                  "bag_prompt_echo", "bag_prompt_coverage", "bag_log2_words_per_sentence", "unfinished_sentences")


#: closing marks that may follow a sentence's end (a quotation, a bracket, Markdown emphasis)
_CLOSING_MARKS = "[\"'\u201d\u2019)\\]*_`]"
#: where :func:`bag_sentences` cuts: every line break; white space after ``.!?:;`` (and up to two closing marks);
#: white space before a list's enumerator or bullet (an inline " - " too: "5 - 3" gives "5" and "3")
BAG_SEAM = re.compile(r"\s*\n\s*|(?<=[.!?:;])\s+|(?<=[.!?]" + _CLOSING_MARKS + r")\s+|(?<=[.!?]" + _CLOSING_MARKS
                      + _CLOSING_MARKS + r")\s+|\s+(?=\d{1,2}[.)]\s)|\s+(?=[*\u2022-]\s)")
_LETTER = re.compile(r"[^\W\d_]")


def bag_sentences(text: str) -> list[str]:
    """The pieces of ``text`` as a bag, sorted: cut at :data:`BAG_SEAM` with none of :func:`sentences`' rules
    that read a cut's neighbours (an enumerator kept with its item, no cut before a lower-case letter or after an
    abbreviation), list marks stripped (:func:`unmarked`), pieces without a letter dropped (a lone "2." or "---";
    if no piece has a letter, the pieces with a digit are kept: "42", a grid of numbers). A reordering of the
    text's sentences (:func:`reorder_sentences`, the layout kept) gives the same bag unless a sentence that ended
    without a mark ("1 egg, beaten" at a line's end) lands before a space; on the AlpacaEval stress set 0.82 of
    the shuffles do (:func:`sentences`' own pieces: 0.47).

    >>> bag_sentences("Steps:\\n1. Mix. Add water. 2. Bake (at 200.) Serve.")
    ['Add water.', 'Bake (at 200.)', 'Mix.', 'Serve.', 'Steps:']
    >>> bag_sentences("42")
    ['42']
    """
    return sorted(bag_pieces(text))


def bag_pieces(text: str) -> list[str]:
    """The pieces of :func:`bag_sentences` in the text's own order.

    >>> bag_pieces("Steps:\\n1. Mix. Add water.")
    ['Steps:', 'Mix.', 'Add water.']
    """
    pieces = [unmarked(piece) for piece in BAG_SEAM.split(text.strip())]
    return [u for u in pieces if _LETTER.search(u)] or [u for u in pieces if WORD.search(u)]


def seeded_orders(parts: list[str], k: int, sep: str) -> list[str]:
    """``k`` orders of ``parts`` (sorted by the caller) joined by ``sep``, drawn with a seed taken from the parts
    themselves: the same pieces give the same ``k`` texts, whatever order or layout they came in."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return [sep.join(parts[i] for i in rng.permutation(len(parts))) for _ in range(k)]


def _bag_row(prompt: str, response: str) -> list[float]:
    parts = [s.lower() for s in bag_sentences(response)] or [""]
    per_sentence = [WORD.findall(s) for s in parts]
    distinct, repeated, compression, echo, coverage = _word_statistics(prompt, per_sentence, "\n".join(parts))
    words = sum(map(len, per_sentence))
    unfinished = sum(not s or s[-1] not in CLEAN_END for s in parts) / len(parts)
    return [distinct, repeated, (len(parts) - len(set(parts))) / len(parts), compression, echo, coverage,
            math.log2(1 + words / len(parts)), unfinished]


def bag_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N, 8)`` float32, columns :data:`BAG_STATISTICS`: the text statistics of the response as a *bag of its
    sentences* (:func:`bag_sentences`), so that no reordering of them (:func:`reorder_sentences`) that gives the
    same bag moves any column:
    distinct words, repeated word 4-grams and repeated sentences (the answer said twice), the compressibility of the
    sentences sorted, the share of the response's word trigrams (within a sentence) found in the prompt and of the
    prompt's content words the response covers, words per sentence, and the share of pieces that do not end in
    punctuation (:data:`CLEAN_END`, read after the list marks are stripped: headings and list items without a full
    stop count, as does a cut answer's last piece). Beside an order-blind view of the words (``sentence_bag``), a
    reward built on these sees order through the parts meant for it (``order_score``, ``line_ending``)."""
    return np.asarray([_bag_row(p, r) for p, r in zip(prompts, responses)], np.float32).reshape(
        len(responses), len(BAG_STATISTICS))


#: the columns of :func:`repeat_statistics`
REPEAT_STATISTICS = ("repeated_piece_share",)


def _repeated_piece_share(response: str) -> float:
    counts = Counter(piece.lower() for piece in bag_pieces(response))
    return sum(c > 1 for c in counts.values()) / len(counts) if counts else 0.0


def repeat_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N, 1)`` float32, :data:`REPEAT_STATISTICS`: the share of the response's *distinct* pieces
    (:func:`bag_pieces`, lower-cased) that occur more than once. An answer said twice or more reads 1, whatever it
    is, where its pieces repeat alike up to case ("Go home. Go home!" are two pieces); a song reads its chorus's lines over all its distinct lines (the chorus repeated, the verses not); prose 0.
    ``repeated_sentences`` (:func:`bag_statistics`) counts the repeats among *all* pieces, so a five-verse song
    whose chorus comes five times sits halfway to the answer said five times (0.4 against 0.8). Order-blind, as
    the bag is. ``prompts`` is unused.

    >>> repeat_statistics(["", "", ""], ["A. B.", "A. B.\\n\\nA. B.", "A.\\nChorus.\\nB.\\nChorus."])[:, 0].tolist()
    [0.0, 1.0, 0.3333333432674408]
    """
    return np.asarray([_repeated_piece_share(r) for r in responses], np.float32).reshape(len(responses), 1)


#: the columns of :func:`copy_statistics`
COPY_STATISTICS = ("prompt_copied",)


def _copied(prompt: str, response: str) -> float:
    p_tri = set(_ngrams([w.lower() for w in WORD.findall(prompt)], 3))
    r_tri = set(_ngrams([w.lower() for w in WORD.findall(response)], 3))
    return len(p_tri & r_tri) / len(p_tri) if p_tri else 0.0


def copy_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N, 1)`` float32, :data:`COPY_STATISTICS`: the share of the prompt's word trigrams that the response
    reproduces. ``prompt_echo`` (:func:`coherence_statistics`) is the response's side, the share of *its*
    trigrams found in the prompt: 1 for the prompt echoed back and for a task's answer that rewrites a sentence
    quoted in it alike. This side tells them apart: the echo copies the whole prompt (1), the rewrite the quoted
    sentence (a share), a usual answer next to nothing. A prompt of fewer than three words has no trigrams: 0
    (the gate's cosine and ``prompt_coverage`` still see its echo)."""
    return np.asarray([_copied(p, r) for p, r in zip(prompts, responses)], np.float32).reshape(len(responses), 1)


#: the columns of :func:`overlap_statistics`
OVERLAP_STATISTICS = ("prompt_jaccard",)


def _prompt_jaccard(prompt: str, response: str) -> float:
    p_words = [w.lower() for w in WORD.findall(prompt)]
    r_words = [w.lower() for w in WORD.findall(response)]
    n = 3 if min(len(p_words), len(r_words)) >= 3 else 1
    p_grams, r_grams = set(_ngrams(p_words, n)), set(_ngrams(r_words, n))
    union = p_grams | r_grams
    return len(p_grams & r_grams) / len(union) if union else 0.0


def overlap_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N, 1)`` float32, :data:`OVERLAP_STATISTICS`: the Jaccard overlap of the prompt's and the response's word
    trigrams (lower-cased; their words where either has fewer than three), ``|P & R| / |P | R|``. The prompt echoed
    back reads 1; an answer that rewrites a sentence quoted in its prompt a share (it leaves out the instruction and
    adds what it changes); a usual answer next to nothing. ``prompt_copied`` (:func:`copy_statistics`) reads the
    prompt's side alone, and on the shared AlpacaEval answers it is over 0.5 for one real answer in ten (this column for 0.0023):
    an answer that restates the question before it answers copies much of it, but adds more of its own.

    >>> overlap_statistics(["Name a fruit that is red.", "hi"], ["Name a fruit that is red.", "Hi there!"])[:, 0].tolist()
    [1.0, 0.5]
    """
    return np.asarray([_prompt_jaccard(p, r) for p, r in zip(prompts, responses)], np.float32).reshape(
        len(responses), 1)


#: the columns of :func:`ending_statistics`
ENDING_STATISTICS = ("ends_like_its_lines",)


def _clean(line: str) -> bool:
    return bool(line) and (line[-1] in CLEAN_END or line.endswith("```"))


def _ends_like_its_lines(response: str) -> float:
    lines = [line.rstrip() for line in response.splitlines() if line.strip()]
    if not lines or _clean(lines[-1]):
        return 1.0
    earlier = lines[:-1]
    return sum(not _clean(line) for line in earlier) / len(earlier) if len(earlier) >= 2 else 0.0


def ending_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N, 1)`` float32, :data:`ENDING_STATISTICS`: 1 where the response ends on a clean character (as
    ``clean_ending``); otherwise the share of its earlier lines (two or more) that end without one too. A song, a
    list of names or a table ends as its lines do (near 1); prose cut mid-sentence does not (0). ``prompts`` is
    unused."""
    return np.asarray([_ends_like_its_lines(r) for r in responses], np.float32).reshape(len(responses), 1)



#: the columns of :func:`last_line_statistics`
LAST_LINE_STATISTICS = ("last_line_complete",)
#: a line that is a list mark and nothing else: ``-``, ``3.``, ``d)``, ``(b)``, ``##``
BARE_ITEM = re.compile(r"^\s*(?:[-*•+]|\(?\d{1,2}[.)]|\(?[a-zA-Z][.)]|#{1,6})\s*$")
#: a heading: a markdown one, or a line (a list item) in bold and nothing else
HEADING = re.compile(r"^\s*(?:#{1,6}\s.*|(?:[-*•]|\d{1,2}[.)])?\s*\*\*[^*]+\*\*:?)$")
#: a heading of more words than this is a bold sentence (a closing note), not a heading
HEADING_WORDS = 10


def _cells(row: str) -> int:
    return row.strip().strip("|").count("|") + 1


def _announces(line: str) -> bool:
    """A line that promises more: a list mark alone, an introduction ending in a colon, a heading."""
    return bool(BARE_ITEM.match(line)) or line.endswith(":") or (
        bool(HEADING.match(line)) and len(WORD.findall(line)) <= HEADING_WORDS)


def _last_line_complete(response: str) -> float:
    lines = [line.rstrip() for line in response.splitlines() if line.strip()]
    if not lines:
        return 0.0
    last, earlier = lines[-1], lines[:-1]
    if _announces(last):
        return 0.0
    rows = [line for line in earlier if line.lstrip().startswith("|")]
    if last.lstrip().startswith("|") and rows:
        return min(1.0, _cells(last) / float(np.median([_cells(r) for r in rows]))) if last.endswith("|") else 0.0
    if _clean(last):
        return 1.0
    peers = [line for line in earlier if not _clean(line) and not BARE_ITEM.match(line)]
    if len(peers) < 2:
        return 0.0
    typical = float(np.median([len(WORD.findall(line)) for line in peers]))
    return len(peers) / len(earlier) * min(1.0, len(WORD.findall(last)) / max(typical, 1.0))


def last_line_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """``(N, 1)`` float32, :data:`LAST_LINE_STATISTICS`: whether the response's last line is whole, read against its
    own lines. 0 for a last line that promises more and stops (a list mark alone, a line ending in a colon, a
    heading) and for a table row that does not close (``| 2011 | 1:00 PM`` ...); a closed row's cells over the
    table's usual count; 1 for another line that ends on a clean character (:data:`CLEAN_END`); otherwise, as
    :func:`ending_statistics`, the share of the earlier lines that end without one either (0 with fewer than two),
    times the last line's words over the usual words of those lines (at most 1): a song cut after one word of its
    line is not a song that ends as its lines do. Of the stress test's 407 truncations it reads 0.029 as whole
    (``line_ending``: 0.071), of their real answers 0.025 as cut (0.022), and it puts 0.18 of the sentence shuffles
    below their answer (0.12): ``benchmarks/stress_statistics.py --column``, section 2y. ``prompts`` is unused.

    Read as cut though whole (as measured in round 24, kept so that its results reproduce): an empty response (0;
    ``line_ending`` 1), a short closing line in bold ("**Enjoy your bread!**", a list of bold names' last), an
    answer that is one mark ("B.", "42."), a table whose rows do not close with ``|``, a song's short refrain, and a
    post that ends in hashtags or an emoji (166 of the 661 distinct AlpacaEval (instruction, answer) pairs it reads 0 for, 77 and 89:
    ``benchmarks/stress_statistics.py --column last_line_complete --real-at-most 0``; section 2ah)."""
    return np.asarray([_last_line_complete(r) for r in responses], np.float32).reshape(len(responses), 1)


#: the columns of :func:`closed_last_line_statistics`
CLOSED_LAST_LINE_STATISTICS = ("last_line_closed",)
#: a hashtag, with any emphasis marks around it: ``#Impact``, ``**#Innovation**``, ``#WomenInSTEM,`` (not ``#1``, not a
#: colour, ``#F8D0D0``)
HASHTAG = re.compile(r"^[*_]*#(?![0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?(?:[0-9a-fA-F]{2})?\b)[^\W\d]\w*[*_,.]*$")
#: an explicit end mark: ``**End of Act I**``, ``[End of Episode]``, ``THE END``
END_MARK = re.compile(r"^[\W_]*(?:the\s+)?end\b(?:\s+of\b.*)?[\W_]*$", re.IGNORECASE)
#: a placeholder on a line of its own, the signature of a letter or a post: ``**[Your Name]**``, ``[Company Website]``
PLACEHOLDER = re.compile(r"^[*_\s-]*\[[^\]]+\][*_\s]*$")
#: a sentence in emphasis marks that ends as a sentence does: ``**Enjoy!**``, ``*Happy baking.*``
CLOSING_EMPHASIS = re.compile(r"[.!?…)\"'”’][*_]+$")
#: sentence ends outside ASCII that :data:`CLEAN_END` lacks (CJK punctuation)
WIDE_END = set("。！？」』）")


def _sign_off(char: str) -> bool:
    """An emoji, a symbol or a joiner outside ASCII: what a post closes on after its last sentence."""
    return not char.isascii() and char not in WIDE_END and unicodedata.category(char)[0] in "SCZM"


def _without_sign_off(line: str) -> tuple[str, bool]:
    """``line`` without its closing run of emoji and hashtags (a tag run: from the first hashtag on, at least half
    the words hashtags), and whether the run held an emoji or a hashtag."""
    signed, rest = False, line.rstrip()
    while True:
        kept = rest
        while kept and (kept[-1].isspace() or _sign_off(kept[-1])):
            signed |= not kept[-1].isspace() and unicodedata.category(kept[-1])[0] == "S"
            kept = kept[:-1]
        words = list(re.finditer(r"\S+", kept))
        tags = [bool(HASHTAG.match(w.group())) for w in words]
        start = next((i for i in range(len(words)) if tags[i] and 2 * sum(tags[i:]) >= len(words) - i), None)
        if start is not None:
            kept, signed = kept[: words[start].start()].rstrip(), True
        if kept == rest:
            return rest, signed
        rest = kept


def _last_line_closed(response: str) -> float:
    lines = [line.rstrip() for line in response.splitlines() if line.strip()]
    if not lines:
        return 0.0
    as_is = _last_line_complete(response)
    last, signed = _without_sign_off(lines[-1])
    if signed and (not last or BARE_ITEM.match(last)):  # a line of tags or emoji (a list item of them) closes a post
        return 1.0
    if not last:  # joiners alone
        return as_is
    if END_MARK.match(last) or PLACEHOLDER.match(last) or CLOSING_EMPHASIS.search(last) or last[-1] in WIDE_END or (
            len(lines) == 1 and BARE_ITEM.match(lines[0])):
        return 1.0
    if HEADING.match(last) and len(lines) >= 3 and sum(map(bool, map(HEADING.match, lines[:-1]))) >= 0.8 * (
            len(lines) - 1):  # the last of a list of bold names, not a heading with nothing under it
        return 1.0
    if last == lines[-1]:  # nothing set aside: read as last_line reads it
        return as_is
    return max(as_is, _last_line_complete("\n".join([*lines[:-1], last])))


def closed_last_line_statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    r"""``(N, 1)`` float32, :data:`CLOSED_LAST_LINE_STATISTICS`: :func:`last_line_statistics` with the ways a whole
    answer closes that it reads as cut read as whole: a post's closing hashtags and emoji set aside (the line before
    them read, a line of them alone whole), a sentence in bold or italics that ends as a sentence does
    (``**Enjoy!**``), an end mark (``**[End of Episode]**``), a placeholder signature (``**[Your Name]**``), the last
    of a list of bold names (four of five earlier lines headings too), a sentence end outside ASCII (``。``), and an
    answer that is one list mark (``B.``, ``42.``). Never below ``last_line``: a heading, a colon, a list mark after a body, a row that does not close and a line cut short of its peers are read
    as it reads them. ``prompts`` is unused.

    >>> closed_last_line_statistics([""] * 4, ["We did it. #Impact #Together", "Thanks!\n\n**Enjoy!**",
    ...                                        "B.", "Here are the steps:\n\n**Step 2**"])[:, 0].tolist()
    [1.0, 1.0, 1.0, 0.0]
    """
    return np.asarray([_last_line_closed(r) for r in responses], np.float32).reshape(len(responses), 1)

__all__ = ["BAG_STATISTICS", "COHERENCE_STATISTICS", "COPY_STATISTICS", "ENDING_STATISTICS", "LAST_LINE_STATISTICS", "CLOSED_LAST_LINE_STATISTICS", "closed_last_line_statistics", "copy_statistics", "ending_statistics", "last_line_statistics", "DEFAULT_NUISANCE", "DISCOURSE_STATISTICS", "NUISANCE_COVARIATES",
           "ORDER_STATISTICS", "bag_pieces", "bag_sentences", "bag_statistics", "coherence_statistics", "discourse_statistics", "judged_covariates", "nuisance_covariates", "order_statistics", "parse_names",
           "reorder_sentences", "seeded_orders", "sentence_pieces", "sentences", "unmarked"]
