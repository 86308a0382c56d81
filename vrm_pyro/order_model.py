r"""A self-supervised sentence-order model fitted on the training responses: the ``order_score`` part.

Mean-pooled encoders barely see the order of an answer's sentences, and the judge's labels say little about it:
a reward head that learns the weights of the order statistics (:func:`vrm_pyro.covariates.order_statistics`,
:func:`~vrm_pyro.covariates.discourse_statistics`) from preferences alone ranks an answer's own sentence shuffle
above it about one time in nine. Order has a supervision of its own, free on any text: an answer as written
against the same answer with its sentences reordered. This model is fitted that way, on the training responses
only (each reordered ``reorderings`` times, layout kept, as :data:`vrm_pyro.hacking.JUNK_KINDS`'s
``shuffled_sentences`` makes them), by L2-penalised logistic regression on the difference of features,

.. math:: p(y \succ \pi(y)) = \sigma\big(w \cdot (f(y) - f(\pi(y)))\big),

and ``order_score(y) = w · f(y)``, one column, is what the reward heads see. The features ``f(y)``:

- the order and discourse statistics, standardised over the training responses and their reorderings (12 columns);
- ``buckets`` hashed lexical ones (CRC32, stable across runs) on the sentences' first words, with the list
  enumerator and Markdown marks stripped: the first word and the first two words, weighted by the sentence's
  centred position ``c_i`` ∈ [−1, 1] over ``n`` (a learned "comes early / comes late" per opening: "Sure", "Here
  are" early, "Overall", "I hope" late, "However", "This" not first); the first word of the first and of the last
  sentence; the last character of a sentence with the first word of the next (a colon followed by "1", a question
  followed by its answer). Zero for a one-sentence response;
- opt-in (``fit(word_bigrams=True)``): each pair of adjacent words, so a one-sentence answer's word shuffle has
  features too (measured in ``benchmarks/README.md``, section 2o: the model alone ranks better, the heads no better).
- opt-in (``fit(sentence_words=True)``): *every* word of a sentence weighted by ``c_i / n`` (a learned lateness per
  word, wherever it sits in the sentence: "another", "also", "conclusion"), the sentence's length by its position
  (``c_i log(1 + words_i)``: a short lead-in, a long body) and its place from either end (first, second, ...; last,
  second to last) crossed with its length in four-word bins, the last two scaled by :data:`LENGTH_SCALE`
  (measured in ``benchmarks/README.md``, section 2q).

``order_margin(y) = order_score(y) − mean_k order_score(π_k(y))`` (opt-in part, :meth:`SentenceOrderModel.margin`):
the same model against four reorderings drawn from the answer's own sentences sorted
(:func:`canonical_reorderings`), the same four for an answer and its shuffles, so the gap to a shuffle is
``order_score``'s and what the sentences score in any order cancels (``benchmarks/README.md``, section 2p).

The fit takes 12–16 s on 2 CPU cores for an AlpacaEval fold's ~3,200 answers (two reorderings each; 28 s with word
pairs, ``benchmarks/results/coherence/order_model_bigrams.json``; 18 s with sentence words at L2 1e-4, ``vrm train``'s
default since round 16, ``order_model_sentence_words.json``). A fitted model travels with the reward model's
checkpoint (``order_model.safetensors``); :func:`vrm_pyro.experiment.embed_loaded` fits it with the encoder config's
``order_features`` and ``order_l2``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from vrm_pyro.covariates import (
    DISCOURSE_STATISTICS,
    ORDER_STATISTICS,
    WORD,
    discourse_statistics,
    order_statistics,
    seeded_orders,
    sentences,
    unmarked,
)
from vrm_pyro.errors import CheckpointError, ConfigError

#: the dense columns of ``f(y)``, before the hashed ones
STATISTICS = (*ORDER_STATISTICS, *DISCOURSE_STATISTICS)
#: the representation part that reads the fitted model
PART = "order_score"
#: the part that reads it against the answer's own reorderings (:meth:`SentenceOrderModel.margin`)
MARGIN_PART = "order_margin"
#: the reorderings :meth:`SentenceOrderModel.margin` averages over
MARGIN_REORDERINGS = 4
#: the weight of the length features of ``sentence_words`` (a few buckets shared by every answer, against thousands of
#: word buckets: at weight 1 the L2 penalty kept them near 0; a scratch probe on fold 0 ranked validation reorderings
#: better at 5 than at 1, ``benchmarks/README.md`` section 2q)
LENGTH_SCALE = 5.0


#: the fit's feature options (:meth:`SentenceOrderModel.fit`), each kept in the state when on
OPTIONS = ("word_bigrams", "sentence_words")
#: the representation parts that read a fitted order model
PARTS = (PART, MARGIN_PART)


def parse_order_features(spec: str) -> dict[str, bool]:
    """``"sentence_words"`` -> ``{"word_bigrams": False, "sentence_words": True}`` (``EncoderConfig.order_features``),
    checked against :data:`OPTIONS`."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = sorted(set(names) - set(OPTIONS))
    if bad:
        raise ConfigError(f"order features {spec!r} (EncoderConfig.order_features, --order-features): unknown "
                          f"{bad}; choose from {', '.join(OPTIONS)}, comma-separated, or '' for none")
    return {option: option in names for option in OPTIONS}


