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
``order``           8           :func:`vrm_pyro.covariates.order_statistics`: word and
                                sentence order (case after a sentence end, frequent
                                bigrams, list numbering and line starts, opening
                                connective, cohesion, the prompt's words up front)
``discourse``       4           :func:`vrm_pyro.covariates.discourse_statistics`: where
                                the answer's formulas sit (an opener after the body has
                                begun, a closer in the first half) and whether sequence
                                words and numbered labels run backwards
==================  ==========  ===========================================================

``joint`` and ``response_tokens`` come from the same forward pass; ``response`` and
``interaction`` share one more. Together ``response_tokens`` and ``response`` are a head-and-tail
view of a long answer at the cost of two windows. Every view is cached on disk by the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from vrm_pyro.covariates import (
    COHERENCE_STATISTICS,
    DISCOURSE_STATISTICS,
    ORDER_STATISTICS,
    coherence_statistics,
    discourse_statistics,
    order_statistics,
)
from vrm_pyro.errors import ConfigError

PARTS = ("joint", "response_tokens", "response", "interaction", "statistics", "order", "discourse")
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
             "interaction": (emb_dim, emb_dim, 1), "statistics": (len(COHERENCE_STATISTICS),),
             "order": (len(ORDER_STATISTICS),), "discourse": (len(DISCOURSE_STATISTICS),)}
    return tuple(w for p in parse_representation(spec) for w in sizes[p])


def representation_dim(spec: str, emb_dim: int) -> int:
    """The length of ``h(x, y)`` for an encoder of width ``emb_dim``."""
    return sum(feature_groups(spec, emb_dim))


def response_features(encoder, prompts: Sequence[str], responses: Sequence[str], *, spec: str,
                      prompt_emb: torch.Tensor | None = None, progress: bool = False,
                      desc: str = "responses") -> torch.Tensor:
    """``h(x, y)`` for ``N`` (prompt, response) texts: ``(N, F)`` float32 on CPU.

    ``prompt_emb`` ``(N, E)``: the prompts' own embeddings, if already computed (``interaction``)."""
    parts = parse_representation(spec)
    prompts, responses = list(prompts), list(responses)
    out, alone = [], None
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
                if prompt_emb is None:
                    prompt_emb = encoder.encode(prompts, progress=progress, desc=f"encode {desc}: prompts")
                x, y = F.normalize(prompt_emb, dim=-1), F.normalize(alone, dim=-1)
                out.append(torch.cat([x * y, (x - y).abs(), (x * y).sum(-1, keepdim=True)], dim=-1))
        elif part == "statistics":
            out.append(torch.from_numpy(coherence_statistics(prompts, responses)))
        elif part == "order":
            out.append(torch.from_numpy(order_statistics(prompts, responses)))
        else:  # discourse
            out.append(torch.from_numpy(discourse_statistics(prompts, responses)))
    return torch.cat(out, dim=-1) if out else torch.empty(len(responses), 0)


__all__ = ["DEFAULT_REPRESENTATION", "PARTS", "feature_groups", "parse_representation", "representation_dim", "response_features"]
