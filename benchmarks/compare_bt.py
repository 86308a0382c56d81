"""VRM vs Bradley–Terry on the shared data: the project's claim, measured (not a timed test).

Every contender shares the encoder (frozen MiniLM, cached embeddings), the data and splits, the
trainer, the budget and the evaluation; only the model/guide (or head), the representation and the
nuisance handling differ, as the contender's configuration says.

AlpacaEval is split by instruction into 5 folds per seed (every instruction is held out once); in
each fold 10% of the other instructions are the validation split (early stopping and model
selection), the rest train. Held-out measures, on the fold's test instructions only:

- pairwise accuracy / NLL / ECE against the judge's labels (the judge-facing predictive, nuisance
  term included) and accuracy of the authentic reward alone;
- best-of-N over the 11 dev samples of each instruction (``alpaca_bon_dev``): exact expected gold
  at n = 1, 2, 4, 8, 11 under the raw gold and the length-controlled gold (AlpacaEval-style length
  effect fitted on the pairs), picking by the posterior mean, by ``mean - std`` (pessimism) and,
  with a nuisance term, by the judge-facing total;
- how often the verbose twin is preferred (``alpaca_eval_length_twins``);
- how often junk made from the best dev answer outranks it, per junk kind;
- AUROC of ``reward_std`` for out-of-distribution answers against in-distribution ones;
- KL per latent site and the share of the reward's variance through each route (VRM).

HH-RLHF: 70/10/20 split by prompt, seed = split seed. Stages write ``benchmarks/results/<stage>/``:
``rows.jsonl`` (one row per contender x seed x fold; a rerun skips rows already there) and
``summary.md`` / ``summary.json``.

    python benchmarks/compare_bt.py prepare                       # encode every text (cache), once
    python benchmarks/compare_bt.py run --stage select --contenders bt_linear vrm --seeds 0 1 2 --folds 0
    python benchmarks/compare_bt.py run --stage claim --contenders ... --seeds 0 1 2
    python benchmarks/compare_bt.py summary --stage claim
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import (  # noqa: E402
    CACHE_DIR,
    RESULTS,
    BestOfN,
    best_of_n_dev,
    instruction_folds,
    load_pairs_file,
    ood_answers,
    stress_rows,
    twins,
)

from vrm_pyro import DataConfig, EncoderConfig, ModelConfig, TrainConfig, build_reward_model, fit  # noqa: E402
from vrm_pyro.config import (  # noqa: E402
    CLOSED_LAST_LINE_GATE,
    CLOSED_LAST_LINE_REPRESENTATION,
    CONJUNCTIVE_GATE,
    LAST_LINE_BESIDE_GATE,
    LAST_LINE_BESIDE_REPRESENTATION,
    LAST_LINE_GATE,
    LAST_LINE_OVERLAP_GATE,
    LAST_LINE_OVERLAP_REPRESENTATION,
    LAST_LINE_REPRESENTATION,
    ORDER_BLIND_GATE,
    ORDER_BLIND_REPRESENTATION,
    PIECE_REPEATS_GATE,
    PIECE_REPEATS_REPRESENTATION,
    PROMPT_OVERLAP_GATE,
    PROMPT_OVERLAP_REPRESENTATION,
    RELEVANCE_FORM_GATE,
    ROUND12_GATE,
)
from vrm_pyro.data import PairEmbeddings, PreferencePairs  # noqa: E402
from vrm_pyro.encoders import TextEncoder, embed_pairs, embed_texts  # noqa: E402
from vrm_pyro.evaluate import (  # noqa: E402
    auroc,
    evaluate_pairs,
    spearman,  # noqa: E402
)
from vrm_pyro.experiment import augmentation, fit_order_model  # noqa: E402
from vrm_pyro.hacking import (  # noqa: E402
    JUNK_KINDS,
    expected_pick,
    fit_length_effect,
    make_junk,
)
from vrm_pyro.order_model import needs_order_model  # noqa: E402
from vrm_pyro.representations import LIKELIHOOD_PARTS, parse_representation  # noqa: E402

FOLDS = 5
BON_NS = (1, 2, 4, 8, 11)
KAPPA = 1.0
MIN_STEPS = 1500
#: the validation stress set's real answers per instruction (the judge's best first); the held-out stress test keeps
#: one, the best, as every round before 15 did. One answer per instruction was too few to order two contenders.
VAL_STRESS_ANSWERS = 4
OOD_KINDS = ("random_tokens", "repeated_many", "other_prompt", "other_language")
RICH = "response_tokens+response+interaction+statistics"


@dataclass
class Contender:
    """One entry of the comparison: model options, representation, augmentation, training overrides."""

    model: dict
    representation: str = "joint"
    augment: str = ""
    augment_rate: float = 0.1
    train: dict = field(default_factory=dict)
    judged_augment: bool = False  # the judge's nuisance term applies to augmented pairs too (version 0.2)
    augment_from: str = "preferred"  # DataConfig.augment_from: which answers of a prompt beat the junk
    augment_valid: tuple = ()  # DataConfig.augment_valid: junk kinds the validity gate is told are valid
    order_fit: tuple = ()  # ((option, value), ...) for SentenceOrderModel.fit, where the representation has order_score
    # the order model fitted on every answer of the training instructions in the AlpacaEval file (as vrm train on the
    # whole file would), not only those of the sampled pairs (--pairs-per-instruction) the heads train on
    order_all_answers: bool = False
    # the judge's best-of-N observations on the training instructions (each sample against its reference,
    # BestOfN.judged_pairs) as training pairs beside the AlpacaEval pairs: answers of one model to one instruction,
    # which the AlpacaEval pairs (one answer per model) never compare
    bon_pairs: bool = False

    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def data_config(self) -> DataConfig:
        """The augmentation options as ``vrm train`` takes them (split seed 0: every contender the same pairs)."""
        return DataConfig(augment=self.augment, augment_rate=self.augment_rate, augment_from=self.augment_from,
                          augment_valid=",".join(self.augment_valid))

    def train_config(self, seed: int, n_train: int | None = None) -> TrainConfig:
        """The budget: 30 epochs (patience 5) or, on small training sets, at least ``MIN_STEPS`` steps (patience
        a sixth of the epochs): the same for every contender."""
        cfg = TrainConfig(progress=False, seed=seed, **self.train)
        if n_train is not None:
            steps_per_epoch = -(-n_train // cfg.batch_size)
            epochs = max(cfg.epochs, -(-MIN_STEPS // steps_per_epoch))
            cfg = cfg.replace(epochs=epochs, patience=max(cfg.patience, epochs // 6))
        return cfg


NUIS = dict(nuisance="length,list_items,headers,code_blocks,bold")
CONTENDERS: dict[str, Contender] = {
    # version 0.1 (the joint representation, a free linear path): the starting point
    "bt_linear@joint_raw": Contender(dict(model="bt", feature_transform="none")),
    "vrm_point@joint": Contender(dict(path="point", feature_transform="none")),
    # representations (issue 10), with a linear BT head and the default VRM
    **{f"bt_linear@{name}": Contender(dict(model="bt"), rep) for name, rep in (
        ("tokens", "response_tokens"), ("bi", "response_tokens+response+interaction"), ("rich", RICH))},
    **{f"vrm@{name}": Contender(dict(), rep) for name, rep in (
        ("tokens", "response_tokens"), ("bi", "response_tokens+response+interaction"), ("rich", RICH))},
}


def factor_apart(gate: str, column: str) -> str:
    """A conjunctive ``gate`` (``;`` between factors) with ``column`` taken out of its factor into a last one of its own:
    ``factor_apart("a,b;c,d", "c") == "a,b;d;c"``."""
    factors = [[c for c in f.split(",") if c] for f in gate.split(";")]
    if not any(column in f for f in factors):
        raise ValueError(f"factor_apart: {column!r} is not in the gate {gate!r}")
    return ";".join([",".join(c for c in f if c != column) for f in factors if f != [column]] + [column])


def register(name: str, contender: Contender) -> None:
    CONTENDERS[name] = contender


# the model grid on the rich representation (issue 9): BT heads and VRM's routes
for head in ("linear", "mlp", "bayesian_linear"):
    register(f"bt_{head}", Contender(dict(model="bt", bt_head=head), RICH))
register("vrm", Contender(dict(), RICH))
register("vrm_whiten", Contender(dict(feature_transform="whiten"), RICH))
register("vrm_point", Contender(dict(path="point"), RICH))
register("vrm_nopath_fb", Contender(dict(path="none"), RICH, train=dict(elbo="mean_field", free_bits=0.5)))
register("vrm_nopath", Contender(dict(path="none"), RICH))
register("vrm_prior2", Contender(dict(path_prior_scale=2.0), RICH))
register("vrm_prior05", Contender(dict(path_prior_scale=0.5), RICH))
register("vrm_prior4", Contender(dict(path_prior_scale=4.0), RICH))
register("vrm_mf", Contender(dict(), RICH, train=dict(elbo="mean_field")))
register("bt_bayesian_linear_prior4", Contender(dict(model="bt", bt_head="bayesian_linear", path_prior_scale=4.0), RICH))
register("vrm_k4", Contender(dict(num_objectives=4), RICH))
register("vrm_d4", Contender(dict(feature_dim=4), RICH))
# representations x heads: "@js" = joint + statistics, "@full" = every part; "@joint_raw": no feature transform
REPRESENTATIONS = {"joint": "joint", "js": "joint+statistics", "jrs": "joint+response+statistics",
                   "full": "joint+" + RICH}
for base in ("bt_linear", "bt_mlp", "bt_bayesian_linear", "vrm", "vrm_point", "vrm_mf"):
    for tag, rep in REPRESENTATIONS.items():
        if f"{base}@{tag}" not in CONTENDERS:
            c = CONTENDERS[base]
            register(f"{base}@{tag}", Contender(c.model, rep, train=c.train))
register("vrm_point@joint_raw", CONTENDERS.pop("vrm_point@joint"))
register("vrm_point@joint", Contender(dict(path="point"), "joint"))
register("vrm@rich_raw", Contender(dict(feature_transform="none"), RICH))
# nuisance handling (issue 11), for every head
for base in ("bt_linear", "bt_mlp", "bt_bayesian_linear", "vrm", "vrm_prior2", "bt_bayesian_linear_prior4"):
    c = CONTENDERS[base]
    register(f"{base}+nuis", Contender({**c.model, **NUIS}, c.representation, train=c.train))
    register(f"{base}+erase", Contender({**c.model, **NUIS, "erase_nuisance": True}, c.representation, train=c.train))
    register(f"{base}+decor", Contender({**c.model, **NUIS, "decorrelation": 1.0}, c.representation, train=c.train))
# augmentation (issue 10) on top
for base in list(CONTENDERS):
    if "@" not in base and not base.endswith("+aug"):
        c = CONTENDERS[base]
        register(f"{base}+aug", Contender(c.model, c.representation, "core", 0.1, c.train))
# coherence (issue 10, round 2): "+aug_judged" = version 0.2's augmentation, whose pairs the nuisance term could
# explain (the library now gives augmented pairs no nuisance difference); RRM's corruptions incl. shuffled words and
# sentences ("+rrm", rate 0.1; "+rrm3", rate 0.3); order statistics in the representation ("+ord")
for base in ("bt_linear", "bt_mlp", "vrm_prior2", "bt_linear+nuis", "bt_mlp+nuis", "vrm_prior2+nuis"):
    c = CONTENDERS[base]
    register(f"{base}+aug_judged", Contender(c.model, c.representation, "core", 0.1, c.train, judged_augment=True))
    for rep_tag, rep in (("", c.representation), ("+ord", c.representation + "+order")):
        for aug_tag, kinds, rate in (("+aug", "core", 0.1), ("+rrm", "rrm", 0.1), ("+rrm3", "rrm", 0.3)):
            if f"{base}{rep_tag}{aug_tag}" not in CONTENDERS:
                register(f"{base}{rep_tag}{aug_tag}", Contender(c.model, rep, kinds, rate, c.train))


# the echo diagnosis: the default without the interaction features (cosine 1 and |x̂ − ŷ| = 0 for an echo)
register("vrm_prior2+nuis+ord-int+rrm3", Contender({**CONTENDERS["vrm_prior2"].model, **NUIS},
                                                   "response_tokens+response+statistics+order", "rrm", 0.3))


# "same nuisance handling" made real: gamma's own learning rate (10x), so it settles before early stopping
for base in ("bt_mlp+nuis+ord+rrm3", "bt_linear+nuis+ord+rrm3", "vrm_prior2+nuis+ord+rrm3"):
    c = CONTENDERS[base]
    register(f"{base}+glr", Contender(c.model, c.representation, c.augment, c.augment_rate,
                                      {**c.train, "nuisance_lr": 1e-2}, c.judged_augment))


# the path's prior shared by blocks of the representation, not by dimensions (7 text statistics and a cosine
# were drowned by 1,536 embedding dimensions): "_partS" = path_prior "part" at prior scale S; "+disc" = the
# representation part `discourse`; "+rrmR" = RRM augmentation at R/10 pairs per real pair. The Bayesian BT head
# is the BT the prior acts on; BT-linear and BT-MLP (no prior) get the same representation and augmentation.
_ROUND2_DEFAULT = CONTENDERS["vrm_prior2+nuis+ord+rrm3+glr"]
for disc in ("", "+disc"):
    rep = _ROUND2_DEFAULT.representation + ("+discourse" if disc else "")
    for rate in (0, 3, 6, 10):  # 0: no augmentation (human labels)
        aug = f"+rrm{rate}" if rate else ""
        for scale in (1, 2, 4):
            for prefix, model in (("vrm", {}), ("bt_bayesian_linear", {"model": "bt", "bt_head": "bayesian_linear"})):
                register(f"{prefix}_part{scale}+nuis+ord{disc}{aug}+glr", Contender(
                    {**model, **NUIS, "path_prior": "part", "path_prior_scale": float(scale)}, rep,
                    "rrm" if rate else "", rate / 10, _ROUND2_DEFAULT.train))
        for head in ("linear", "mlp"):
            if f"bt_{head}+nuis+ord{disc}{aug}+glr" not in CONTENDERS:
                register(f"bt_{head}+nuis+ord{disc}{aug}+glr", Contender(
                    {"model": "bt", "bt_head": head, **NUIS}, rep, "rrm" if rate else "", rate / 10, _ROUND2_DEFAULT.train))


# order the mean pools cannot see (round 4): "+sord" = the representation part `sentence_order`, the sentences
# encoded alone and weighted by their centred position, one more block of the block prior
for base in ("vrm_part4+nuis+ord+disc+rrm6+glr", "vrm_part2+nuis+ord+disc+rrm6+glr",
             "bt_bayesian_linear_part1+nuis+ord+disc+rrm6+glr", "bt_bayesian_linear_part2+nuis+ord+disc+rrm6+glr",
             "bt_linear+nuis+ord+disc+rrm6+glr", "bt_mlp+nuis+ord+disc+rrm6+glr"):
    c = CONTENDERS[base]
    register(base.replace("+disc", "+disc+sord"), Contender(c.model, c.representation + "+sentence_order", c.augment,
                                                            c.augment_rate, c.train))


# RRM's own recipe (round 4): "+both" = every answer of a training prompt, preferred or not, beats the junk
# (DataConfig.augment_from="both"), so another prompt's good answer must lose to this prompt's weak one
for base in ("vrm_part4+nuis+ord+disc+rrm6+glr", "vrm_part2+nuis+ord+disc+rrm6+glr",
             "bt_bayesian_linear_part1+nuis+ord+disc+rrm6+glr", "bt_bayesian_linear_part2+nuis+ord+disc+rrm6+glr",
             "bt_linear+nuis+ord+disc+rrm6+glr", "bt_mlp+nuis+ord+disc+rrm6+glr"):
    c = CONTENDERS[base]
    register(base.replace("+glr", "+both+glr"), Contender(c.model, c.representation, c.augment, c.augment_rate,
                                                          c.train, augment_from="both"))
    sord = CONTENDERS[base.replace("+disc", "+disc+sord")]
    register(base.replace("+disc", "+disc+sord").replace("+glr", "+both+glr"), Contender(
        sord.model, sord.representation, sord.augment, sord.augment_rate, sord.train, augment_from="both"))


# a language model's view (round 5): "+lik" = the representation part `likelihood`, four statistics of a small
# causal LM (SmolLM2-135M-Instruct, run with --likelihood-model): mean token log-probability of the answer given
# the prompt and alone, its 10th percentile, log p(end of turn); one more block of the block prior
for base in ("vrm_part2+nuis+ord+disc+sord+rrm6+both+glr", "vrm_part4+nuis+ord+disc+sord+rrm6+both+glr",
             "bt_bayesian_linear_part1+nuis+ord+disc+sord+rrm6+both+glr", "bt_linear+nuis+ord+disc+rrm6+both+glr",
             "bt_mlp+nuis+ord+disc+sord+rrm6+both+glr"):
    c = CONTENDERS[base]
    register(base.replace("+rrm6", "+lik+rrm6"), Contender(c.model, c.representation + "+likelihood", c.augment,
                                                          c.augment_rate, c.train, augment_from=c.augment_from))
    register(base.replace("+rrm6", "+likg+rrm6"), Contender(c.model, c.representation + "+likelihood_gate", c.augment,
                                                           c.augment_rate, c.train, augment_from=c.augment_from))
    # "+likc": the LM's PMI and end-of-turn statistics only (zero-shot they carry the wins, section 2f)
    register(base.replace("+rrm6", "+likc+rrm6"), Contender(c.model, c.representation + "+likelihood_contrast",
                                                           c.augment, c.augment_rate, c.train,
                                                           augment_from=c.augment_from))


# sign constraints (round 6): "+mcos" = the Bayesian path weighs the prompt-response cosine with |theta| (no LM
# needed); "+likm" / "+likcm" = the LM part with its known directions monotone too (ModelConfig.monotone). The
# trained heads had lost the zero-shot direction of the PMI (section 2f); a half-normal prior keeps it. "+likgm": the
# gate min(PMI, 0) in place of the PMI (0 for 99.6% of real answers: only junk pairs can set its weight).
for base in ("vrm_part2+nuis+ord+disc+sord+rrm6+both+glr", "bt_bayesian_linear_part1+nuis+ord+disc+sord+rrm6+both+glr"):
    c = CONTENDERS[base]
    for tag, part, monotone in (("+mcos", "", "cosine"), ("+likm", "+likelihood", "cosine,likelihood"),
                                ("+likcm", "+likelihood_contrast", "cosine,likelihood_contrast"),
                                ("+likgm", "+likelihood_gate", "cosine,likelihood_gate")):
        register(base.replace("+rrm6", tag + "+rrm6"), Contender({**c.model, "monotone": monotone},
                                                                 c.representation + part, c.augment, c.augment_rate,
                                                                 c.train, augment_from=c.augment_from))
    # "...l": the LM columns' weights log-normal (median the block's prior std), not half-normal (mode 0);
    # "+likpl" / "+likggl": only the PMI / min(PMI, 0) so constrained, log p(end) free
    for tag, part, monotone in (("+likcl", "+likelihood_contrast", "likelihood_contrast"),
                                ("+likgl", "+likelihood_gate", "likelihood_gate"),
                                ("+likpl", "+likelihood_contrast", "pmi"), ("+likggl", "+likelihood_gate", "pmi_gate")):
        register(base.replace("+rrm6", tag + "+rrm6"), Contender(
            {**c.model, "monotone": monotone, "monotone_prior": "log_normal"}, c.representation + part, c.augment,
            c.augment_rate, c.train, augment_from=c.augment_from))
    # "+likfpl": the LM's four statistics free beside "+likpl"'s PMI and log p(end) (section 2h). The PMI is
    # given_prompt - alone, a linear combination of two free columns, so its log-normal prior binds nothing here:
    # in effect "+lik" with log p(end) twice
    register(base.replace("+rrm6", "+likfpl+rrm6"), Contender(
        {**c.model, "monotone": "pmi", "monotone_prior": "log_normal"},
        c.representation + "+likelihood+likelihood_contrast", c.augment, c.augment_rate, c.train,
        augment_from=c.augment_from))
    # "+likflu" (round 8): what "+likfpl" meant, with a prior that binds: the part likelihood_fluency (fluency given
    # the prompt, the PMI, log p(end); no free "alone" column), the first two log-normal (--monotone fluency)
    register(base.replace("+rrm6", "+likflu+rrm6"), Contender(
        {**c.model, "monotone": "fluency", "monotone_prior": "log_normal"},
        c.representation + "+likelihood_fluency", c.augment, c.augment_rate, c.train, augment_from=c.augment_from))
    # "+likord" (round 8): the LM's order gain (the part likelihood_order: the answer's log-probability minus that of
    # its sentences reordered, given the prompt and alone), log-normal (--monotone order_gain), beside +likpl's part
    register(base.replace("+rrm6", "+likord+rrm6"), Contender(
        {**c.model, "monotone": "pmi,order_gain", "monotone_prior": "log_normal"},
        c.representation + "+likelihood_contrast+likelihood_order", c.augment, c.augment_rate, c.train,
        augment_from=c.augment_from))
    # "+likpg": both at once, each with the prior that served it: the PMI log-normal (refusals), min(PMI, 0)
    # half-normal (another prompt's answer)
    register(base.replace("+rrm6", "+likpg+rrm6"), Contender(
        {**c.model, "monotone": "pmi,pmi_gate", "monotone_prior": "log_normal,half_normal"},
        c.representation + "+likelihood_contrast+likelihood_gate", c.augment, c.augment_rate, c.train,
        augment_from=c.augment_from))


# a validity gate (round 9): "+vg" = log sigmoid(v . h_G + c) added to the reward (ModelConfig.gate), fed by the
# low-dimensional parts (the cosine, the text statistics; and the LM's where the representation has them). Real
# answers sit where it has saturated, so the judge's labels among them pull on it little; junk loses its full logit.
# It learns from each pair's validity (every answer a judge saw is valid, augmented junk is not), at the rate gamma has
GATE_PARTS = "cosine,statistics,order,discourse"


def _gated(source: str, name: str, **model) -> None:
    """Register ``name``: the contender ``source`` with the model options ``model`` (a gate), the gate at gamma's
    learning rate."""
    c = CONTENDERS[source]
    register(name, dataclasses.replace(c, model={**c.model, **model}, train={**c.train, "gate_lr": 1e-2}))


for base in ("vrm_part2+nuis+ord+disc+sord+rrm6+both+glr", "bt_bayesian_linear_part1+nuis+ord+disc+sord+rrm6+both+glr"):
    def named(tag: str, base: str = base) -> str:
        return base.replace("+rrm6", tag + "+rrm6")

    for lm_tag in ("", "+likpl", "+likfpl"):
        lm = [p for p in parse_representation(CONTENDERS[named(lm_tag)].representation) if p in LIKELIHOOD_PARTS]
        gate = ",".join([GATE_PARTS, *lm])
        _gated(named(lm_tag), named(lm_tag + "+vg"), gate=gate)
        if lm_tag != "+likpl":
            # "+vgs": the gate kept out of the label's logit (gate_in_label=False): the path learns from every pair as
            # without a gate, the gate from the validity observations alone; the reward adds both.
            # "+vgp": the gate also told that junk is less valid than the answer it was made from (gate_pairwise)
            _gated(named(lm_tag), named(lm_tag + "+vgs"), gate=gate, gate_in_label=False)
            _gated(named(lm_tag), named(lm_tag + "+vgp"), gate=gate, gate_pairwise=True)
    # "+vgr": a relevance gate, the cosine and the LM's PMI and log p(end) only: order and fluency left to the path
    _gated(named("+likfpl"), named("+likfpl+vgr"), gate="cosine,likelihood_contrast")
    # "+vgn": a gate blind to order: the cosine, the text statistics (none of which a shuffle of sentences changes
    # much) and, with the LM, its PMI and log p(end); the order and discourse statistics and the LM's fluency left to
    # the path
    _gated(base, named("+vgn"), gate="cosine,statistics")
    # "+vgi": the order-blind gate with the whole prompt-response interaction block (x̂ ⊙ ŷ, |x̂ − ŷ|, the cosine), a
    # learned relevance in place of the cosine alone, for answers to another prompt; "+vgi1": its weights at a tenth
    # of the prior std (769 columns instead of one)
    _gated(base, named("+vgi"), gate="interaction,statistics")
    _gated(base, named("+vgi1"), gate="interaction,statistics", gate_prior_scale=0.1)
    # "+vgn3", "+vgn03": the order-blind gate's weights at three times and a third of the prior std
    _gated(base, named("+vgn3"), gate="cosine,statistics", gate_prior_scale=3.0)
    _gated(base, named("+vgn03"), gate="cosine,statistics", gate_prior_scale=0.3)
    # "+vgnp": the order-blind gate with weights that depend on the prompt (gate_by_prompt: v(x) = v + V^T x̂), so
    # copying the prompt or repeating a line can be valid for one task and junk for another
    _gated(base, named("+vgnp"), gate="cosine,statistics", gate_by_prompt=True)
    # "+vgx": the order-blind gate without the two statistics that reject real answers (gate_anatomy.py --losers: a
    # rewrite that copies its prompt, a song with a chorus), prompt_echo and repeated_4grams; echoes and repeats are
    # left to the path, which sank them before the gate (echo 0.012, repeated 0.000)
    _gated(base, named("+vgx"), gate="cosine,distinct_words,compression_ratio,prompt_coverage,clean_ending,"
                                     "log2_words_per_sentence")
    _gated(named("+likfpl"), named("+likfpl+vgn"), gate="cosine,statistics,likelihood_contrast")
    vgn = CONTENDERS[named("+vgn")]
    # "+sflow" (round 11): the default (+vgn) with the representation part `sentence_flow`, four columns from the
    # sentence embeddings `sentence_order` already has (adjacent similarity, the opening's relevance and centrality,
    # relevance late minus early): what a reordering moves; one more block of the block prior, left out of the gate
    register(named("+vgn").replace("+sord", "+sord+sflow"), dataclasses.replace(
        vgn, representation=vgn.representation + "+sentence_flow"))
    # "+vgo" (round 11): the default with its order-blind gate told that a sentence shuffle is a valid answer
    # (DataConfig.augment_valid): the gate cannot see a reordering, so the shuffled pairs teach the path alone
    register(named("+vgo"), dataclasses.replace(vgn, augment_valid=("shuffled_sentences",)))
    # "+cf" (round 12): content-free answers (refusals, deflections, placeholder scaffolds, the request restated;
    # vrm_pyro.hacking.TRAINING_JUNK_KINDS) shown losing too, at their own rate (0.1 per pair, about one per
    # instruction), RRM's pairs unchanged; with the order-blind gate, and with the learned-relevance gate "+vgi",
    # which round 10 found letting refusals through (a kind it had never seen invalid)
    for tag in ("+vgn", "+vgi"):
        src = CONTENDERS[named(tag)]
        register(named(tag).replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
            src, augment=src.augment + ",content_free:0.1"))
    # "+ss3" (round 12): beside "+cf", more sentence shuffles shown losing: 0.3 per pair at their own rate on top of
    # RRM's turn (about 0.09 per pair), so the labels among real answers weigh less against order
    register(named("+vgn").replace("+rrm6", "+rrm6+cf+ss3"), dataclasses.replace(
        vgn, augment=vgn.augment + ",content_free:0.1,shuffled_sentences:0.3"))
    # "+pc" (round 12): beside "+cf", the part prompt_copy (the share of the prompt's trigrams the answer
    # reproduces) in the representation and the gate, so the gate can tell the prompt echoed back from an answer that
    # rewrites a sentence quoted in the prompt (gate_anatomy.py --losers: such answers lose to every fixed junk)
    register(named("+vgn").replace("+sord", "+sord+pc").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        vgn, representation=vgn.representation + "+prompt_copy", model={**vgn.model, "gate": "cosine,statistics,prompt_copy"},
        augment=vgn.augment + ",content_free:0.1"))
    # "+pcx": "+pc" with the gate's echo measured on the prompt's side only: prompt_copied in the gate in place of
    # prompt_echo (the path keeps both), so an answer that copies a quoted sentence is not an echo to the gate
    pc = CONTENDERS[named("+vgn").replace("+sord", "+sord+pc").replace("+rrm6", "+rrm6+cf")]
    register(named("+vgn").replace("+sord", "+sord+pcx").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        pc, model={**pc.model, "gate": ROUND12_GATE}))
    # "+pce": "+pcx" with the gate's ending measured against the answer's own lines (part line_ending) in place of
    # clean_ending, so a song or a list of names that ends as its lines do is not a truncation to the gate
    register(named("+vgn").replace("+sord", "+sord+pce").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        pc, representation=pc.representation + "+line_ending",
        model={**pc.model, "gate": ROUND12_GATE.replace("clean_ending,", "") + ",line_ending"}))
    # "+pce...+ss15": "+pce" with more sentence shuffles shown losing (0.15 per pair at their own rate, half of
    # "+ss3"'s): the gate that sinks more junk leaves the path less pressure to see order
    for tag in ("+pce", "+pcx"):  # "+pcx...+ss15": the same on round 12's default
        src = CONTENDERS[named("+vgn").replace("+sord", "+sord" + tag).replace("+rrm6", "+rrm6+cf")]
        register(named("+vgn").replace("+sord", "+sord" + tag).replace("+rrm6", "+rrm6+cf+ss15"), dataclasses.replace(
            src, augment=src.augment + ",shuffled_sentences:0.15"))
    # "+osc" (round 13): round 12's default (+pcx) with the part order_score, a sentence-order model fitted on the
    # fold's training answers against their own reorderings (self-supervised, vrm_pyro.order_model), in the path;
    # "+oscm" the same with its sign bound (ModelConfig.monotone); "+oscg" with it in the gate too, which then sees
    # an order for the first time (every junk kind is invalid to it, shuffles too)
    pcx = CONTENDERS[named("+vgn").replace("+sord", "+sord+pcx").replace("+rrm6", "+rrm6+cf")]
    osc = dataclasses.replace(pcx, representation=pcx.representation + "+order_score")
    for tag, variant in (("+osc", osc), ("+oscm", dataclasses.replace(osc, model={**osc.model, "monotone": "order_score"})),
                         ("+oscg", dataclasses.replace(osc, model={**osc.model, "gate": ROUND12_GATE + ",order_score"}))):
        register(named("+vgn").replace("+sord", "+sord+pcx" + tag).replace("+rrm6", "+rrm6+cf"), variant)
    # "+oscl": its weight kept away from zero (a log-normal sign prior, median the prior std: order matters a priori);
    # "+oscg...+ss15": the gate's variant with 0.15 more sentence shuffles per pair, so the labels press harder on order
    register(named("+vgn").replace("+sord", "+sord+pcx+oscl").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        osc, model={**osc.model, "monotone": "order_score", "monotone_prior": "log_normal"}))
    oscg = CONTENDERS[named("+vgn").replace("+sord", "+sord+pcx+oscg").replace("+rrm6", "+rrm6+cf")]
    register(named("+vgn").replace("+sord", "+sord+pcx+oscg").replace("+rrm6", "+rrm6+cf+ss15"), dataclasses.replace(
        oscg, augment=oscg.augment + ",shuffled_sentences:0.15"))
    # "+oscw" (round 14): "+osc" with the order model's word pairs (SentenceOrderModel.fit(word_bigrams=True)): one
    # sentence's word shuffle, which the order model cannot see without them
    register(named("+vgn").replace("+sord", "+sord+pcx+oscw").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        osc, order_fit=(("word_bigrams", True),)))
    # "+osm" (round 15): the default (+pcx+osc) with the order model read against the answer's own reorderings
    # (part order_margin in place of order_score): the gap to a shuffle is the same, what the answer's sentences
    # score in any order cancels, so the column no longer varies with an answer's style across real answers
    register(named("+vgn").replace("+sord", "+sord+pcx+osm").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        osc, representation=osc.representation.replace("+order_score", "+order_margin")))
    # "+osb": both columns (a word salad's raw score is low, its margin against its own reorderings is not)
    register(named("+vgn").replace("+sord", "+sord+pcx+osb").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        osc, representation=osc.representation + "+order_margin"))
    # "+osw" (round 16): the default (+pcx+osc) with the order model's sentence words (SentenceOrderModel.fit(
    # sentence_words=True) at l2 1e-4): every word of a sentence by its position, not only the first two, and the
    # sentences' lengths by theirs (a short lead-in, a long body)
    sentence_words = (("sentence_words", True), ("l2", 1e-4))
    register(named("+vgn").replace("+sord", "+sord+pcx+osw").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        osc, order_fit=sentence_words))
    # "+pce+osc" (round 14): round 13's default (+pcx+osc) with the gate's ending read against the answer's own lines
    # (+pce's line_ending in place of clean_ending), the best validation NLL of round 12
    pce = CONTENDERS[named("+vgn").replace("+sord", "+sord+pce").replace("+rrm6", "+rrm6+cf")]
    register(named("+vgn").replace("+sord", "+sord+pce+osc").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        pce, representation=pce.representation + "+order_score"))
    # "+pce+osw" (round 16): the same with "+osw"'s order model
    register(named("+vgn").replace("+sord", "+sord+pce+osw").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        pce, representation=pce.representation + "+order_score", order_fit=sentence_words))
    # "+pce+oswa" (round 17): the same order model fitted on every answer of the training instructions
    register(named("+vgn").replace("+sord", "+sord+pce+oswa").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        pce, representation=pce.representation + "+order_score", order_fit=sentence_words, order_all_answers=True))
    # "+pce+oswa+gk2" (round 18): the same with the validity gate's term doubled (ModelConfig.gate_scale = 2, the
    # tempered product of experts P(valid)^2 x exp(quality)): the trained gate is at its MAP on the validity
    # observations (results/coherence_r18/gate_map.md) and leaves another prompt's answer only about -0.9
    oswa = CONTENDERS[named("+vgn").replace("+sord", "+sord+pce+oswa").replace("+rrm6", "+rrm6+cf")]
    for kappa in (2, 3):  # "+gk3": three times
        register(named("+vgn").replace("+sord", f"+sord+pce+oswa+gk{kappa}").replace("+rrm6", "+rrm6+cf"),
                 dataclasses.replace(oswa, model={**oswa.model, "gate_scale": float(kappa)}))
    # "+pce+oswa" without "+sord" (round 18): no label-taught view of which content comes early or late
    # (sentence_order, 384 columns), only the self-supervised order model's column; a shuffle that moves a sentence
    # the judge dislikes ("I'm sorry, but as an AI ...") to the end can no longer gain through that block
    register(named("+vgn").replace("+sord", "+pce+oswa").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        oswa, representation=oswa.representation.replace("+sentence_order", "")))
    # "+pce+oswa+dc1" (round 18): with ODIN's decorrelation penalty at weight 1 (ModelConfig.decorrelation, over the
    # judge's pairs): the authentic reward's differences kept uncorrelated with the judge's nuisance covariates
    # (length, lists, headers, code, bold), so a long or structured answer (a scaffold, another prompt's essay) gains
    # less over a short real one
    register(named("+vgn").replace("+sord", "+sord+pce+oswa+dc1").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        oswa, model={**oswa.model, "decorrelation": 1.0}))
    # "+bag+oswa" (round 19): an order-blind base. Every view that a shuffle of the sentences moves is replaced by one
    # read off the bag of sentences (sentence_bag, bag_interaction, bag_statistics; the gate the same columns on the
    # bag, with repeated and unfinished sentences beside them); order is seen only by the order model's column and
    # the answer's ending (line_ending). Against its own shuffle the reward then errs exactly where those do. (The
    # name keeps its base's tags, "+ord+disc" among them; this representation has no order or discourse part.)
    bag = dataclasses.replace(oswa, representation=ORDER_BLIND_REPRESENTATION,
                              model={**oswa.model, "gate": ORDER_BLIND_GATE})
    register(named("+vgn").replace("+sord", "+bag+oswa").replace("+rrm6", "+rrm6+cf"), bag)
    # "+bag+oswa+gk2": the same with the gate's term doubled, which round 18's "+gk2" could not afford: its gate read
    # views a shuffle moves, so a stronger gate sank shuffles and real answers alike; this gate's columns do not move
    # (but for line_ending, whose move is toward "invalid" for a shuffle that ends on a heading)
    register(named("+vgn").replace("+sord", "+bag+oswa+gk2").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        bag, model={**bag.model, "gate_scale": 2.0}))
    # "+bag+oswa+mbc" (round 20): the bag's prompt-response cosine monotone in the quality score (ModelConfig.monotone
    # bag_cosine, half-normal; "+mbcl" log-normal, its median the block's prior std): relevance is what ranks a
    # scaffold or another prompt's answer, and the gate alone does not make them lose (section 2t: its part of a
    # scaffold's gap is -0.10)
    for tag, prior in (("+mbc", "half_normal"), ("+mbcl", "log_normal")):
        register(named("+vgn").replace("+sord", "+bag+oswa" + tag).replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
            bag, model={**bag.model, "monotone": "bag_cosine", "monotone_prior": prior}))
    # "+mbcl" with "+cf2": twice the content-free answers (0.2 per pair), which the monotone cosine now also sinks in
    # the quality score: scaffolds are the kind the new default still lets through most after shuffles
    mbcl = CONTENDERS[named("+vgn").replace("+sord", "+bag+oswa+mbcl").replace("+rrm6", "+rrm6+cf")]
    register(named("+vgn").replace("+sord", "+bag+oswa+mbcl").replace("+rrm6", "+rrm6+cf2"), dataclasses.replace(
        mbcl, augment=mbcl.augment.replace("content_free:0.1", "content_free:0.2")))
    # "+mbcl+gc3" (round 21): the gate's columns soft-clipped at 3 (ModelConfig.gate_clip): 10 of the 22 real answers
    # that another prompt's answer, a scaffold or a truncation outranks on fold 0 are lyrics, a song, a table and a
    # questionnaire, far out on the repetition columns (results/coherence_r21/losers_fold0.md, stress_statistics.md)
    register(named("+vgn").replace("+sord", "+bag+oswa+mbcl+gc3").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        mbcl, model={**mbcl.model, "gate_clip": 3.0}))
    # "+mbcl+mcov" (round 21): the bag's coverage of the prompt's content words monotone too (log-normal): a cut
    # answer covers fewer of them than the whole in 0.575 of the stress set's truncations (never more), a scaffold,
    # a refusal or another prompt's answer fewer than the real answer in 0.97-0.99 (an echo more, in 0.90)
    register(named("+vgn").replace("+sord", "+bag+oswa+mbcl+mcov").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        mbcl, model={**mbcl.model, "monotone": "bag_cosine,bag_prompt_coverage",
                     "monotone_prior": "log_normal,log_normal"}))
    # "+mbcl+cg2" (round 23): a conjunctive gate, P(valid) = sigma(t_relevance) sigma(t_form) (ModelConfig.gate with
    # ';'): the default's gate gives the stress scaffold t = +1.6 against a real answer's +3.0 (fold 0, seed 0), its
    # cosine's -3.1 offset by its many unfinished pieces (+1.3) and its copying nothing of the prompt (+0.8); with the
    # relevance columns a factor of their own, no other column can buy them back
    register(named("+vgn").replace("+sord", "+bag+oswa+mbcl+cg2").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        mbcl, model={**mbcl.model, "gate": RELEVANCE_FORM_GATE}))
    # "+mbcl+cg3": three factors, the form split into repetition (distinct words, repeated 4-grams and sentences,
    # compressibility) and completeness (words per sentence, unfinished pieces, the prompt copied, the ending), so a
    # clean ending cannot buy back a repeat either
    cg3_name = named("+vgn").replace("+sord", "+bag+oswa+mbcl+cg3").replace("+rrm6", "+rrm6+cf")
    register(cg3_name, dataclasses.replace(mbcl, model={**mbcl.model, "gate": CONJUNCTIVE_GATE}))
    # "+mbcl+cg4": the ending (line_ending) a factor of its own: in "+cg3" a truncation's failed ending shares a
    # factor with its unfinished pieces and its copying, which give some of it back (losers_fold0.md)
    register(named("+vgn").replace("+sord", "+bag+oswa+mbcl+cg4").replace("+rrm6", "+rrm6+cf"), dataclasses.replace(
        mbcl, model={**mbcl.model, "gate": factor_apart(CONJUNCTIVE_GATE, "line_ending")}))
    # "+mbcl+cg3+ll" (round 24): the default with the ending read off the last line against the answer's own lines
    # (part last_line in place of line_ending, in the representation and the gate's completeness factor): a list
    # mark alone, a dangling colon or heading, a table row that does not close, a song cut inside a line
    # (round 23's losers_fold0.md: a song, a table and a questionnaire cut so, all read as ending as their lines do)
    cg3 = CONTENDERS[cg3_name]
    register(cg3_name.replace("+cg3", "+cg3+ll"), dataclasses.replace(
        cg3, representation=LAST_LINE_REPRESENTATION, model={**cg3.model, "gate": LAST_LINE_GATE}))
    # "+mbcl+cg3+llb" (round 25): last_line beside line_ending, in the representation and the completeness factor
    register(cg3_name.replace("+cg3", "+cg3+llb"), dataclasses.replace(
        cg3, representation=LAST_LINE_BESIDE_REPRESENTATION, model={**cg3.model, "gate": LAST_LINE_BESIDE_GATE}))
    # "+mbcl+cg4c+llb" (round 25): "+cg3+llb" with the prompt copied a factor of its own, so that no ending or
    # sentence length can buy an echo back (+cg3+ll and +cg3+llb let more echoes through)
    llb = CONTENDERS[cg3_name.replace("+cg3", "+cg3+llb")]
    register(cg3_name.replace("+cg3", "+cg4c+llb"), dataclasses.replace(
        llb, model={**llb.model, "gate": factor_apart(LAST_LINE_BESIDE_GATE, "prompt_copy")}))
    # "+mbcl+cg3+pr" (round 26): the repetition factor reads the share of the answer's distinct pieces said more than
    # once in place of the share of repeated pieces: a song, a table or a questionnaire, the real answers a truncation
    # or another prompt's answer outranks (results/coherence_r24/losers_fold0.md), sit far nearer the answer said
    # again on the second (a five-verse song 0.40 against 0.80) than on the first (0.17 against 1.00)
    register(cg3_name.replace("+cg3", "+cg3+pr"), dataclasses.replace(
        cg3, representation=PIECE_REPEATS_REPRESENTATION, model={**cg3.model, "gate": PIECE_REPEATS_GATE}))
    # "+mbcl+cg3+pr+pj" (round 27): "+cg3+pr" with the Jaccard overlap of prompt and answer beside the prompt copied
    # in the completeness factor: 1 for an echo, over 0.5 for 0.0023 of the real answers (prompt_copied: 0.097), so
    # the echo has a column as clean as the one "+pr" gave the answer said again
    register(cg3_name.replace("+cg3", "+cg3+pr+pj"), dataclasses.replace(
        cg3, representation=PROMPT_OVERLAP_REPRESENTATION, model={**cg3.model, "gate": PROMPT_OVERLAP_GATE}))
    # "...+bonp" (round 28): round 27's default with the judge's best-of-N observations on the training instructions
    # as training pairs (Contender.bon_pairs): its authentic reward picks below chance at best-of-11, and ranks one
    # instruction's samples barely at all (rho +0.02, results/coherence_r27/bon_length_folds4.md)
    pj_name = cg3_name.replace("+cg3", "+cg3+pr+pj")
    register(pj_name + "+bonp", dataclasses.replace(CONTENDERS[pj_name], bon_pairs=True))
    # "+mbcl+cg3+pr+pj+ll" (round 29): the default with round 24's last_line in place of line_ending, in the
    # representation and the completeness factor: "+ll" took truncations under 2% and let echoes through (section 2y),
    # before round 27 gave the echo a clean column of its own (prompt_jaccard)
    pj = CONTENDERS[pj_name]
    register(pj_name + "+ll", dataclasses.replace(
        pj, representation=LAST_LINE_OVERLAP_REPRESENTATION, model={**pj.model, "gate": LAST_LINE_OVERLAP_GATE}))
    # "+mbcl+cg3+pr+pj+llc" (round 30): round 29's default with the last line read by closed_last_line, in the
    # representation and the completeness factor: last_line reads a post's closing hashtags or emoji, a bold closing
    # sentence, an end mark and a signature placeholder as cut (round 29's losers_fold0.md: a post that ends in its
    # hashtags loses to its own shuffle, the gate's part +1.25)
    register(pj_name + "+llc", dataclasses.replace(
        pj, representation=CLOSED_LAST_LINE_REPRESENTATION, model={**pj.model, "gate": CLOSED_LAST_LINE_GATE}))
    # "+mbcl+mcov+cg3": the conjunctive gate with round 21's coverage monotone too: the truncations it lets through
    # rose (section 2x), and the coverage is lower for a cut answer in 0.575 of the stress set's truncations
    mcov = CONTENDERS[named("+vgn").replace("+sord", "+bag+oswa+mbcl+mcov").replace("+rrm6", "+rrm6+cf")]
    register(named("+vgn").replace("+sord", "+bag+oswa+mbcl+mcov+cg3").replace("+rrm6", "+rrm6+cf"),
             dataclasses.replace(mcov, model={**mcov.model, "gate": CONJUNCTIVE_GATE}))
    # "+vgc": the LM's PMI and log p(end) in the gate, its fluency statistics left to the path alone
    _gated(named("+likfpl"), named("+likfpl+vgc"), gate=f"{GATE_PARTS},likelihood_contrast")


# ----------------------------------------------------------------------------- data and embeddings


class Bench:
    """Texts, folds and embeddings shared by every contender (embeddings memoised per representation)."""

    def __init__(self, cache_dir: str = str(CACHE_DIR), encoder: str | None = None, device: str = "cpu",
                 pairs_per_instruction: int | None = None, likelihood_model: str | None = None,
                 likelihood_response_tokens: int = EncoderConfig.likelihood_response_tokens):
        torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
        # the likelihood model in bfloat16 whatever the machine (its statistics are cached under that identity)
        extra = {"likelihood_model": likelihood_model, "likelihood_dtype": "bfloat16",
                 "likelihood_response_tokens": likelihood_response_tokens}
        cfg = (EncoderConfig(cache_dir=cache_dir, **extra) if encoder is None
               else EncoderConfig(name=encoder, cache_dir=cache_dir, **extra))
        self.encoder = TextEncoder(cfg, device=device)
        alpaca = load_pairs_file("alpaca")
        self.length_effect = fit_length_effect(alpaca)  # the judge's length effect, always from every pair
        self.instructions = sorted(set(alpaca.prompt))
        self.pairs_per_instruction = pairs_per_instruction
        self.alpaca_all = alpaca  # every pair (Contender.order_all_answers)
        self.alpaca = alpaca if pairs_per_instruction is None else alpaca.sample_prompts(
            len(self.instructions), pairs_per_prompt=pairs_per_instruction, seed=0)
        self.bon = best_of_n_dev(self.length_effect)
        self.twins = twins()
        self.stress_prompts, self.stress_real = stress_rows(self.bon)
        self.val_stress_prompts, self.val_stress_real = stress_rows(self.bon, VAL_STRESS_ANSWERS)
        self.ood = ood_answers(self.bon, self.encoder.tokenizer)
        self._hh = None
        self._memo: dict = {}

    @property
    def hh(self) -> PreferencePairs:
        if self._hh is None:
            self._hh = load_pairs_file("hh")
        return self._hh

    def folds(self, seed: int):
        return instruction_folds(self.instructions, FOLDS, seed)

    def use_order_model(self, contender: Contender, key: tuple, train: PreferencePairs) -> None:
        """For a representation with ``order_score``: the sentence-order model of the training split ``train``
        (named ``key``), fitted as ``vrm train`` fits it (:func:`vrm_pyro.experiment.fit_order_model`, memoised), set
        on the encoder; the features memoised under another order model are dropped (memory)."""
        if not needs_order_model(contender.representation):
            return
        memo = ("order_model", key, contender.order_fit, contender.order_all_answers)
        if memo not in self._memo:
            fit_order_model(self.encoder, {"train": train}, seed=0, representation=contender.representation,
                            **dict(contender.order_fit))
            self._memo[memo] = self.encoder.order_model
        self.encoder.order_model = self._memo[memo]
        ident = self.encoder.order_model.identity
        for k in [k for k in self._memo if k[0] in ("pairs", "texts") and k[-1] not in (None, ident)]:
            del self._memo[k]

    def order_training(self, idx_train: list[int], instructions: set[str], all_answers: bool) -> PreferencePairs:
        """What a split's order model is fitted on: the sampled pairs ``idx_train``, or with ``all_answers`` every
        pair of the training ``instructions`` in the AlpacaEval file (:attr:`Contender.order_all_answers`)."""
        if not all_answers:
            return self.alpaca.subset(idx_train)
        return self.alpaca_all.subset([i for i, p in enumerate(self.alpaca_all.prompt) if p in instructions])

    def use_split_order_model(self, contender: Contender, seed: int, fold: int, idx_train: list[int],
                              instructions: set[str], size: int | None = None) -> None:
        """:meth:`use_order_model` for the AlpacaEval split ``(seed, fold, size)``, fitted on what
        :meth:`order_training` gives for the contender."""
        self.use_order_model(contender, ("alpaca", seed, fold, size),
                             self.order_training(idx_train, instructions, contender.order_all_answers))

    def _order_identity(self, representation: str) -> str | None:
        return self.encoder.order_model.identity if needs_order_model(representation) else None

    def pairs(self, pairs: PreferencePairs, key: str, representation: str, nuisance: str):
        memo = ("pairs", key, representation, nuisance, self._order_identity(representation))
        if memo not in self._memo:
            self._memo[memo] = embed_pairs(pairs, self.encoder, representation=representation, nuisance=nuisance,
                                           desc=key)
        return self._memo[memo]

    def texts(self, key: str, prompts: list[str], responses: list[str], representation: str, nuisance: str):
        memo = ("texts", key, representation, nuisance, self._order_identity(representation))
        if memo not in self._memo:
            self._memo[memo] = embed_texts(self.encoder, prompts, responses, representation=representation,
                                           nuisance=nuisance, desc=key)
        return self._memo[memo]

    def bon_texts(self, instructions: set[str], representation: str, nuisance: str):
        """The best-of-N dev samples of ``instructions``, embedded: ``(keep, counts, responses, (prompt, response,
        nuisance features))``, ``keep`` the indices of the instructions in :attr:`bon`, ``counts`` their samples,
        every sample in order (memoised as :meth:`texts`)."""
        keep = [i for i, p in enumerate(self.bon.instructions) if p in instructions]
        flat_p = [self.bon.instructions[i] for i in keep for _ in self.bon.samples[i]]
        flat_r = [s for i in keep for s in self.bon.samples[i]]
        counts = [len(self.bon.samples[i]) for i in keep]
        key = f"bon:{len(keep)}:{hash(tuple(keep))}"
        return keep, counts, flat_r, self.texts(key, flat_p, flat_r, representation, nuisance)

    def stress_answers(self, wide: bool = False) -> tuple[list[str], list[str]]:
        """The real rows junk is made from: each instruction's best dev answer, or with ``wide`` its
        :data:`VAL_STRESS_ANSWERS` best (the validation stress set)."""
        return (self.val_stress_prompts, self.val_stress_real) if wide else (self.stress_prompts, self.stress_real)

    def stress_junk(self, kinds: list[str], wide: bool = False) -> tuple[list[str], list[str], list[str], list[str]]:
        """Junk of every kind from every row of :meth:`stress_answers`: (prompts, real, junk, kind). Answers are
        borrowed from the best answers of other instructions either way, so the wide set's best-answer rows hold
        the same junk as the stress test's."""
        memo = ("stress", tuple(kinds), wide)
        if memo not in self._memo:
            others = list(zip(self.stress_prompts, self.stress_real))
            rows = [(p, r, make_junk(k, p, r, others), k) for k in kinds for p, r in zip(*self.stress_answers(wide))]
            self._memo[memo] = tuple(map(list, zip(*rows)))
        return self._memo[memo]

    def augmentation(self, train_pairs: PreferencePairs, contender: Contender) -> PreferencePairs:
        """The contender's augmented pairs, made as ``vrm train`` makes them (:func:`vrm_pyro.experiment.augmentation`)."""
        return augmentation(train_pairs, contender.data_config())

    def augmented(self, train: PairEmbeddings, train_pairs: PreferencePairs, contender: Contender) -> PairEmbeddings:
        """``train`` followed by the contender's augmented pairs, embedded."""
        aug = self.augmentation(train_pairs, contender)
        if not len(aug):
            return train
        if contender.judged_augment:  # as version 0.2 did: unmarked, so the pairs keep the junk's own covariates
            aug = PreferencePairs(aug.prompt, aug.response_a, aug.response_b, aug.label, source=aug.source)
        return train.concat(embed_pairs(aug, self.encoder, representation=contender.representation,
                                        nuisance=contender.model.get("nuisance", ""), desc="augmented"))