def needs_order_model(representation: str) -> bool:
    """Whether a representation spec (``"response+order_score"``) has a part that needs a fitted order model."""
    return bool(set(PARTS) & {p.strip() for p in representation.split("+")})


#: where :func:`canonical_reorderings` cuts: after ``.!?:`` and at line breaks (a shuffle that moves a line ending in a
#: colon to a space seam must cut back into the same pieces), and a list enumerator standing alone
_CLAUSE_SEAM = re.compile(r"(?<=[.!?:])\s+|\s*\n\s*")
_BARE_ENUMERATOR = re.compile(r"\d{1,2}[.)]")


def canonical_reorderings(text: str, k: int = MARGIN_REORDERINGS) -> list[str]:
    """``k`` reorderings of ``text``'s sentences (cut after ``.!?:`` and at line breaks, list enumerators and Markdown
    marks stripped, joined by spaces; its words, for one sentence), drawn from the sentences *sorted* and seeded by
    them: they depend on which sentences the text has, not on their order or layout, so an answer and its sentence
    shuffles (the stress test's keep the layout and move the items under fixed enumerators) get the same ``k``
    texts. Empty when there is nothing to reorder."""
    parts = sorted(p for p in (unmarked(s).strip() for s in _CLAUSE_SEAM.split(text))
                   if p and not _BARE_ENUMERATOR.fullmatch(p))
    if len(set(parts)) < 2:  # one sentence: its words
        parts = sorted(text.split())
        if len(set(parts)) < 2:
            return []
    return seeded_orders(parts, k, " ")


def margin_against(own: torch.Tensor, reorderings: Sequence[Sequence[str]], score) -> torch.Tensor:
    """``(N,)``: ``own`` minus the mean of ``score`` over each row's ``reorderings`` (0 where a row has none);
    ``score(rows, texts) -> (M,)`` scores all rows' reorderings in one call (``rows[j]``: the row of ``texts[j]``)."""
    owner = [i for i, texts in enumerate(reorderings) for _ in texts]
    if not owner:
        return torch.zeros_like(own)
    idx = torch.tensor(owner)
    total = torch.zeros_like(own).index_add_(0, idx, score(owner, [t for texts in reorderings for t in texts]))
    count = torch.zeros_like(own).index_add_(0, idx, torch.ones(len(owner)))
    return torch.where(count > 0, own - total / count.clamp_min(1), torch.zeros_like(own))


