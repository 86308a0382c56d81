r"""What the reward heads see of a response: encoder views and text statistics, as one vector.

A representation is a ``+``-joined list of parts (``EncoderConfig.representation``,
``--representation``); the response's feature vector ``h(x, y)`` is their concatenation, and the
prompt's own embedding ``e_x`` is always given to the heads beside it.

==================  ==========  ===========================================================
part                dimension   what
==================  ==========  ===========================================================
``joint``           E           mean over the tokens of prompt + response (version 0.1)
``response_tokens`` E           mean over the *response* tokens of the prompt + response
                                encoding: contextualised by the prompt, not diluted by it;
                                a long response shows its end (the prompt keeps its start)
``response``        E           the response encoded alone: a long one shows its start
``interaction``     2E + 1      bi-encoder relevance features of the normalised prompt and
                                response-alone embeddings ``x̂ ⊙ ŷ``, ``|x̂ − ŷ|``, ``cos(x̂, ŷ)``
``statistics``      7           :func:`vrm_pyro.covariates.coherence_statistics`: repetition,
                                compressibility, prompt echo and coverage, clean ending
``prompt_copy``     1           :func:`vrm_pyro.covariates.copy_statistics`: the share of the
                                prompt's word trigrams the response reproduces (the prompt echoed
                                back: 1; a rewrite of a sentence quoted in the prompt: a share)
``line_ending``     1           :func:`vrm_pyro.covariates.ending_statistics`: a clean ending, or
                                an ending like the answer's own lines (a song, a list of names)
``last_line``       1           :func:`vrm_pyro.covariates.last_line_statistics`: ``line_ending``
                                that also reads the last line against the answer's lines: a list
                                mark alone, a dangling colon or heading, a table row that does not
                                close, a line much shorter than its peers are a cut answer's
``closed_last_line`` 1          :func:`vrm_pyro.covariates.closed_last_line_statistics`: ``last_line``
                                with the ways a whole answer closes read as whole: a post's closing
                                hashtags and emoji, a bold closing sentence, an end mark, a signature
                                placeholder (never below ``last_line``)
``piece_repeats``   1           :func:`vrm_pyro.covariates.repeat_statistics`: the share of the
                                answer's distinct pieces said more than once (the answer repeated:
                                1; a song's chorus: its lines' share; prose: 0)
``prompt_overlap``  1           :func:`vrm_pyro.covariates.overlap_statistics`: the Jaccard
                                overlap of the prompt's and the answer's word trigrams (the prompt
                                echoed back: 1; a rewrite of a quoted sentence: a share; an answer: ~0)
``order``           8           :func:`vrm_pyro.covariates.order_statistics`: word and
                                sentence order (case after a sentence end, frequent
                                bigrams, list numbering and line starts, opening
                                connective, cohesion, the prompt's words up front)
``discourse``       4           :func:`vrm_pyro.covariates.discourse_statistics`: where
                                the answer's formulas sit (an opener after the body has
                                begun, a closer in the first half) and whether sequence
                                words and numbered labels run backwards
``order_score``     1           :mod:`vrm_pyro.order_model`: a sentence-order model fitted on the
                                training responses against their own reorderings (self-supervised):
                                the order and discourse statistics and the sentences' first words by
                                position, as one log-odds. Needs a fitted model (``vrm train`` fits it;
                                a checkpoint carries it)
``order_margin``    1           the same model's score minus its mean over four reorderings of the
                                answer's sentences drawn from them sorted (the same for an answer
                                and its shuffles): order alone, the sentences' own style cancelled
``sentence_order``  E           the response's sentences, each encoded alone, weighted by
                                their centred position (:func:`sentence_order`): what the
                                answer says last minus what it says first
``sentence_bag``    E           the response as a bag of its sentences
                                (:func:`vrm_pyro.covariates.bag_sentences`): the mean of their
                                normalised embeddings, each encoded alone. A reordering that gives
                                the same bag leaves it as it was, to the bit; the stress test's
                                shuffles mostly do (benchmarks/README.md, section 2t)
``bag_interaction`` 2E + 1      ``interaction``'s relevance features on the bag: ``x̂ ⊙ b̂``,
                                ``|x̂ − b̂|``, ``cos(x̂, b̂)`` (``--gate bag_cosine``)
``bag_statistics``  8           :func:`vrm_pyro.covariates.bag_statistics`: ``statistics`` read off
                                the bag of sentences (repetition, compressibility, echo, coverage,
                                words per sentence, pieces that do not end in punctuation), so a
                                reordering that gives the same bag moves none of them
``sentence_flow``   4           from the same sentence embeddings (:func:`sentence_flow`): how
                                much more alike adjacent sentences are than any two, how much
                                more the first sentence is about the prompt than the rest,
                                relevance late minus early, and how central the first
                                sentence is: what a reordering moves, beside a bag of them
``likelihood``      4           :mod:`vrm_pyro.likelihood`: a small causal LM's mean token
                                log-probability of the response given the prompt and alone,
                                its 10th percentile given the prompt, and log p(end of turn):
                                fluency, order, relevance (their difference) and completeness
``likelihood_contrast`` 2       the same LM's relevance and completeness alone: the PMI
                                (given the prompt minus alone, per token) and log p(end of turn),
                                without the raw fluency statistics
``likelihood_gate`` 2           ``min(PMI, 0)`` and log p(end of turn): the PMI only where the
                                answer is *less* likely after the prompt than without it (0.4% of
                                real training answers, 98% of answers to another prompt), so the
                                judge's preferences among real answers cannot set its weight;
                                junk pairs do
``likelihood_fluency`` 3        fluency given the prompt, the PMI and log p(end of turn): the
                                ``likelihood`` part without the low tail, ``alone`` entering only
                                through the PMI, so that a sign on fluency and PMI
                                (``--monotone fluency``) binds: no free column can undo it
``likelihood_order`` 2          the LM's order gain: mean token log-probability of the response
                                minus that of the same sentences in another order
                                (:func:`vrm_pyro.likelihood.permute_sentences`), given the prompt
                                and alone. A real answer gains from its order; an answer already
                                shuffled gains nothing on average. 0 for one sentence; one more
                                LM pass pair per text. Both texts are cut to the LM's window
                                (head and tail), so for a long answer the two windows hold partly
                                different sentences
``likelihood_order_margin`` 1   the LM's fluency given the prompt against the answer's own pieces
                                in canonical orders: ``ℓ(x, y) − mean_k ℓ(x, π_k(y))`` over
                                :func:`vrm_pyro.likelihood.canonical_permutations` (k = 2), which an
                                answer and a shuffle that keeps its bag share, so the gap between
                                them is ``ℓ``'s alone, and what the pieces score in any order
                                cancels. 0 for fewer than two distinct pieces; two more LM texts per
                                answer. Its level still favours some junk (a scaffold); added post
                                hoc to the default's reward, saturated, it roughly halved the
                                shuffles that get through, never below 0.033 on average over three
                                seeds, and let more scaffolds through
                                (benchmarks/README.md, section 2w)
==================  ==========  ===========================================================

``joint`` and ``response_tokens`` come from the same forward pass; ``response`` and
``interaction`` share one more. Together ``response_tokens`` and ``response`` are a head-and-tail
view of a long answer at the cost of two windows. ``sentence_order`` costs about one more pass over the
response's tokens, in short texts (a sentence seen before, in another answer or a reordering of this
one, is not encoded again). Every view is cached on disk by the encoder.

The three ``bag`` parts make a (nearly) *order-blind base*: a reward on them and on parts meant to see order
(``order_score``, ``line_ending``) ranks an answer against its own sentence shuffle by those parts alone, so its
error on shuffles is theirs, whatever the other weights, wherever the shuffle gives the same bag (0.82 of the
stress test's shuffles; ``prompt_copy`` moves in 0.04 of them: benchmarks/README.md, section 2t).

Mean pooling sees order only by accident: an answer and the same sentences shuffled get ``response`` vectors
apart by about a third of their spread across answers (a long answer's window holds other sentences, every token's
context changes), which says nothing of which order is right. ``sentence_order`` weights the sentences by a linear ramp over their positions,

.. math:: o(y) = \frac{1}{n} \sum_{i=1}^{n} c_i\, \hat e(s_i), \qquad c_i = \frac{2(i-1)}{n-1} - 1,

(zero for one sentence), so a linear head on it scores ``sum_i c_i (w · ê(s_i))``: how well the sentences'
order agrees with a learned "comes early / comes late" direction ``w`` (an introduction first, a
conclusion last). Reversing the order flips its sign (for two sentences, so does a swap); truncation and
repetition flatten it. A long answer keeps its first and last :data:`MAX_SENTENCES` // 2 sentences and is
averaged over those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.nn import functional as F

from vrm_pyro.covariates import (
    BAG_STATISTICS,
    CLOSED_LAST_LINE_STATISTICS,
    COHERENCE_STATISTICS,
    COPY_STATISTICS,
    DISCOURSE_STATISTICS,
    ENDING_STATISTICS,
    LAST_LINE_STATISTICS,
    ORDER_STATISTICS,
    OVERLAP_STATISTICS,
    REPEAT_STATISTICS,
    bag_sentences,
    bag_statistics,
    closed_last_line_statistics,
    coherence_statistics,
    copy_statistics,
    discourse_statistics,
    ending_statistics,
    last_line_statistics,
    order_statistics,
    overlap_statistics,
    repeat_statistics,
    sentences,
)
from vrm_pyro.errors import ConfigError
from vrm_pyro.likelihood import LIKELIHOOD_STATISTICS, canonical_permutations, permute_sentences
from vrm_pyro.order_model import PARTS as ORDER_PARTS
from vrm_pyro.order_model import margin_against

#: the parts computed by the likelihood model (``EncoderConfig.likelihood_model``)
LIKELIHOOD_PARTS = ("likelihood", "likelihood_contrast", "likelihood_gate", "likelihood_fluency", "likelihood_order",
                    "likelihood_order_margin")
PARTS = ("joint", "response_tokens", "response", "interaction", "statistics", "prompt_copy", "line_ending", "last_line",
         "closed_last_line", "piece_repeats", "prompt_overlap", "order", "discourse", "order_score",
         "order_margin", "sentence_order", "sentence_bag", "bag_interaction", "bag_statistics",
         "sentence_flow", *LIKELIHOOD_PARTS)
#: the parts read off the text alone, ``part -> (statistics(prompts, responses) -> (N, C), its C column names)``: no
#: encoder pass, no cache. Their columns are :data:`NAMED_COLUMNS` too (``--gate`` may pick single ones)
TEXT_PARTS = {"statistics": (coherence_statistics, COHERENCE_STATISTICS),
              "prompt_copy": (copy_statistics, COPY_STATISTICS),
              "line_ending": (ending_statistics, ENDING_STATISTICS),
              "last_line": (last_line_statistics, LAST_LINE_STATISTICS),
              "closed_last_line": (closed_last_line_statistics, CLOSED_LAST_LINE_STATISTICS),
              "piece_repeats": (repeat_statistics, REPEAT_STATISTICS),
              "prompt_overlap": (overlap_statistics, OVERLAP_STATISTICS),
              "order": (order_statistics, ORDER_STATISTICS),
              "discourse": (discourse_statistics, DISCOURSE_STATISTICS),
              "bag_statistics": (bag_statistics, BAG_STATISTICS)}
#: the parts that end in a prompt-response cosine, and the name ``--gate`` picks it by
COSINES = {"interaction": "cosine", "bag_interaction": "bag_cosine"}
#: the columns of ``sentence_flow`` (:func:`sentence_flow`)
SENTENCE_FLOW = ("adjacent_similarity", "lead_relevance", "relevance_slope", "lead_centrality")
#: ``sentence_order`` encodes at most this many sentences of a response: the first and last half of them
MAX_SENTENCES = 64
DEFAULT_REPRESENTATION = "joint"


def parse_representation(spec: str) -> list[str]:
    """``"response_tokens+response"`` -> ``["response_tokens", "response"]``, checked."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if not parts or bad:
        raise ConfigError(f"representation {spec!r} (EncoderConfig.representation, --representation): "
                          f"unknown part(s) {bad or '(none given)'}; join parts from {', '.join(PARTS)} with '+'")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"representation {spec!r} names a part twice")
    return parts


