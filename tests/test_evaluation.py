"""Evaluation and reward-hacking instruments: exact numbers on constructed cases."""

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from vrm_pyro import ModelConfig, PairEmbeddings, build_reward_model
from vrm_pyro.data import PreferencePairs
from vrm_pyro.errors import DataError
from vrm_pyro.evaluate import (
    accuracy_by_uncertainty,
    auroc,
    expected_calibration_error,
    group_breakdown,
    pairwise_metrics,
    reliability_bins,
    spearman,
)
from vrm_pyro.experiment import spurious_cue_experiment
from vrm_pyro.hacking import (
    BestOfNSet,
    best_of_n_curve,
    best_of_n_from_alpaca_eval,
    expected_pick,
    length_bias,
    length_perturbation,
    load_best_of_n,
)
from vrm_pyro.inspect import cluster_prompts, compare_prompts, objective_report, response_properties
from vrm_pyro.reports import evaluate_models

from .conftest import ALPACA_FILE, require


def test_expected_pick_is_the_exact_mean_over_random_subsets():
    rng = np.random.default_rng(0)
    score, gold = rng.normal(size=9), rng.normal(size=9)
    for n in (1, 3, 9):
        draws = [gold[(idx := rng.choice(9, n, replace=False))[np.argmax(score[idx])]] for _ in range(40000)]
        assert expected_pick(score, gold, n) == pytest.approx(np.mean(draws), abs=0.02)
    assert expected_pick(score, gold, 1) == pytest.approx(gold.mean())
    assert expected_pick(score, gold, 9) == pytest.approx(gold[np.argmax(score)])
    assert expected_pick(gold, gold, 9) == pytest.approx(gold.max())


def test_best_of_n_curve_methods_and_file_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    gold = [rng.random(8) for _ in range(20)]
    responses = [[" ".join(["w"] * (1 + int(10 * g_i))) for g_i in g] for g in gold]  # longer = better here
    bon = BestOfNSet([f"p{i}" for i in range(20)], responses, gold)
    bon.save(tmp_path / "bon.jsonl")
    again = load_best_of_n(tmp_path / "bon.jsonl")
    assert again.prompts == bon.prompts and all(np.allclose(a, b) for a, b in zip(again.gold, bon.gold))
    noisy = [g + rng.normal(scale=0.3, size=8) for g in gold]
    curve = best_of_n_curve(bon, {"model": noisy}).pivot(index="n", columns="method", values="gold")
    assert list(curve.index) == [1, 2, 4, 8]
    assert np.allclose(curve.loc[1], curve.loc[1, "random"])          # n = 1 is a random pick for everyone
    assert (curve["oracle"] >= curve["model"] - 1e-12).all() and curve["oracle"].is_monotonic_increasing
    assert curve.loc[8, "model"] > curve.loc[1, "model"]
    with pytest.raises(DataError, match="exceeds the fewest candidates"):
        best_of_n_curve(bon, {"model": noisy}, ns=[16])


@pytest.mark.parametrize("row, field", [
    ({"prompt": "p", "candidates": [{"response": "a", "gold": 1}]}, "candidates"),
    ({"prompt": "p", "candidates": [{"response": "a", "gold": 1}, {"response": "b", "gold": "x"}]}, "candidates[1]"),
    ({"prompt": "", "candidates": []}, "prompt"),
])
def test_best_of_n_file_errors_are_located(tmp_path, row, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "candidates": [{"response": "a", "gold": 0}, {"response": "b", "gold": 1}]})
                    + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl:2: field '{re_escape(field)}'"):
        load_best_of_n(path)


def test_best_of_n_reads_alpaca_evals_own_best_of_n_rows(tmp_path):
    """``../shared/data/alpaca_bon_dev.jsonl.gz``'s form: gold = the judge's preference over the reference − 1."""
    from .conftest import SHARED, require

    real = load_best_of_n(require(SHARED / "alpaca_bon_dev.jsonl.gz"))
    assert len(real) == 407 and real.max_n == 11
    first = json.loads(gzip.open(SHARED / "alpaca_bon_dev.jsonl.gz", "rt").readline())
    assert real.prompts[0] == first["instruction"] and real.responses[0] == [s["output"] for s in first["samples"]]
    np.testing.assert_allclose(real.gold[0], [s["preference"] - 1 for s in first["samples"]])
    # the picks the data's README quotes (win rate x 100 = 100 x mean gold): random 33.1, oracle 59.3 (its longest,
    # 36.9, counts characters; the curve's counts words: 37.3)
    curve = best_of_n_curve(real, {}, ns=[11]).pivot(index="n", columns="method", values="gold")
    assert [round(100 * curve.loc[11, m], 1) for m in ("random", "oracle", "longest")] == [33.1, 59.3, 37.3]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"instruction": "i", "samples": [{"output": "a", "preference": 1.2},
                                                                {"output": "b", "preference": None}]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'samples\[1\]': 'preference' must be a finite number"):
        load_best_of_n(path)