def _statistics(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    return np.concatenate([order_statistics(prompts, responses), discourse_statistics(prompts, responses)], 1)


def lexical_features(response: str, buckets: int, word_bigrams: bool = False,
                     sentence_words: bool = False) -> dict[int, float]:
    """The hashed part of ``f(y)``: ``{bucket: value}`` (see the module docstring); empty for one sentence unless
    ``word_bigrams`` (then also each pair of adjacent words, weighted ``1 / (pairs)``: what a word shuffle moves).
    ``sentence_words`` adds every word of each sentence by its position and the sentences' lengths by theirs."""
    out: dict[int, float] = {}

    def add(key: str, value: float) -> None:
        b = zlib.crc32(key.encode()) % buckets
        out[b] = out.get(b, 0.0) + value

    if word_bigrams:
        words = WORD.findall(response.lower())
        for first, second in zip(words, words[1:]):
            add(f"bi:{first} {second}", 1.0 / (len(words) - 1))
    parts = [unmarked(s) for s in sentences(response)]
    n = len(parts)
    if n < 2:
        return out

    firsts = []
    for i, s in enumerate(parts):
        words = WORD.findall(s.lower())
        firsts.append(words[0] if words else "")
        c = 2.0 * i / (n - 1) - 1.0
        add("f1:" + firsts[-1], c / n)
        add("f2:" + " ".join(words[:2]), c / n)
        if sentence_words:
            for word in sorted(set(words)):  # one order whatever the hash seed
                add("w:" + word, c / n)
            add("len", LENGTH_SCALE * c * np.log1p(len(words)) / n)
            add(f"place:{min(i, 2)}:{min(n - 1 - i, 2)}:{min(len(words) // 4, 8)}", LENGTH_SCALE / n)
    add("first:" + firsts[0], 1.0)
    add("last:" + firsts[-1], 1.0)
    for a, b in zip(parts, firsts[1:]):
        add(f"adj:{a.rstrip()[-1:]}:{b}", 1.0 / (n - 1))
    return out


class SentenceOrderModel:
    """``order_score(y) = w · f(y)``: a fitted order model (:meth:`fit`), applied by :meth:`score`.

    ``lexical`` ``(buckets,)``, ``statistics`` ``(12,)`` the weights; ``mean``, ``scale`` ``(12,)`` the
    statistics' standardisation; ``word_bigrams``, ``sentence_words`` whether the hashed features include adjacent
    word pairs, every word of a sentence and the sentences' lengths by position (opt-in, :meth:`fit`)."""

    def __init__(self, lexical: torch.Tensor, statistics: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor,
                 word_bigrams: bool = False, sentence_words: bool = False):
        if not statistics.shape == mean.shape == scale.shape == (len(STATISTICS),):
            raise ConfigError(f"SentenceOrderModel: statistics weights, mean and scale must each have "
                              f"{len(STATISTICS)} entries (got {tuple(statistics.shape)}, {tuple(mean.shape)}, "
                              f"{tuple(scale.shape)})")
        self.lexical, self.statistics = lexical.float(), statistics.float()
        self.mean, self.scale = mean.float(), scale.float()
        self.word_bigrams, self.sentence_words = bool(word_bigrams), bool(sentence_words)

    @property
    def buckets(self) -> int:
        return self.lexical.numel()

    @property
    def identity(self) -> str:
        """A digest of the weights: two models with the same identity score alike."""
        h = hashlib.sha256()
        for t in (self.lexical, self.statistics, self.mean, self.scale):
            h.update(t.numpy().tobytes())
        for option in OPTIONS:  # the same weights read other features
            if getattr(self, option):
                h.update(option.encode())
        return h.hexdigest()[:16]

    def features(self, response: str) -> dict[int, float]:
        """The hashed part of ``f(y)`` for one response, ``{bucket: value}`` (:func:`lexical_features` with this
        model's options; a subclass that reads more features overrides this, and :meth:`fit` and :meth:`score` use it)."""
        return lexical_features(response, self.buckets, self.word_bigrams, self.sentence_words)

    def _sparse(self, responses: Sequence[str]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for i, r in enumerate(responses):
            for b, v in self.features(r).items():
                rows.append(i)
                cols.append(b)
                vals.append(v)
        return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                       torch.tensor(vals, dtype=torch.float32), (len(responses), self.buckets),
                                       check_invariants=True)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """``(N,)`` float32: the log-odds scale on which a response's sentence order beats a reordering."""
        prompts, responses = list(prompts), list(responses)
        if not responses:
            return torch.zeros(0)
        stats = (torch.from_numpy(_statistics(prompts, responses)) - self.mean) / self.scale
        lexical = torch.sparse.mm(self._sparse(responses), self.lexical[:, None]).squeeze(-1)
        return (stats @ self.statistics + lexical).float()

    def margin(self, prompts: Sequence[str], responses: Sequence[str],
               reorderings: int = MARGIN_REORDERINGS) -> torch.Tensor:
        """``(N,)`` float32, the part ``order_margin``: ``score(y) − mean_k score(π_k(y))`` over
        :func:`canonical_reorderings` of ``y``. The mean is the same for an answer and its sentence shuffles, so the
        gap between them is :meth:`score`'s; what the answer's sentences score in any order (their openings, their
        style: :meth:`score` varies with them across answers) cancels. 0 where nothing can be reordered."""
        prompts, responses = list(prompts), list(responses)
        return margin_against(self.score(prompts, responses), [canonical_reorderings(r, reorderings) for r in responses],
                              lambda rows, texts: self.score([prompts[i] for i in rows], texts))

    @classmethod
    def fit(cls, prompts: Sequence[str], responses: Sequence[str], *, reorderings: int = 2, l2: float = 1e-3,
            buckets: int = 2**14, seed: int = 0, max_iter: int = 200,
            word_bigrams: bool = False, sentence_words: bool = False) -> SentenceOrderModel:
        """Fit on ``N`` (prompt, response) texts (the distinct training responses): each against ``reorderings``
        of its sentences (its words, for one sentence), L-BFGS on the mean logistic loss ``+ l2 · |w|²``. With
        ``word_bigrams``, adjacent word pairs join the hashed features and each answer is also set against one
        shuffle of its words (so the pairs' weights learn from every answer, not only the one-sentence ones). With
        ``sentence_words``, every word of a sentence and the sentences' lengths by position join them (use a smaller
        ``l2``, 1e-4: there are many more features to weigh)."""
        from vrm_pyro.hacking import JUNK_KINDS

        shuffle, shuffle_words = JUNK_KINDS["shuffled_sentences"], JUNK_KINDS["shuffled_words"]
        rng = np.random.default_rng(seed)
        prompts, responses = list(prompts), list(responses)
        source, p_shuf, shuffled = [], [], []  # per pair: the index of its answer, and the reordering
        for i, (p, r) in enumerate(zip(prompts, responses)):
            for k in range(reorderings + int(word_bigrams)):
                s = shuffle(p, r, "", rng) if k < reorderings else shuffle_words(p, r, "", rng)
                if s != r:
                    source.append(i)
                    p_shuf.append(p)
                    shuffled.append(s)
        real = [responses[i] for i in source]
        if len(real) < 10:
            raise ConfigError(f"SentenceOrderModel.fit: {len(real)} reorderable responses among {len(responses)}; "
                              "the order model needs at least 10 (representation part order_score): give more "
                              "training data or drop +order_score")
        # each answer's statistics once (an answer stands in as many pairs as it has reorderings)
        stats_real, stats_shuf = _statistics(prompts, responses)[source], _statistics(p_shuf, shuffled)
        both = np.concatenate([stats_real, stats_shuf])
        # over answers and reorderings alike: a statistic that is 0 on every real answer (a closer in the first
        # half) must not be divided by a scale near 0, or one shuffle's score runs into the hundreds
        mean, scale = both.mean(0), np.maximum(both.std(0), 1e-3)
        model = cls(torch.zeros(buckets), torch.zeros(len(STATISTICS)), torch.from_numpy(mean),
                    torch.from_numpy(scale), word_bigrams, sentence_words)
        d_stats = torch.from_numpy((stats_real - stats_shuf) / scale).float()
        d_lex = (model._sparse(real) - model._sparse(shuffled)).coalesce()
        w_lex = torch.zeros(buckets, requires_grad=True)
        w_stats = torch.zeros(len(STATISTICS), requires_grad=True)
        opt = torch.optim.LBFGS([w_lex, w_stats], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            margin = d_stats @ w_stats + torch.sparse.mm(d_lex, w_lex[:, None]).squeeze(-1)
            loss = F.softplus(-margin).mean() + l2 * (w_lex.square().sum() + w_stats.square().sum())
            loss.backward()
            return loss

        opt.step(closure)
        model.lexical, model.statistics = w_lex.detach(), w_stats.detach()
        return model

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"lexical": self.lexical, "statistics": self.statistics, "mean": self.mean, "scale": self.scale}
        for option in OPTIONS:  # absent when off (and in every checkpoint saved before the option)
            if getattr(self, option):
                state[option] = torch.ones(())
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], *, where: str = "order model") -> SentenceOrderModel:
        missing = sorted({"lexical", "statistics", "mean", "scale"} - set(state))
        if missing:
            raise CheckpointError(f"{where}: missing tensors {missing}; re-save the checkpoint with this version")
        return cls(state["lexical"], state["statistics"], state["mean"], state["scale"],
                   **{option: option in state and bool(state[option]) for option in OPTIONS})


__all__ = ["LENGTH_SCALE", "MARGIN_PART", "MARGIN_REORDERINGS", "OPTIONS", "PART", "PARTS", "STATISTICS", "SentenceOrderModel", "canonical_reorderings",
           "lexical_features", "margin_against", "needs_order_model", "parse_order_features"]
