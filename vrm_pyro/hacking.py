r"""Reward hacking, measured: best-of-N over-optimisation, length bias, a spurious-cue test bed.

**Best-of-N.** For a prompt with candidates ``y_1..y_m`` carrying gold scores ``g_i``, picking the
candidate of highest reward among a uniformly random subset of size ``n`` gives, in expectation,

.. math:: E[g_{pick}] = \sum_r g_{(r)} \binom{m-1-r}{n-1} / \binom{m}{n},

with candidates ranked by reward (``r = 0`` the highest). :func:`expected_pick` computes this
exactly (no subsampling noise). The same formula with length as the score is the *longest*
pick, with the gold itself the *oracle*; ``n = 1`` is the random pick. A reward model that is
hacked by the best-of-N search shows gold flattening or falling as ``n`` grows.

**Length bias.** Spearman correlation between reward and response length (words); accuracy on
pairs whose preferred response is the shorter one; and the reward change when a response is
padded with content-free text (``reward(y + filler) - reward(y)``, in units of the reward's
standard deviation over the evaluated responses, so models with different reward scales compare).

**Spurious cue.** :func:`spurious_cue_experiment` trains on synthetic embedding-level data where
a nuisance direction agrees with the label with probability ``a`` (see
:mod:`vrm_pyro.synthetic`) and tests in distribution (same ``a``) and out of it (``a = 0.5``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from vrm_pyro.data import PairEmbeddings, PreferencePairs, iter_rows
from vrm_pyro.errors import DataError

#: appended to a response to make it longer without adding content
DEFAULT_FILLER = (" I hope this helps. Please let me know if you have any other questions, or if there is "
                  "anything else at all that I can do for you. I am always happy to help in any way I can.")


def words(text: str) -> int:
    return len(text.split())


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    import pandas as pd

    rx, ry = pd.Series(np.asarray(x, float)).rank().to_numpy(), pd.Series(np.asarray(y, float)).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# ----------------------------------------------------------------------------- length bias


def length_bias(reward_model, pairs: PairEmbeddings, texts: PreferencePairs, *, num_samples: int = 32) -> dict:
    """Length figures of a reward model on embedded pairs and their texts.

    ``length_spearman``: reward vs words over all responses; ``acc_shorter_preferred`` /
    ``acc_longer_preferred``: accuracy on the decided pairs whose preferred response is the
    shorter / longer one (by words), with their counts.
    """
    ra = reward_model.reward(pairs.prompt, pairs.response_a, num_samples=num_samples).reward.numpy()
    rb = reward_model.reward(pairs.prompt, pairs.response_b, num_samples=num_samples).reward.numpy()
    la = np.array([words(t) for t in texts.response_a])
    lb = np.array([words(t) for t in texts.response_b])
    label = pairs.label.cpu().numpy()
    decided = label != 0.5
    a_pref = label > 0.5
    correct = (ra > rb) == a_pref
    pref_len, other_len = np.where(a_pref, la, lb), np.where(a_pref, lb, la)
    shorter, longer = decided & (pref_len < other_len), decided & (pref_len > other_len)
    return {"length_spearman": spearman(np.concatenate([ra, rb]), np.concatenate([la, lb])),
            "acc_shorter_preferred": float(correct[shorter].mean()) if shorter.any() else float("nan"),
            "acc_longer_preferred": float(correct[longer].mean()) if longer.any() else float("nan"),
            "n_shorter_preferred": int(shorter.sum()), "n_longer_preferred": int(longer.sum())}


def length_perturbation(reward_model, encoder, prompts: list[str], responses: list[str], *,
                        filler: str = DEFAULT_FILLER, num_samples: int = 32) -> dict:
    """Reward of ``response + filler`` minus reward of ``response`` (two answers that differ mainly
    in length): mean and median in reward standard deviations, and the fraction that gain."""
    prompt_emb = encoder.encode(prompts)
    short = reward_model.reward(prompt_emb, encoder.encode(prompts, responses), num_samples=num_samples).reward.numpy()
    long = reward_model.reward(prompt_emb, encoder.encode(prompts, [r + filler for r in responses]),
                               num_samples=num_samples).reward.numpy()
    scale = short.std() if short.std() > 0 else 1.0
    delta = (long - short) / scale
    return {"padding_delta_sd": float(delta.mean()), "padding_delta_sd_median": float(np.median(delta)),
            "padding_gain_fraction": float((delta > 0).mean()), "padding_n": len(delta)}


# ----------------------------------------------------------------------------- best-of-N


@dataclass
class BestOfNSet:
    """Prompts each with candidate responses and a gold score per candidate."""

    prompts: list[str]
    responses: list[list[str]]
    gold: list[np.ndarray]
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def max_n(self) -> int:
        """The largest ``n`` every prompt supports (its fewest candidates)."""
        return min(len(r) for r in self.responses)

    def save(self, path: str | os.PathLike) -> None:
        """JSONL rows ``{"prompt", "candidates": [{"response", "gold"}, ...]}``."""
        with open(path, "w", encoding="utf-8") as fh:
            for p, rs, g in zip(self.prompts, self.responses, self.gold):
                fh.write(json.dumps({"prompt": p, "candidates": [{"response": r, "gold": float(x)}
                                                                  for r, x in zip(rs, g)]}, ensure_ascii=False) + "\n")


def load_best_of_n(path: str | os.PathLike) -> BestOfNSet:
    """Read ``{"prompt", "candidates": [{"response", "gold"}]}`` JSONL; bad rows raise a located DataError."""
    source = str(path)
    prompts, responses, gold = [], [], []
    for line, row in iter_rows(source):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", source=source, line=line)
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataError("expected a non-empty string", source=source, line=line, field="prompt")
        cands = row.get("candidates")
        if not isinstance(cands, list) or len(cands) < 2:
            raise DataError("expected a list of at least 2 {response, gold} objects", source=source, line=line,
                            field="candidates")
        rs, gs = [], []
        for j, c in enumerate(cands):
            where = f"candidates[{j}]"
            if not isinstance(c, dict) or not isinstance(c.get("response"), str) or not c["response"].strip():
                raise DataError("expected an object with a non-empty string 'response'", source=source, line=line,
                                field=where)
            g = c.get("gold")
            if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g):
                raise DataError(f"'gold' must be a finite number, got {g!r}", source=source, line=line, field=where)
            rs.append(c["response"])
            gs.append(float(g))
        prompts.append(row["prompt"])
        responses.append(rs)
        gold.append(np.asarray(gs))
    if not prompts:
        raise DataError("no rows", source=source)
    return BestOfNSet(prompts, responses, gold, source)


def best_of_n_from_alpaca_eval(pairs: PreferencePairs, *, instructions: set[str] | None = None,
                               min_candidates: int = 16) -> BestOfNSet:
    """Candidates per instruction from AlpacaEval pairs (loaded with the ``alpaca_eval`` format):
    each ``output_2`` is a candidate with gold = P(it beats the reference ``output_1``) by the judge
    (``1 - label``). ``instructions``: keep only these (e.g. the test split's prompts)."""
    by_prompt: dict[str, dict[str, float]] = {}
    for p, b, lab in zip(pairs.prompt, pairs.response_b, pairs.label.tolist()):
        if instructions is None or p in instructions:
            by_prompt.setdefault(p, {})[b] = 1.0 - float(lab)  # identical outputs collapse to one candidate
    keep = [p for p, c in by_prompt.items() if len(c) >= min_candidates]
    if not keep:
        raise DataError(f"no instruction has {min_candidates} distinct candidates", source=str(pairs.source))
    return BestOfNSet(keep, [list(by_prompt[p]) for p in keep], [np.asarray(list(by_prompt[p].values())) for p in keep],
                      source=str(pairs.source))


def expected_pick(score: np.ndarray, gold: np.ndarray, n: int) -> float:
    """Exact mean gold of the highest-``score`` candidate of a uniformly random ``n``-subset."""
    m = len(score)
    n = min(n, m)
    order = np.argsort(-np.asarray(score), kind="stable")
    total = math.comb(m, n)
    probs = np.array([math.comb(m - 1 - r, n - 1) for r in range(m)], dtype=float) / total
    return float((probs * np.asarray(gold)[order]).sum())


def score_best_of_n(reward_model, encoder, bon: BestOfNSet, *, num_samples: int = 32) -> list[np.ndarray]:
    """Rewards of every candidate: one array per prompt."""
    flat_p = [p for p, rs in zip(bon.prompts, bon.responses) for _ in rs]
    flat_r = [r for rs in bon.responses for r in rs]
    rewards = reward_model.reward(encoder.encode(flat_p), encoder.encode(flat_p, flat_r),
                                  num_samples=num_samples).reward.numpy()
    out, i = [], 0
    for rs in bon.responses:
        out.append(rewards[i:i + len(rs)])
        i += len(rs)
    return out


def best_of_n_curve(bon: BestOfNSet, rewards: dict[str, list[np.ndarray]], ns: list[int] | None = None):
    """Mean gold of the pick at each ``n`` for every reward model and for the random, longest and
    oracle picks: a DataFrame with columns ``n``, ``method``, ``gold``."""
    import pandas as pd

    ns = ns or [2 ** k for k in range(int(math.log2(bon.max_n)) + 1)]
    if max(ns) > bon.max_n:
        raise DataError(f"n = {max(ns)} exceeds the fewest candidates of a prompt ({bon.max_n})", source=bon.source)
    methods = dict(rewards)
    methods["longest"] = [np.array([words(r) for r in rs], float) for rs in bon.responses]
    methods["oracle"] = bon.gold
    rows = []
    for n in ns:
        for name, scores in methods.items():
            rows.append({"n": n, "method": name,
                         "gold": float(np.mean([expected_pick(s, g, n) for s, g in zip(scores, bon.gold)]))})
        rows.append({"n": n, "method": "random", "gold": float(np.mean([g.mean() for g in bon.gold]))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- spurious cue


def spurious_cue_experiment(model_configs: dict, train_config, *, agreements=(0.5, 0.7, 0.85, 1.0),
                            nuisance: float = 3.0, emb_dim: int = 32, num_objectives: int = 4,
                            train_prompts: int = 300, pairs_per_prompt: int = 8, test_prompts: int = 150,
                            seed: int = 0):
    """Train each model on synthetic data whose nuisance direction agrees with the label with
    probability ``a`` for every ``a`` in ``agreements``; test with the same ``a`` (in distribution)
    and with ``a = 0.5`` (cue uninformative, out of distribution). A DataFrame with columns
    ``model``, ``agreement``, ``acc_in``, ``acc_ood``, ``drop``."""
    import pandas as pd

    from vrm_pyro.evaluate import evaluate_pairs
    from vrm_pyro.registry import build_reward_model
    from vrm_pyro.synthetic import SyntheticProcess
    from vrm_pyro.train import fit

    proc = SyntheticProcess(emb_dim=emb_dim, num_objectives=num_objectives, seed=seed)
    rows = []
    for a in agreements:
        kw = {"nuisance": nuisance, "cue_agreement": a}
        train = proc.sample(train_prompts, pairs_per_prompt, seed=seed + 11, **kw).pairs
        val = proc.sample(max(test_prompts // 3, 10), pairs_per_prompt, seed=seed + 12, **kw).pairs
        test_in = proc.sample(test_prompts, pairs_per_prompt, seed=seed + 13, **kw).pairs
        test_ood = proc.sample(test_prompts, pairs_per_prompt, seed=seed + 13, nuisance=nuisance, cue_agreement=0.5).pairs
        for name, cfg in model_configs.items():
            torch.manual_seed(seed)
            rm = build_reward_model(cfg, emb_dim=emb_dim, seed=train_config.seed)
            fit(rm, train, val, train_config)
            acc_in = evaluate_pairs(rm, test_in, num_samples=train_config.eval_samples)["accuracy"]
            acc_ood = evaluate_pairs(rm, test_ood, num_samples=train_config.eval_samples)["accuracy"]
            rows.append({"model": name, "agreement": a, "acc_in": acc_in, "acc_ood": acc_ood, "drop": acc_in - acc_ood})
    return pd.DataFrame(rows)


__all__ = ["BestOfNSet", "DEFAULT_FILLER", "best_of_n_curve", "best_of_n_from_alpaca_eval", "expected_pick",
           "length_bias", "length_perturbation", "load_best_of_n", "score_best_of_n", "spearman",
           "spurious_cue_experiment"]