def feature_groups(spec: str, emb_dim: int) -> tuple[int, ...]:
    """Widths of the blocks of ``h(x, y)`` that each carry one kind of evidence, in order: one per part, except
    ``interaction``, which is three (``x̂ ⊙ ŷ``: E, ``|x̂ − ŷ|``: E, the cosine: 1). What
    ``ModelConfig.path_prior="part"`` gives equal prior variance; they sum to :func:`representation_dim`."""
    sizes = {"joint": (emb_dim,), "response_tokens": (emb_dim,), "response": (emb_dim,),
             "interaction": (emb_dim, emb_dim, 1), "order_score": (1,), "order_margin": (1,),
             "sentence_order": (emb_dim,), "sentence_bag": (emb_dim,), "bag_interaction": (emb_dim, emb_dim, 1),
             "sentence_flow": (len(SENTENCE_FLOW),), "likelihood": (len(LIKELIHOOD_STATISTICS),),
             "likelihood_contrast": (2,), "likelihood_gate": (2,), "likelihood_fluency": (3,),
             "likelihood_order": (2,), "likelihood_order_margin": (1,),
             **{part: (len(columns),) for part, (_, columns) in TEXT_PARTS.items()}}
    return tuple(w for p in parse_representation(spec) for w in sizes[p])