# ----------------------------------------------------------------------------- measures


def best_of_n(scores: list[np.ndarray], gold: list[np.ndarray]) -> dict[int, float]:
    return {n: float(np.mean([expected_pick(s, g, n) for s, g in zip(scores, gold)])) for n in BON_NS}


def reference_picks(bon: BestOfN, keep: list[int]) -> dict:
    out = {}
    for gname, gold in (("raw", bon.gold), ("lc", bon.gold_lc)):
        g = [gold[i] for i in keep]
        lengths = [np.array([len(s) for s in bon.samples[i]], float) for i in keep]
        out[f"bon_{gname}_random"] = float(np.mean([x.mean() for x in g]))
        out[f"bon_{gname}_longest"] = best_of_n(lengths, g)[11]
        out[f"bon_{gname}_shortest"] = best_of_n([-x for x in lengths], g)[11]
        out[f"bon_{gname}_oracle"] = float(np.mean([x.max() for x in g]))
    return out


def _split(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    return np.split(np.asarray(values), np.cumsum(counts)[:-1])


def junk_wins(bench: Bench, rm, rep: str, instructions: set[str], prefix: str, wide: bool = False) -> dict:
    """Per junk kind, how often junk made from an instruction's best dev answer (``wide``: from each of its
    :data:`VAL_STRESS_ANSWERS` best) scores at or above that answer: ``{prefix}junk_{kind}``."""
    sp, sr, sj, sk = bench.stress_junk(list(JUNK_KINDS), wide)
    prompts, answers = bench.stress_answers(wide)
    sel = [i for i, q in enumerate(sp) if q in instructions]
    mine = [i for i, q in enumerate(prompts) if q in instructions]
    # only the rows of these instructions are embedded (a costly view need not see every instruction's junk)
    wide_key = ":wide" if wide else ""
    real_p, real_h, _ = bench.texts(f"stress:real{wide_key}:{hash(tuple(mine))}", [prompts[i] for i in mine],
                                    [answers[i] for i in mine], rep, "")
    junk_p, junk_h, _ = bench.texts(f"stress:junk{wide_key}:{hash(tuple(sel))}", [sp[i] for i in sel],
                                    [sj[i] for i in sel], rep, "")
    real = dict(zip([(prompts[i], answers[i]) for i in mine], rm.reward(real_p, real_h).reward.numpy()))
    junk = rm.reward(junk_p, junk_h).reward.numpy()
    df = pd.DataFrame({"kind": [sk[i] for i in sel], "win": junk >= np.array([real[sp[i], sr[i]] for i in sel])})
    row = {}
    for kind, win in df.groupby("kind").win.mean().items():
        row[f"{prefix}junk_{kind}"] = float(win)
    return row


def evaluate_alpaca(bench: Bench, rm, contender: Contender, instructions: set[str], prefix: str) -> dict:
    """Best-of-N, twins, stress and OOD measures of a fitted model on ``instructions``."""
    rep, nuis = contender.representation, rm.config.nuisance
    bon = bench.bon
    keep, counts, _, (p, h, phi) = bench.bon_texts(instructions, rep, nuis)
    out = rm.reward(p, h)
    row: dict = {}
    picks = {"mean": out.reward.numpy()}
    if out.reward_std is not None:
        picks["lcb"] = out.lcb(KAPPA).numpy()
    if rm.model.nuisance is not None:
        picks["total"] = (out.reward + rm.nuisance_reward(p, phi)).numpy()
    for pick, scores in picks.items():
        s = _split(scores, counts)
        for gname, gold in (("raw", bon.gold), ("lc", bon.gold_lc)):
            curve = best_of_n(s, [gold[i] for i in keep])
            row[f"{prefix}bon_{gname}_{pick}"] = curve[11]
            row[f"{prefix}bon_{gname}_{pick}_curve"] = [curve[n] for n in BON_NS]
            if not prefix:  # per instruction, for paired comparisons between contenders
                row[f"bon_{gname}_{pick}_per"] = [float(gold[i][np.argmax(x)]) for i, x in zip(keep, s)]
    if not prefix:
        row["bon_instructions"] = keep
    row.update(junk_wins(bench, rm, rep, instructions, prefix))
    if prefix:  # validation: the wider stress set too (what the selection rule reads since round 15)
        row.update(junk_wins(bench, rm, rep, instructions, prefix + "wide_", wide=True))
        return row
    row.update(reference_picks(bon, keep))
    # twins: does the authentic reward prefer the verbose twin?
    tw = [t for t in bench.twins if t[0] in instructions]
    tp, th, _ = bench.texts(f"twins:{len(tw)}:{hash(tuple(t[0] for t in tw))}", [t[0] for t in tw] * 2,
                            [t[1] for t in tw] + [t[2] for t in tw], rep, "")
    tr = rm.reward(tp, th).reward.numpy()
    row["twins_verbose"] = float(np.mean(tr[len(tw):] > tr[:len(tw)]))
    row["twins_judge_verbose"] = float(np.mean([t[3] for t in tw]))
    # out-of-distribution answers: is reward_std larger?
    if out.reward_std is not None:
        stds = {}
        for kind in ("in_distribution", *OOD_KINDS):
            texts = bench.ood[kind]
            op, oh, _ = bench.texts(f"ood:{kind}:{hash(tuple(keep))}", [bench.bon.instructions[i] for i in keep],
                                    [texts[i] for i in keep], rep, "")
            stds[kind] = rm.reward(op, oh).reward_std.numpy()
        for kind in OOD_KINDS:
            row[f"ood_auroc_{kind}"] = auroc(stds["in_distribution"], stds[kind])
        row["ood_auroc"] = auroc(stds["in_distribution"], np.concatenate([stds[k] for k in OOD_KINDS]))
    return row


def fit_and_measure(bench: Bench, contender: Contender, seed: int, train, val, test, test_texts: PreferencePairs):
    rm = build_reward_model(contender.model_config(), emb_dim=train.dim, response_dim=train.response_dim, seed=seed,
                            representation=contender.representation)
    t0 = time.perf_counter()
    res = fit(rm, train, val, contender.train_config(seed, len(train)))
    row = {"train_seconds": time.perf_counter() - t0, "epochs": len(res.history), "best_epoch": res.best_epoch,
           "n_train": len(train), "val_nll": res.best_val.get("nll"), "val_accuracy": res.best_val.get("accuracy")}
    best = res.history[res.best_epoch] if res.best_epoch >= 0 else {}
    row.update({k: v for k, v in best.items() if k.startswith("kl_")})
    test_m = evaluate_pairs(rm, test, num_samples=32, seed=seed)
    row.update({f"test_{k}": v for k, v in test_m.items() if k != "n"})
    row["test_accuracy_authentic"] = (evaluate_pairs(rm, test, seed=seed, include_nuisance=False)["accuracy"]
                                      if rm.model.nuisance is not None else test_m["accuracy"])
    ra = rm.reward(test.prompt, test.response_a).reward.numpy()
    rb = rm.reward(test.prompt, test.response_b).reward.numpy()
    words = [len(t.split()) for t in test_texts.response_a + test_texts.response_b]
    row["length_spearman"] = spearman(np.concatenate([ra, rb]), words)
    routes = rm.route_rewards(test.prompt, test.response_a)
    if routes:
        total = routes["latent"] + routes["path"]
        var = float(total.var()) or 1.0
        row["route_var_latent"] = float(routes["latent"].var()) / var
        row["route_var_path"] = float(routes["path"].var()) / var
    if rm.model.nuisance is not None:
        for g in rm.nuisance_posterior():
            row[f"gamma_{g['covariate']}"] = g["logits_per_unit"]
            row[f"gamma_{g['covariate']}_std"] = g["logits_per_unit_std"]
    return rm, row


def split_rows(bench: Bench, seed: int, fold: int, size: int | None = None) -> tuple[dict, tuple]:
    """Row indices of the AlpacaEval pairs per split, and the split's instructions ``(train, val, test)``. With
    ``size``, a learning-curve point: ``size`` training pairs drawn at random (nested across sizes)."""
    tr, va, te = bench.folds(seed)[fold]
    idx = {part: [i for i, p in enumerate(bench.alpaca.prompt) if p in s] for part, s in
           (("train", tr), ("validation", va), ("test", te))}
    if size is not None:
        order = np.random.default_rng([seed, fold, 7]).permutation(len(idx["train"]))
        idx["train"] = sorted(idx["train"][i] for i in order[:size])
    return idx, (tr, va, te)


def fit_split(bench: Bench, contender: Contender, seed: int, fold: int, size: int | None = None):
    """``contender`` fitted on the AlpacaEval split ``(seed, fold, size)`` as a stage fits it (its order model, its
    embeddings, its augmentation): ``(reward model, row of fit_and_measure, row indices, (train, validation, test)
    instructions)``. What the probes that refit a contender call too."""
    idx, (tr, va, te) = split_rows(bench, seed, fold, size)
    bench.use_split_order_model(contender, seed, fold, idx["train"], tr, size)
    full = bench.pairs(bench.alpaca, "alpaca", contender.representation, contender.model.get("nuisance", ""))
    train, val, test = (full.subset(idx[k]) for k in ("train", "validation", "test"))
    if contender.augment:
        train = bench.augmented(train, bench.alpaca.subset(idx["train"]), contender)
    if contender.bon_pairs:
        train = train.concat(bench.pairs(bench.bon.judged_pairs(tr), f"bon_pairs:{hash(tuple(sorted(tr)))}",
                                         contender.representation, contender.model.get("nuisance", "")))
    rm, row = fit_and_measure(bench, contender, seed, train, val, test, bench.alpaca.subset(idx["test"]))
    return rm, row, idx, (tr, va, te)


def run_alpaca(bench: Bench, name: str, contender: Contender, seed: int, fold: int, size: int | None = None) -> dict:
    rm, row, idx, (_, va, te) = fit_split(bench, contender, seed, fold, size)
    row["train_pairs"] = len(idx["train"])  # real pairs (n_train counts augmented ones too)
    row.update(evaluate_alpaca(bench, rm, contender, te, ""))
    row.update(evaluate_alpaca(bench, rm, contender, va, "val_"))
    return {"dataset": "alpaca_eval", "contender": name, "seed": seed, "fold": fold, "size": size, **row}


def run_hh(bench: Bench, name: str, contender: Contender, seed: int) -> dict:
    splits = bench.hh.split_by_prompt(0.1, 0.2, seed)
    bench.use_order_model(contender, ("hh", seed), splits["train"])
    full = {k: bench.pairs(v, f"hh:{seed}:{k}", contender.representation, contender.model.get("nuisance", ""))
            for k, v in splits.items()}
    train = full["train"]
    if contender.augment:
        train = bench.augmented(train, splits["train"], contender)
    _, row = fit_and_measure(bench, contender, seed, train, full["validation"], full["test"], splits["test"])
    return {"dataset": "hh_rlhf_harmless", "contender": name, "seed": seed, "fold": 0, "size": None, **row}


# ----------------------------------------------------------------------------- stages


def cached_views(representation: str) -> str:
    """``representation`` without the order model's parts (``order_score``, ``order_margin``): what a prepare step
    can compute before any fit (the order model is fitted per training split, and its columns are not cached)."""
    return "+".join(p for p in representation.split("+") if not needs_order_model(p))


def prepare_augmentation(bench: Bench, contenders: list[str], seeds: list[int], folds: list[int],
                         sizes: list[int] | None) -> None:
    """Encode the augmented pairs the AlpacaEval jobs of a stage will make, in one process (parallel workers
    would each encode the same junk)."""
    for name in contenders:
        c = CONTENDERS[name]
        if not c.augment:
            continue
        for seed in seeds:
            for fold in folds:
                for size in sizes or [None]:
                    idx, _ = split_rows(bench, seed, fold, size)
                    aug = bench.augmentation(bench.alpaca.subset(idx["train"]), c)
                    embed_pairs(aug, bench.encoder, representation=cached_views(c.representation), progress=True,
                                desc=f"augmented {name} seed {seed} fold {fold} size {size}")


def job_texts(bench: Bench, contender: Contender, seed: int, fold: int) -> tuple[list[str], list[str]]:
    """Every (prompt, response) text an AlpacaEval job of ``contender`` embeds: the pairs, its augmented pairs, and
    for the validation and test instructions the best-of-N answers, the stress set, the OOD answers, the twins."""
    idx, (tr, va, te) = split_rows(bench, seed, fold)
    al, measured = bench.alpaca, va | te
    prompts, responses = al.prompt + al.prompt, al.response_a + al.response_b
    if contender.augment:
        aug = bench.augmentation(al.subset(idx["train"]), contender)
        prompts, responses = prompts + aug.prompt + aug.prompt, responses + aug.response_a + aug.response_b
    if contender.bon_pairs:
        bp = bench.bon.judged_pairs(tr)
        prompts, responses = prompts + bp.prompt + bp.prompt, responses + bp.response_a + bp.response_b
    rows = []
    for wide, instructions in ((False, measured), (True, va)):
        sp, _, sj, _ = bench.stress_junk(list(JUNK_KINDS), wide)
        rows += [(p, r) for p, r in zip(*bench.stress_answers(wide)) if p in instructions]
        rows += [(p, j) for p, j in zip(sp, sj) if p in instructions]
    bon = bench.bon
    keep = [i for i, p in enumerate(bon.instructions) if p in measured]
    rows += [(bon.instructions[i], s) for i in keep for s in bon.samples[i]]
    rows += [(bon.instructions[i], bench.ood[kind][i]) for kind in ("in_distribution", *OOD_KINDS) for i in keep]
    rows += [(t[0], t[k]) for t in bench.twins if t[0] in te for k in (1, 2)]
    return prompts + [p for p, _ in rows], responses + [r for _, r in rows]


def prepare_jobs(bench: Bench, contenders: list[str], seeds: list[int], folds: list[int]) -> None:
    """Embed every text the contenders' AlpacaEval jobs use, in one process (for a costly view such as the
    likelihood model's, which parallel workers would otherwise each compute)."""
    for seed in seeds:
        for fold in folds:
            for name in contenders:
                c = CONTENDERS[name]
                prompts, responses = job_texts(bench, c, seed, fold)
                embed_texts(bench.encoder, prompts, responses, representation=cached_views(c.representation),
                            progress=True,
                            desc=f"{name} seed {seed} fold {fold}")


def prepare(bench: Bench, seeds: list[int], representation: str = RICH) -> None:
    """Encode every text the stages use, in every view of ``representation`` (the cache keeps them)."""
    kinds = list(JUNK_KINDS)
    sp, sr, sj, sk = bench.stress_junk(kinds)
    bench.texts("stress:junk", sp, sj, representation, "")
    bench.texts("stress:real", bench.stress_prompts, bench.stress_real, representation, "")
    for kind in ("in_distribution", *OOD_KINDS):
        bench.texts(f"ood:{kind}", bench.bon.instructions, bench.ood[kind], representation, "")
    aug = Contender({}, representation, "core", 0.1)
    for seed in seeds:
        for fold in range(FOLDS):
            tr, _, _ = bench.folds(seed)[fold]
            sub = bench.alpaca.subset([i for i, p in enumerate(bench.alpaca.prompt) if p in tr])
            embed_pairs(bench.augmentation(sub, aug), bench.encoder, representation=representation,
                        desc=f"augmented alpaca seed {seed} fold {fold}", progress=True)
        hh_train = bench.hh.split_by_prompt(0.1, 0.2, seed)["train"]
        embed_pairs(bench.augmentation(hh_train, aug), bench.encoder, representation=representation,
                    desc=f"augmented hh seed {seed}", progress=True)
        embed_pairs(bench.hh, bench.encoder, representation=representation, desc="hh", progress=True)


def write_result(stage: str, name: str, out: dict) -> None:
    """``out`` to ``results/<stage>/<name>.json`` (the folder made if needed), and printed."""
    path = RESULTS / stage / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def write_probe(name: str, rows: list[dict], mean: dict, argv: list[str] | None, script: str | None = None) -> None:
    """A probe's rows per seed and their means, with the command that wrote them (``script``, default ``name``), to
    ``results/coherence/<name>.json``; the means are printed."""
    out = {"command": f"python benchmarks/{script or name}.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": rows, "mean_over_seeds": mean}
    (RESULTS / "coherence" / f"{name}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(mean, indent=1))


def done_rows(path: Path) -> set:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        keys.add((r["dataset"], r["contender"], r["seed"], r["fold"], r.get("size")))
    return keys


def stage_jobs(contenders: list[str], seeds: list[int], folds: list[int], datasets: list[str],
               sizes: list[int] | None = None) -> list[tuple]:
    """Every (dataset, contender, seed, fold, size) of a stage: HH first, then AlpacaEval fold-major, so that a
    stage cut short holds complete comparisons (every contender, every seed) on the folds it reached."""
    jobs = []
    if "hh_rlhf_harmless" in datasets:
        jobs += [("hh_rlhf_harmless", name, seed, 0, None) for seed in seeds for name in contenders]
    if "alpaca_eval" in datasets:
        jobs += [("alpaca_eval", name, seed, fold, size) for fold in folds for size in (sizes or [None])
                 for seed in seeds for name in contenders]
    return jobs


_WORKER_BENCH: Bench | None = None


def _init_worker(threads: int, bench_options: dict) -> None:
    global _WORKER_BENCH
    torch.set_num_threads(threads)
    _WORKER_BENCH = Bench(**bench_options)


def _run_job(job: tuple) -> dict:
    dataset, name, seed, fold, size = job
    contender = CONTENDERS[name]
    if dataset == "alpaca_eval":
        return run_alpaca(_WORKER_BENCH, name, contender, seed, fold, size)
    return run_hh(_WORKER_BENCH, name, contender, seed)


def run_stage(stage: str, contenders: list[str], seeds: list[int], folds: list[int], datasets: list[str],
              sizes: list[int] | None = None, workers: int = 1, bench_options: dict | None = None) -> Path:
    """Run the jobs of a stage not yet in ``results/<stage>/rows.jsonl``, appending a row per finished job.

    ``bench_options``: :class:`Bench`'s keyword arguments (encoder, pairs per instruction, likelihood model and
    window). ``workers > 1`` fits in that many processes (one thread each); the embeddings must already be in the
    cache (``prepare`` and ``embed_shared.py``), since workers only read it.
    """
    bench_options = dict(bench_options or {})
    pairs_per_instruction = bench_options.get("pairs_per_instruction")
    window = (bench_options.get("likelihood_response_tokens", EncoderConfig.likelihood_response_tokens)
              if bench_options.get("likelihood_model") else None)
    out = RESULTS / stage
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = done_rows(rows_path)
    if window is not None and rows_path.exists():  # one stage, one LM window: a rerun must not mix two
        windows = {json.loads(line).get("likelihood_response_tokens", EncoderConfig.likelihood_response_tokens)
                   for line in rows_path.read_text().splitlines()} - {None}
        if windows - {window}:
            raise SystemExit(f"compare_bt.py: {rows_path} holds rows with the LM window {sorted(windows)}, not "
                             f"{window} (--likelihood-response-tokens): run another window as another --stage")
    wanted = stage_jobs(contenders, seeds, folds, datasets, sizes)
    jobs = [j for j in wanted if j not in done]
    print(f"{stage}: {len(jobs)} jobs to run ({len(wanted) - len(jobs)} of the {len(wanted)} asked for already in "
          f"{rows_path.name}), {workers} worker(s)", flush=True)

    def record(row: dict) -> None:
        row["machine"] = machine()
        row["pairs_per_instruction"] = pairs_per_instruction
        if window is not None:
            row["likelihood_response_tokens"] = window
        with open(rows_path, "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")
        short = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                 if k in ("dataset", "contender", "seed", "fold", "size", "val_nll", "test_accuracy", "bon_raw_mean",
                          "bon_lc_mean", "twins_verbose", "ood_auroc", "train_seconds")}
        print(json.dumps(short), flush=True)

    if workers <= 1:
        _init_worker(torch.get_num_threads(), bench_options)
        for job in jobs:
            record(_run_job(job))
        return rows_path
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(1, bench_options)) as pool:
        for row in pool.imap_unordered(_run_job, jobs):
            record(row)
    return rows_path