def re_escape(s):
    import re

    return re.escape(s)


def test_best_of_n_from_alpaca_eval_uses_judge_preference_as_gold():
    from vrm_pyro.formats import load_pairs

    pairs = load_pairs(str(require(ALPACA_FILE)), "alpaca_eval", skip_invalid=True, limit=3000)  # ~7 generators
    keep = set(sorted(set(pairs.prompt))[:5])
    bon = best_of_n_from_alpaca_eval(pairs, instructions=keep, min_candidates=4)
    assert set(bon.prompts) <= keep and len(bon) >= 3 and bon.max_n >= 4
    i = pairs.prompt.index(bon.prompts[0])
    j = bon.responses[0].index(pairs.response_b[i])
    assert bon.gold[0][j] == pytest.approx(1 - float(pairs.label[i]))


def test_reliability_and_ece_on_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, size=20000)
    calibrated = (rng.random(20000) < p).astype(float)
    bins = reliability_bins(p, calibrated)
    assert bins["count"].sum() == 20000
    ok = bins["count"] > 0
    assert np.allclose(bins["accuracy"][ok], bins["confidence"][ok], atol=0.03)
    assert expected_calibration_error(p, calibrated > 0.5) < 0.02
    overconfident = np.where(p > 0.5, 0.999, 0.001)
    assert pairwise_metrics(overconfident, calibrated)["ece"] > 0.2


def test_accuracy_by_uncertainty_and_group_breakdown():
    label = np.ones(100)
    prob = np.where(np.arange(100) < 50, 0.9, 0.1)   # the first half right, the second wrong
    unc = np.arange(100.0)                           # ... and the wrong ones are the uncertain ones
    df = accuracy_by_uncertainty(prob, label, unc, bins=2)
    assert list(df.accuracy) == [1.0, 0.0] and list(df.n) == [50, 50]
    ties = accuracy_by_uncertainty(prob, label, np.where(np.arange(100) < 80, 0.0, unc), bins=5)
    assert list(ties.n) == [80, 20]  # a run of equal values (here 80 zeros) is never split across bins
    groups = ["a"] * 30 + ["b"] * 70
    g = group_breakdown(prob, label, groups).set_index("group")
    assert g.loc["a", "accuracy"] == 1.0 and g.loc["b", "accuracy"] == pytest.approx(20 / 70)
    assert g.loc["b", "nll"] == pytest.approx(pairwise_metrics(prob[30:], label[30:])["nll"])


def _length_world(n=60, seed=0):
    """Texts whose embedding's first coordinate is their length in words; a BT head reading it."""
    rng = np.random.default_rng(seed)
    la, lb = rng.integers(1, 40, n), rng.integers(1, 40, n)
    texts = PreferencePairs([f"prompt {i}" for i in range(n)], [" ".join(["x"] * k) for k in la],
                            [" ".join(["y"] * k) for k in lb], (la < lb).astype(np.float32))  # shorter preferred
    def emb(lengths):
        e = torch.zeros(n, 4)
        e[:, 0] = torch.tensor(lengths, dtype=torch.float32)
        return e
    pairs = PairEmbeddings(torch.zeros(n, 4), emb(la), emb(lb), texts.label)
    rm = build_reward_model(ModelConfig(model="bt", feature_transform="none"), emb_dim=4)
    with torch.no_grad():
        rm.model.head.net.weight.copy_(torch.tensor([[1.0, 0, 0, 0]]))
        rm.model.head.net.bias.zero_()
    return rm, pairs, texts


def test_length_bias_of_a_pure_length_reward():
    rm, pairs, texts = _length_world()
    lb = length_bias(rm, pairs, texts)
    assert lb["length_spearman"] == pytest.approx(1.0)
    differ = sum(len(a.split()) != len(b.split()) for a, b in zip(texts.response_a, texts.response_b))
    assert lb["acc_shorter_preferred"] == 0.0 and lb["n_shorter_preferred"] == differ and lb["n_longer_preferred"] == 0

    class WordCountEncoder:
        from vrm_pyro import EncoderConfig

        config = EncoderConfig()

        def encode(self, prompts, responses=None, **kwargs):
            texts_ = responses if responses is not None else prompts
            e = torch.zeros(len(texts_), 4)
            e[:, 0] = torch.tensor([len(t.split()) for t in texts_], dtype=torch.float32)
            return e

    pert = length_perturbation(rm, WordCountEncoder(), texts.prompt, texts.response_a)
    assert pert["padding_gain_fraction"] == 1.0 and pert["padding_delta_sd"] > 1.0