#: Features whose direction is known: 1 per column where more of it can only make a better answer, 0 where the
#: column is free. ``ModelConfig.monotone`` names them; the Bayesian path then weighs those columns with a
#: positive weight of the prior ``ModelConfig.monotone_prior`` gives (see
#: :class:`~vrm_pyro.models.paths.BayesianLinearPath` and :func:`feature_orientation`).
ORIENTED_FEATURES = {
    "cosine": ("interaction", None),  # the prompt-response cosine: relevance
    "bag_cosine": ("bag_interaction", None),  # the same on the bag of sentences
    # the share of the prompt's content words that the answer's sentences cover: relevance that a cut answer, a
    # scaffold or another prompt's answer lose (an echo of the prompt wins it: the gate's prompt_copy is for that)
    "bag_prompt_coverage": ("bag_statistics", tuple(int(c == "bag_prompt_coverage") for c in BAG_STATISTICS)),
    "likelihood": ("likelihood", (1, 0, 1, 1)),  # fluency given the prompt, its low tail, p(end); not "alone"
    "likelihood_contrast": ("likelihood_contrast", (1, 1)),  # the PMI, log p(end of turn)
    "likelihood_gate": ("likelihood_gate", (1, 1)),  # min(PMI, 0), log p(end of turn)
    "pmi": ("likelihood_contrast", (1, 0)),  # the PMI alone (log p(end) free)
    "pmi_gate": ("likelihood_gate", (1, 0)),  # min(PMI, 0) alone (log p(end) free)
    # fluency given the prompt and the PMI (log p(end) free): the reward rises with log p(y | x) and falls with
    # log p(y) by less, r = a log p(y|x) + b (log p(y|x) - log p(y)) + ..., a, b >= 0
    "fluency": ("likelihood_fluency", (1, 1, 0)),
    "order_gain": ("likelihood_order", (1, 1)),  # an answer in its own order beats its sentences reordered
    "order_score": ("order_score", (1,)),  # the same, as the fitted sentence-order model sees it
    "order_margin": ("order_margin", (1,)),  # the same, against the answer's own reorderings
    "order_fluency": ("likelihood_order_margin", (1,)),  # the LM's fluency against the answer's pieces reordered
}