def paired_bon(df: pd.DataFrame, reference: str, size: int = -1) -> pd.DataFrame:
    """Best-of-11 gold of each contender minus ``reference``'s on the same instructions: per instruction the
    difference averaged over seeds, then the mean and its standard error over instructions. ``size``: the
    learning-curve point to compare (-1: the fits on every training pair)."""
    out = []
    al = df[df.dataset == "alpaca_eval"]
    if "size" in al:
        al = al[al["size"].fillna(-1) == size]
    ref = al[al.contender == reference]
    if ref.empty or "bon_instructions" not in al:
        return pd.DataFrame()

    def per_instruction(rows, column):
        values = {}
        for _, r in rows.iterrows():
            if isinstance(r.get(column), list):
                for i, v in zip(r["bon_instructions"], r[column]):
                    values[(r["seed"], i)] = v
        return values

    for name in al.contender.unique():
        if name == reference:
            continue
        row = {"contender": name, "reference": reference}
        for column in ("bon_raw_mean_per", "bon_lc_mean_per", "bon_raw_lcb_per", "bon_lc_lcb_per"):
            a = per_instruction(al[al.contender == name], column)
            b = per_instruction(ref, column.replace("_lcb_", "_mean_") if column not in ref else column)
            keys = sorted(set(a) & set(b))
            if not keys:
                continue
            diff = pd.Series({k: a[k] - b[k] for k in keys})
            by_instruction = diff.groupby(level=1).mean()
            row[column.replace("_per", "_diff")] = float(by_instruction.mean())
            row[column.replace("_per", "_se")] = float(by_instruction.std(ddof=1) / np.sqrt(len(by_instruction)))
            row["instructions"] = len(by_instruction)
        out.append(row)
    return pd.DataFrame(out)