def test_evaluate_models_report_files_match_the_numbers(tmp_path):
    rm_bt, pairs, texts = _length_world(80)
    texts.meta = [{"generator_2": "g1" if i % 2 else "g2"} for i in range(80)]
    vrm = build_reward_model(ModelConfig(hidden_dim=8, num_objectives=2, feature_dim=2, feature_transform="none"),
                             emb_dim=4, seed=0)
    report = evaluate_models({"vrm": vrm, "bt": rm_bt}, pairs, texts=texts, group_column="generator_2")
    report.save(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["metrics"]["bt"]["accuracy"] == report.metrics["bt"]["accuracy"] == 0.0
    assert set(saved["accuracy_by_uncertainty"]) == {"vrm"} and set(saved["accuracy_by_margin"]) == {"vrm", "bt"}
    groups = pd.read_csv(tmp_path / "groups.csv")
    assert set(groups.group) == {"g1", "g2"} and set(groups.model) == {"vrm", "bt"}
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("reliability.png", "uncertainty.png"))
    assert "| bt |" in (tmp_path / "report.md").read_text()
    with pytest.raises(DataError, match="no row has a 'category' field"):
        evaluate_models({"bt": rm_bt}, pairs, texts=texts, group_column="category")


def test_spurious_cue_bed_hurts_a_model_that_uses_the_cue():
    from vrm_pyro import TrainConfig

    df = spurious_cue_experiment({"bt": ModelConfig(model="bt")}, TrainConfig(epochs=15, lr=1e-2, progress=False),
                                 agreements=(0.5, 1.0), nuisance=6.0, emb_dim=16, train_prompts=120,
                                 pairs_per_prompt=6, test_prompts=80)
    at = df.set_index("agreement")
    assert abs(at.loc[0.5, "drop"]) < 0.05        # no correlation in training: nothing to lose
    assert at.loc[1.0, "acc_in"] > 0.95 and at.loc[1.0, "drop"] > 0.1   # the cue is learned, and lost OOD


def test_response_properties_and_spearman():
    props = response_properties(["Sure:\n- one\n- two\n1. three", "```py\nx\n```", "I'm sorry, I can't help.", "ok"])
    assert list(props.list_items) == [3, 0, 0, 0] and list(props.code_blocks) == [0, 1, 0, 0]
    assert list(props.refusal) == [0, 0, 1, 0] and list(props.words) == [7, 3, 5, 1]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0) and math.isnan(spearman([1, 1], [1, 2]))


def test_objective_report_compare_and_cluster():
    torch.manual_seed(0)
    rm = build_reward_model(ModelConfig(hidden_dim=8, num_objectives=3, feature_dim=2, feature_transform="none"),
                            emb_dim=6, seed=0)
    n = 12
    prompts = [f"p{i % 4}" for i in range(n)]
    responses = [("- item\n" * (i % 3)) + "word " * (i + 1) for i in range(n)]
    pe = torch.randn(4, 6)[[i % 4 for i in range(n)]]
    report = objective_report(rm, prompts, pe, responses, torch.randn(n, 6), top=3)
    assert set(report) == {"objective 0", "objective 1", "objective 2"}
    first = report["objective 0"]
    assert len(first["top_prompts"]) == 3 and len({x["prompt"] for x in first["top_prompts"]}) == 3
    assert first["highest_scored"][0]["score"] >= first["lowest_scored"][0]["score"]
    assert set(first["score_correlation"]) == {"words", "list_items", "code_blocks", "refusal"}
    same = compare_prompts(rm, pe[0], pe[0])
    assert np.allclose(same.diff_mean, 0, atol=0.01) and np.allclose(same.p_a_greater, 0.5, atol=0.03)
    blobs = np.concatenate([np.tile([0.8, 0.1, 0.1], (20, 1)), np.tile([0.1, 0.1, 0.8], (10, 1))])
    labels, centers = cluster_prompts(blobs + np.random.default_rng(0).normal(0, 0.01, blobs.shape), 2)
    assert list(labels) == [0] * 20 + [1] * 10 and np.allclose(centers[0], [0.8, 0.1, 0.1], atol=0.02)


def test_auroc_counts_ranked_pairs_and_ties():
    assert auroc([0, 1, 2], [3, 4]) == 1.0 and auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=300), rng.normal(1.0, size=200)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(neg, pos) == pytest.approx(brute)