def feature_orientation(spec: str, emb_dim: int, monotone: Sequence[str],
                        priors: Sequence[str] | None = None) -> tuple[int, ...]:
    """``(F,)`` codes: on the columns of ``h(x, y)`` that the names in ``monotone`` (keys of
    :data:`ORIENTED_FEATURES`) make monotone, ``1 +`` the index in :data:`~vrm_pyro.config.MONOTONE_PRIORS` of
    that name's prior (``priors``, one per name; default half-normal: 1), 0 elsewhere. Every name must be in the
    representation."""
    from vrm_pyro.config import MONOTONE_PRIORS, monotone_off_hint

    priors = list(priors or ["half_normal"] * len(monotone))
    if len(priors) != len(monotone) or set(priors) - set(MONOTONE_PRIORS):
        raise ConfigError(f"ModelConfig.monotone_prior (--monotone-prior): one of {', '.join(MONOTONE_PRIORS)} per "
                          f"monotone feature {list(monotone)}, got {priors}")
    code = {name: 1 + MONOTONE_PRIORS.index(prior) for name, prior in zip(monotone, priors)}
    parts = parse_representation(spec)
    out: list[int] = []
    wanted = {}
    for name in monotone:
        if name not in ORIENTED_FEATURES:
            raise ConfigError(f"ModelConfig.monotone (--monotone): {name!r} has no known direction; choose from "
                              f"{', '.join(ORIENTED_FEATURES)}")
        part, _ = ORIENTED_FEATURES[name]
        if part not in parts:
            raise ConfigError(f"ModelConfig.monotone (--monotone): {name!r} needs the representation part {part!r}, "
                              f"which {spec!r} (EncoderConfig.representation) does not have: add +{part}, "
                              f"{monotone_off_hint()}")
        if part in wanted:
            raise ConfigError(f"ModelConfig.monotone (--monotone): {name!r} and {wanted[part]!r} both orient the part "
                              f"{part!r}; name one")
        wanted[part] = name
    for part in parts:
        width = sum(feature_groups(part, emb_dim))
        if part not in wanted:
            out += [0] * width
        elif part in COSINES:
            out += [0] * (width - 1) + [code[wanted[part]]]
        else:
            out += [code[wanted[part]] * v for v in ORIENTED_FEATURES[wanted[part]][1]]
    return tuple(out)