def summarise(stage: str, command: str = "", reference: str | None = None, folds: list[int] | None = None) -> pd.DataFrame:
    """Mean over folds per seed, then mean and sd over seeds: one row per (dataset, contender, size).
    ``folds``: only these folds (a stage cut short: the folds every contender and seed reached)."""
    out = RESULTS / stage
    df = pd.read_json(out / "rows.jsonl", lines=True)
    if folds is not None:
        df = df[df["fold"].isin(folds)]
    df["size"] = df["size"].fillna(-1)
    for pre in ("", "val_", "val_wide_"):  # the junk rate over kinds: mean, and the worst kind of each fit
        kinds = [c for c in df.columns if c.startswith(pre + "junk_") and c[len(pre) + 5:] in JUNK_KINDS]
        if kinds:
            df[pre + "junk_mean"], df[pre + "junk_max"] = df[kinds].mean(axis=1), df[kinds].max(axis=1)
    scalar = [c for c in df.columns if c not in ("dataset", "contender", "seed", "fold", "size")
              and pd.api.types.is_numeric_dtype(df[c])]
    per_seed = df.groupby(["dataset", "contender", "size", "seed"])[scalar].mean()
    mean = per_seed.groupby(level=[0, 1, 2]).mean()
    sd = per_seed.groupby(level=[0, 1, 2]).std(ddof=1)
    n = per_seed.groupby(level=[0, 1, 2]).size().rename("seeds")
    runs = df.groupby(["dataset", "contender", "size"]).size().rename("runs")
    summary = mean.join(sd.add_suffix("_sd")).join(n).join(runs).reset_index()
    summary.to_json(out / "summary.json", orient="records", indent=1)
    machines = sorted(df["machine"].dropna().unique()) if "machine" in df else None
    md = summary_markdown(summary, stage, command, machines)
    if reference is not None:
        for size in sorted(df["size"].unique()):
            paired = paired_bon(df, reference, size)
            if len(paired):
                paired["size"] = size
                name = "paired.json" if size < 0 else f"paired_{int(size)}.json"
                paired.to_json(out / name, orient="records", indent=1)
                md += paired_markdown(paired, "" if size < 0 else f", {int(size)} training pairs")
    if (df["size"] > 0).any():
        plot_curves(df[df["size"] > 0], out)
        md += "\n".join(["## Learning curves", ""] + [f"![{m}]({m}.png)" for m, _ in CURVES]) + "\n"
    (out / "summary.md").write_text(md)
    return summary