#: the named columns of the statistics parts: ``--gate`` may pick single ones (``clean_ending``, ...)
NAMED_COLUMNS = {**{part: columns for part, (_, columns) in TEXT_PARTS.items()},
                 "sentence_flow": SENTENCE_FLOW, "likelihood": LIKELIHOOD_STATISTICS}


def part_columns(spec: str, emb_dim: int, names: Sequence[str]) -> torch.Tensor:
    """``(F,)`` bool: the columns of ``h(x, y)`` that belong to the parts ``names`` of the representation ``spec``
    (``"cosine"``: the last column of ``interaction``, the prompt-response cosine; ``"bag_cosine"`` that of
    ``bag_interaction``; a statistic's name, e.g.
    ``"clean_ending"``: that one column of its part, :data:`NAMED_COLUMNS`). What ``ModelConfig.gate`` feeds the
    validity gate."""
    parts = parse_representation(spec)
    column_part = {col: part for part, cols in NAMED_COLUMNS.items() for col in cols}
    cosine_of = {name: part for part, name in COSINES.items()}
    wanted: dict[str, set[int] | None] = {}  # part -> the column indices within it (None: every column)
    for name in names:
        if name in cosine_of:
            part = cosine_of[name]
            index = sum(feature_groups(part, emb_dim)) - 1
        elif name in column_part:
            part, index = column_part[name], NAMED_COLUMNS[column_part[name]].index(name)
        elif name in PARTS:
            part, index = name, None
        else:
            raise ConfigError(f"ModelConfig.gate (--gate): unknown part {name!r}; name parts of the representation "
                              f"({'+'.join(parts)}), {' or '.join(map(repr, COSINES.values()))} or a column of "
                              f"{', '.join(NAMED_COLUMNS)} "
                              "(vrm_pyro.representations.NAMED_COLUMNS)")
        if part not in parts:
            raise ConfigError(f"ModelConfig.gate (--gate): {name!r} needs the representation part {part!r}, which "
                              f"{spec!r} (EncoderConfig.representation) does not have: add +{part}, or drop the gate "
                              f"(--gate '', ModelConfig(gate=''))")
        if index is None or wanted.get(part, set()) is None:
            wanted[part] = None
        else:
            wanted.setdefault(part, set()).add(index)
    out: list[bool] = []
    for part in parts:
        width = sum(feature_groups(part, emb_dim))
        chosen = wanted.get(part, set())
        out += [chosen is None or i in chosen for i in range(width)]
    return torch.tensor(out, dtype=torch.bool)


def gate_factor_columns(spec: str, emb_dim: int, factors: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns of a conjunctive validity gate: ``(F,)`` bool, every factor's columns of ``h(x, y)``
    (:func:`part_columns`), and ``(G,)`` long, the factor ``0..K-1`` of each of them in order
    (``ModelConfig.gate_factors``; :class:`~vrm_pyro.models.paths.ValidityGate`'s ``factors``). A column may sit in
    one factor only."""
    masks = torch.stack([part_columns(spec, emb_dim, names) for names in factors])  # (K, F)
    shared = (masks.sum(0) > 1).nonzero()[:, 0].tolist()
    if shared:
        j = shared[0]
        where = ", ".join(f"{k + 1} ({','.join(f)})" for k, f in enumerate(factors) if masks[k, j])
        raise ConfigError(f"ModelConfig.gate (--gate): column {column_names(spec, emb_dim)[j]!r} sits in more than one "
                          f"factor of the conjunctive gate: factors {where}; put each column in one factor (';' "
                          "separates factors)")
    columns = masks.any(0)
    return columns, masks[:, columns].long().argmax(0)


def column_names(spec: str, emb_dim: int) -> list[str]:
    """A name for each of the ``F`` columns of ``h(x, y)``: a statistic's own (:data:`NAMED_COLUMNS`), ``cosine`` /
    ``bag_cosine`` for the cosines, the part's name for a one-column part, ``part[i]`` otherwise."""
    out: list[str] = []
    for part in parse_representation(spec):
        width = sum(feature_groups(part, emb_dim))
        if part in NAMED_COLUMNS:
            out += list(NAMED_COLUMNS[part])
        elif part in COSINES:
            out += [f"{part}[{i}]" for i in range(width - 1)] + [COSINES[part]]
        else:
            out += [part] if width == 1 else [f"{part}[{i}]" for i in range(width)]
    return out


def representation_dim(spec: str, emb_dim: int) -> int:
    """The length of ``h(x, y)`` for an encoder of width ``emb_dim``."""
    return sum(feature_groups(spec, emb_dim))


class SentenceView(NamedTuple):
    """One response's kept sentences (at most :data:`MAX_SENTENCES`: the first and last half): ``positions``
    ``(k,)`` their ``c_i`` from -1 (first) to 1 (last) at their own places, ``embeddings`` ``(k, E)`` normalised,
    ``truncated`` whether sentences in the middle were dropped. ``k = 0`` for a response of one sentence."""

    positions: torch.Tensor
    embeddings: torch.Tensor
    truncated: bool


def sentence_views(encoder, responses: Sequence[str], *, progress: bool = False,
                   desc: str = "responses") -> list[SentenceView]:
    """Each response's :class:`SentenceView`; one encoder call over every kept sentence (cached by the encoder)."""
    flat, spans = [], []
    for parts in map(sentences, responses):
        n = len(parts)
        keep = [] if n < 2 else list(range(n)) if n <= MAX_SENTENCES else [
            *range(MAX_SENTENCES // 2), *range(n - MAX_SENTENCES // 2, n)]
        spans.append((len(flat), keep, n))
        flat += [parts[i] for i in keep]
    emb = (F.normalize(encoder.encode(flat, progress=progress, desc=f"encode {desc}: sentences"), dim=-1)
           if flat else torch.zeros(0, encoder.dim))
    return [SentenceView(torch.tensor([2.0 * i / (n - 1) - 1.0 for i in keep]), emb[start:start + len(keep)],
                         len(keep) < n and n >= 2) for start, keep, n in spans]


def sentence_order(encoder, responses: Sequence[str], *, progress: bool = False, desc: str = "responses",
                   views: list[SentenceView] | None = None) -> torch.Tensor:
    """``o(y)``: ``(N, E)`` float32, the position-weighted mean of the normalised embeddings of each
    response's sentences, ``(1/n) sum_i c_i ê(s_i)`` with ``c_i`` from -1 (first) to 1 (last); zeros for a
    response of one sentence. A response of more than :data:`MAX_SENTENCES` sentences keeps its first and
    last ``MAX_SENTENCES // 2`` (at their own positions ``c_i``) and averages over those, ``1/MAX_SENTENCES``.
    ``views``: the responses' :func:`sentence_views`, if already computed."""
    views = sentence_views(encoder, responses, progress=progress, desc=desc) if views is None else views
    out = torch.zeros(len(views), encoder.dim)
    for row, v in enumerate(views):
        if len(v.embeddings):
            out[row] = (v.positions[:, None] * v.embeddings).mean(0)
    return out


def sentence_bag(encoder, responses: Sequence[str], *, progress: bool = False,
                 desc: str = "responses") -> torch.Tensor:
    """``b(y)``: ``(N, E)`` float32, the mean of the normalised embeddings of each response's pieces as a bag
    (:func:`~vrm_pyro.covariates.bag_sentences`, each encoded alone, one encoder call for all),
    ``(1/n) sum_i ê(s_i)`` over them sorted, summed in float64, so that the same bag, its pieces encoded alike (the
    encoder's cache), gives the same bits. Every piece counts (no cap like :data:`MAX_SENTENCES`: a long answer costs
    one short encoding per piece). Zeros for a response without a letter or a digit."""
    bags = [bag_sentences(r) for r in responses]
    flat = [piece for bag in bags for piece in bag]
    emb = (F.normalize(encoder.encode(flat, progress=progress, desc=f"encode {desc}: sentences as a bag"), dim=-1)
           if flat else torch.zeros(0, encoder.dim))
    out = torch.zeros(len(bags), encoder.dim)
    start = 0
    for row, bag in enumerate(bags):
        if bag:
            out[row] = emb[start:start + len(bag)].double().mean(0).float()
        start += len(bag)
    return out


def sentence_flow(encoder, responses: Sequence[str], *, prompt_emb: torch.Tensor,
                  progress: bool = False, desc: str = "responses",
                  views: list[SentenceView] | None = None) -> torch.Tensor:
    """``(N, 4)`` float32, columns :data:`SENTENCE_FLOW`, from the normalised sentence embeddings ``ê_i`` of a
    response (the ones :func:`sentence_order` uses) and its prompt's ``x̂``; zeros for one sentence:

    - ``adjacent_similarity``: mean ``cos(ê_i, ê_{i+1})`` minus mean ``cos(ê_i, ê_j)`` over every pair (3+
      sentences): a writer puts related sentences together, a shuffle scatters them;
    - ``lead_relevance``: ``cos(x̂, ê_1)`` minus mean ``cos(x̂, ê_i)``: an answer opens on the question;
    - ``relevance_slope``: ``(1/n) sum_i c_i cos(x̂, ê_i)``: relevance late minus early;
    - ``lead_centrality``: ``cos(ê_1, m̂)`` minus mean ``cos(ê_i, m̂)``, ``m`` the mean sentence: the opening
      states the gist.

    The bag of sentences is the same for an answer and its shuffle; these four are what the order changes.
    ``views``: the responses' :func:`sentence_views`, if already computed."""
    views = sentence_views(encoder, responses, progress=progress, desc=desc) if views is None else views
    x = F.normalize(prompt_emb, dim=-1)
    out = torch.zeros(len(views), len(SENTENCE_FLOW))
    for row, (c, emb, truncated) in enumerate(views):
        k = len(emb)
        if k < 2:
            continue
        sim = emb @ emb.T
        neighbours = sim.diagonal(1)
        if truncated:  # a long answer's kept head and tail: their seam joins no adjacent sentences
            neighbours = torch.cat([neighbours[:k // 2 - 1], neighbours[k // 2:]])
        adjacent = neighbours.mean() - sim.triu(1).sum() / (k * (k - 1) / 2) if k >= 3 else torch.tensor(0.0)
        rel = emb @ x[row]
        centre = emb @ F.normalize(emb.mean(0), dim=-1)
        out[row] = torch.stack([adjacent, rel[0] - rel.mean(), (c * rel).mean(), centre[0] - centre.mean()])
    return out


def _permuted_likelihood(encoder, prompts: list[str], responses: list[str], stats: torch.Tensor, progress: bool,
                         desc: str) -> torch.Tensor:
    """``(N, 2)``: the mean token log-probability (given the prompt, alone) of each response's sentences in
    another order (:func:`~vrm_pyro.likelihood.permute_sentences`), cut to the LM's window as the response is; a
    response with fewer than two distinct sentences keeps ``stats``' own, so its order gain is 0 and costs no LM
    pass."""
    permuted = [permute_sentences(r) for r in responses]
    out = stats[:, :2].clone()
    moved = [i for i, (r, q) in enumerate(zip(responses, permuted)) if q != r]
    if moved:
        out[moved] = encoder.likelihood.score([prompts[i] for i in moved], [permuted[i] for i in moved],
                                              progress=progress, desc=f"{desc}, reordered")[:, :2]
    return out


def _canonical_margin(encoder, prompts: list[str], responses: list[str], stats: torch.Tensor, progress: bool,
                      desc: str) -> torch.Tensor:
    """``(N,)``: ``given_prompt`` of each response minus its mean over the response's
    :func:`~vrm_pyro.likelihood.canonical_permutations` (one LM call for all of them); 0 where there are none."""
    return margin_against(stats[:, 0], [canonical_permutations(r) for r in responses],
                          lambda rows, texts: encoder.likelihood.score(
                              [prompts[i] for i in rows], texts, progress=progress,
                              desc=f"{desc}, pieces in canonical orders")[:, 0])


def _interaction(prompt_emb: torch.Tensor, response_emb: torch.Tensor) -> torch.Tensor:
    """Bi-encoder relevance features ``(N, 2E + 1)``: ``x̂ ⊙ ŷ``, ``|x̂ − ŷ|``, ``cos(x̂, ŷ)``."""
    x, y = F.normalize(prompt_emb, dim=-1), F.normalize(response_emb, dim=-1)
    return torch.cat([x * y, (x - y).abs(), (x * y).sum(-1, keepdim=True)], dim=-1)


def response_features(encoder, prompts: Sequence[str], responses: Sequence[str], *, spec: str,
                      prompt_emb: torch.Tensor | None = None, progress: bool = False,
                      desc: str = "responses") -> torch.Tensor:
    """``h(x, y)`` for ``N`` (prompt, response) texts: ``(N, F)`` float32 on CPU.

    ``prompt_emb`` ``(N, E)``: the prompts' own embeddings, if already computed (``interaction``,
    ``bag_interaction``, ``sentence_flow``)."""
    parts = parse_representation(spec)
    prompts, responses = list(prompts), list(responses)
    out, alone, lm, sent, bag = [], None, None, None, None

    def prompt_embeddings() -> torch.Tensor:
        nonlocal prompt_emb
        if prompt_emb is None:
            prompt_emb = encoder.encode(prompts, progress=progress, desc=f"encode {desc}: prompts")
        return prompt_emb

    for part in parts:
        if part in ("joint", "response_tokens"):
            span = "all" if part == "joint" else "response"
            out.append(encoder.encode(prompts, responses, span=span, progress=progress,
                                      desc=f"encode {desc}: prompt + response, {part.replace('_', ' ')}"))
        elif part in ("response", "interaction"):
            if alone is None:
                alone = encoder.encode(responses, progress=progress, desc=f"encode {desc}: response alone")
            if part == "response":
                out.append(alone)
            else:
                out.append(_interaction(prompt_embeddings(), alone))
        elif part in TEXT_PARTS:
            out.append(torch.from_numpy(TEXT_PARTS[part][0](prompts, responses)))
        elif part in ORDER_PARTS:
            if getattr(encoder, "order_model", None) is None:
                raise ConfigError(f"representation part {part} needs a fitted sentence-order model on the encoder "
                                  "(encoder.order_model): vrm train fits one on the training responses "
                                  "(vrm_pyro.experiment.fit_order_model) and a checkpoint carries it")
            model = encoder.order_model
            out.append((model.score if part == "order_score" else model.margin)(prompts, responses)[:, None])
        elif part in LIKELIHOOD_PARTS:
            if lm is None:  # one lookup for every LM part
                lm = encoder.likelihood.score(prompts, responses, progress=progress, desc=desc)
            pmi = lm[:, 0] - lm[:, 1]  # given_prompt - alone
            if part == "likelihood":
                out.append(lm)
            elif part == "likelihood_contrast":
                out.append(torch.stack([pmi, lm[:, 3]], dim=-1))
            elif part == "likelihood_gate":
                out.append(torch.stack([pmi.clamp_max(0.0), lm[:, 3]], dim=-1))
            elif part == "likelihood_fluency":
                out.append(torch.stack([lm[:, 0], pmi, lm[:, 3]], dim=-1))
            elif part == "likelihood_order":
                out.append(lm[:, :2] - _permuted_likelihood(encoder, prompts, responses, lm, progress, desc))
            else:  # likelihood_order_margin
                out.append(_canonical_margin(encoder, prompts, responses, lm, progress, desc)[:, None])
        elif part in ("sentence_bag", "bag_interaction"):  # one encoding of the bag
            if bag is None:
                bag = sentence_bag(encoder, responses, progress=progress, desc=desc)
            if part == "sentence_bag":
                out.append(bag)
            else:
                out.append(_interaction(prompt_embeddings(), bag))
        else:  # sentence_order, sentence_flow: one encoding of the sentences
            if sent is None:
                sent = sentence_views(encoder, responses, progress=progress, desc=desc)
            if part == "sentence_order":
                out.append(sentence_order(encoder, responses, views=sent))
            else:
                out.append(sentence_flow(encoder, responses, prompt_emb=prompt_embeddings(), views=sent))
    return torch.cat(out, dim=-1) if out else torch.empty(len(responses), 0)


__all__ = ["DEFAULT_REPRESENTATION", "LIKELIHOOD_PARTS", "MAX_SENTENCES", "NAMED_COLUMNS", "ORIENTED_FEATURES", "PARTS",
           "SENTENCE_FLOW", "SentenceView", "column_names", "feature_groups", "feature_orientation", "gate_factor_columns",
           "parse_representation", "part_columns",
           "representation_dim", "response_features", "sentence_bag", "sentence_flow", "sentence_order", "sentence_views",
           "sentences"]