def paired_markdown(paired: pd.DataFrame, title: str = "") -> str:
    ref = paired.reference.iloc[0]
    lines = ["## Best-of-11, paired with " + f"`{ref}` on the same instructions{title}", "",
             "Difference in the gold of the pick (contender minus reference), averaged over seeds per instruction; "
             "± is the standard error over instructions.", "",
             "| contender | instructions | raw gold, mean pick | LC gold, mean pick | raw gold, lcb pick | LC gold, lcb pick |",
             "| --- | --- | --- | --- | --- | --- |"]
    for _, r in paired.iterrows():
        cells = []
        for c in ("bon_raw_mean", "bon_lc_mean", "bon_raw_lcb", "bon_lc_lcb"):
            d, se = r.get(f"{c}_diff"), r.get(f"{c}_se")
            cells.append("" if d is None or pd.isna(d) else f"{d:+.4f} ± {se:.4f}")
        lines.append(f"| {r['contender']} | {int(r.get('instructions', 0))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


CURVES = [("test_accuracy", "pairwise accuracy (judge labels)"), ("bon_raw_mean", "best-of-11 gold (raw)"),
          ("bon_lc_mean", "best-of-11 gold (length-controlled)"), ("twins_verbose", "verbose twin preferred"),
          ("junk_rate", "junk at or above the real answer (mean over kinds)")]


def plot_curves(df: pd.DataFrame, out: Path) -> None:
    """One plot per measure: mean ± sd over seeds against the number of training pairs, a line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.copy()
    junk = [c for c in df.columns if c.startswith("junk_") and c[5:] in JUNK_KINDS]
    df["junk_rate"] = df[junk].mean(axis=1)
    for metric, label in CURVES:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, part in df.groupby("contender", sort=False):
            g = part.groupby("size")[metric]
            m, sd = g.mean(), g.std(ddof=1).fillna(0)
            x = part.groupby("size")["train_pairs"].mean().loc[m.index].values  # the largest size: every pair
            ax.plot(x, m.values, marker="o", label=name)
            ax.fill_between(x, (m - sd).values, (m + sd).values, alpha=0.15)
        if metric.startswith("bon_"):
            ref = metric.replace("_mean", "_longest")
            ax.axhline(df[ref].mean(), color="grey", ls="--", lw=1, label="longest pick")
        if metric == "twins_verbose":
            ax.axhline(df["twins_judge_verbose"].mean(), color="black", ls=":", lw=1, label="the judge")
        ax.set(xscale="log", xlabel="training pairs", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=90)
        plt.close(fig)


COLUMNS = [("val_nll", "val NLL"), ("val_accuracy", "val acc"), ("test_accuracy", "test acc"),
           ("test_accuracy_authentic", "acc (authentic)"), ("test_nll", "test NLL"), ("test_ece", "ECE"),
           ("bon_raw_mean", "BoN-11 raw"), ("bon_lc_mean", "BoN-11 LC"), ("bon_raw_total", "BoN raw (total)"),
           ("bon_raw_lcb", "BoN raw (lcb)"), ("bon_lc_lcb", "BoN LC (lcb)"), ("twins_verbose", "verbose pref."),
           ("length_spearman", "len rho"), ("ood_auroc", "OOD AUROC"), ("val_junk_mean", "val junk (mean)"),
           ("val_wide_junk_mean", f"val junk ({VAL_STRESS_ANSWERS} answers)"),
           ("junk_mean", "junk (mean)"), ("junk_max", "junk (worst kind)")]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def summary_markdown(summary: pd.DataFrame, stage: str, command: str, machines: list[str] | None = None) -> str:
    lines = [f"# Stage `{stage}`", "", f"Command: `{command}`" if command else "",
             f"Fitted on: {'; '.join(machines or [machine()])}. "
             "Means over seeds of the per-seed mean over folds; ± is the sd over seeds.", ""]
    for (dataset, size), part in summary.groupby(["dataset", "size"], sort=False):
        cols = [(c, h) for c, h in COLUMNS if c in part and part[c].notna().any()]
        title = dataset + (f", {int(size)} training pairs" if size > 0 else "")
        lines += [f"## {title}", "", "| contender | seeds | runs | " + " | ".join(h for _, h in cols) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |"]
        for _, r in part.sort_values("val_nll").iterrows():
            cells = []
            for c, _ in cols:
                v, s = r.get(c), r.get(f"{c}_sd")
                cells.append("" if pd.isna(v) else f"{v:.3f}" + ("" if pd.isna(s) else f" ± {s:.3f}"))
            lines.append(f"| {r['contender']} | {int(r['seeds'])} | {int(r['runs'])} | " + " | ".join(cells) + " |")
        junk = [c for c in part.columns if c.startswith("junk_") and c[5:] in JUNK_KINDS]
        if junk:
            lines += ["", "Junk ranked at or above the real answer (share):", "",
                      "| contender | " + " | ".join(c[5:] for c in junk) + " |", "| --- |" + " --- |" * len(junk)]
            for _, r in part.iterrows():
                lines.append(f"| {r['contender']} | " + " | ".join(f"{r[c]:.3f}" for c in junk) + " |")
        refs = [c for c in ("bon_raw_random", "bon_raw_longest", "bon_raw_oracle", "bon_lc_random", "bon_lc_longest",
                            "bon_lc_oracle") if c in part]
        if refs:
            lines += ["", "Reference picks: " + ", ".join(f"{c[4:]} {part[c].mean():.3f}" for c in refs)]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default=None, help="Encoder model directory (default: the bundled MiniLM).")
    ap.add_argument("--likelihood-model", default=None,
                    help="Causal LM (directory or .gguf) for contenders with the representation part likelihood "
                         "('+lik'), run in bfloat16.")
    ap.add_argument("--likelihood-response-tokens", type=int, default=EncoderConfig.likelihood_response_tokens,
                    help="Response tokens the likelihood model reads (EncoderConfig.likelihood_response_tokens); "
                         "use another --stage for another window.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--contenders", nargs="+", default=None, choices=list(CONTENDERS), metavar="CONTENDER",
                   help="Only the augmented pairs these contenders' AlpacaEval jobs make (with --folds, --sizes).")
    p.add_argument("--every-text", action="store_true",
                   help="With --contenders: every text their AlpacaEval jobs embed, in their representation.")
    p.add_argument("--folds", nargs="+", type=int, default=list(range(FOLDS)))
    p.add_argument("--sizes", nargs="+", type=int, default=None)
    p.add_argument("--pairs-per-instruction", type=int, default=None)
    p.add_argument("--representation", default="joint+" + RICH, help="Views to encode (every part by default).")
    p.add_argument("--device", default="cpu", help="Where the encoder runs (cpu, cuda).")
    p = sub.add_parser("run")
    p.add_argument("--stage", required=True)
    p.add_argument("--contenders", nargs="+", required=True, choices=list(CONTENDERS), metavar="CONTENDER",
                   help="Names from CONTENDERS (compare_bt.py list prints them).")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--folds", nargs="+", type=int, default=list(range(FOLDS)))
    p.add_argument("--datasets", nargs="+", default=["alpaca_eval"], choices=["alpaca_eval", "hh_rlhf_harmless"])
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="Learning curve: training pairs per point.")
    p.add_argument("--reference", default=None, help="Contender to pair best-of-N differences with.")
    p.add_argument("--workers", type=int, default=1, help="Processes fitting at once (one thread each).")
    p.add_argument("--pairs-per-instruction", type=int, default=None,
                   help="Keep this many AlpacaEval pairs per instruction (drawn once, seed 0); default: all.")
    sub.add_parser("list", help="Print the contenders' names, one per line.")
    p = sub.add_parser("summary")
    p.add_argument("--stage", required=True)
    p.add_argument("--folds", nargs="+", type=int, default=None, help="Summarise only these folds.")
    p.add_argument("--reference", default=None, help="Contender to pair best-of-N differences with.")
    args = ap.parse_args(argv)
    command = "python benchmarks/compare_bt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.cmd == "list":
        print("\n".join(CONTENDERS))
        return 0
    bench_options = {"encoder": args.encoder, "pairs_per_instruction": getattr(args, "pairs_per_instruction", None),
                     "likelihood_model": args.likelihood_model,
                     "likelihood_response_tokens": args.likelihood_response_tokens}
    if args.cmd == "prepare":
        bench = Bench(device=args.device, **bench_options)
        if args.contenders and args.every_text:
            prepare_jobs(bench, args.contenders, args.seeds, args.folds)
        elif args.contenders:
            prepare_augmentation(bench, args.contenders, args.seeds, args.folds, args.sizes)
        else:
            prepare(bench, args.seeds, args.representation)
        return 0
    if args.cmd == "run":
        run_stage(args.stage, args.contenders, args.seeds, args.folds, args.datasets, args.sizes, args.workers,
                  bench_options)
    summary = summarise(args.stage, command, args.reference, args.folds if args.cmd == "summary" else None)
    print((RESULTS / args.stage / "summary.md").read_text())
    return 0 if len(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
