"""Junk answers, augmentation and the stress test: exact properties on constructed texts."""

import numpy as np
import pytest
import torch

from vrm_pyro import EncoderConfig, ModelConfig, build_reward_model
from vrm_pyro.data import PreferencePairs
from vrm_pyro.errors import DataError
from vrm_pyro.hacking import (
    CORE_JUNK,
    JUNK_KINDS,
    REFUSAL_ANSWER,
    RRM_JUNK,
    SCAFFOLD_ANSWER,
    TEMPLATE_ANSWER,
    AugmentGroup,
    augment,
    augment_groups,
    augment_pairs,
    junk_kinds,
    junk_rates,
    load_stress_rows,
    make_junk,
    stress_kinds,
    stress_set,
    stress_test,
)

PROMPTS = [f"Explain topic number {i} in detail, please." for i in range(6)]
ANSWERS = [f"Topic {i} is about apples and pears. It has three parts. First, the roots grow. "
           f"Second, the stem rises. Finally, the fruit ripens in autumn." for i in range(6)]


def test_every_junk_kind_differs_from_the_real_answer_and_is_deterministic():
    others = list(zip(PROMPTS, ANSWERS))
    for kind in JUNK_KINDS:
        junk = make_junk(kind, PROMPTS[0], ANSWERS[0], others, seed=3)
        assert junk.strip() and junk != ANSWERS[0], kind
        assert make_junk(kind, PROMPTS[0], ANSWERS[0], others, seed=3) == junk
    words = sorted(make_junk("shuffled_words", PROMPTS[0], ANSWERS[0], others).split())
    assert words == sorted(ANSWERS[0].split())  # the same words, another order
    assert make_junk("repeated", PROMPTS[0], ANSWERS[0], others) == "\n\n".join([ANSWERS[0]] * 5)
    assert ANSWERS[0].startswith(make_junk("truncated", PROMPTS[0], ANSWERS[0], others))
    assert make_junk("echo", PROMPTS[0], ANSWERS[0], others) == PROMPTS[0]
    assert make_junk("template", PROMPTS[0], ANSWERS[0], others) == TEMPLATE_ANSWER
    other = make_junk("other_prompt", PROMPTS[0], ANSWERS[0], others)
    assert other in ANSWERS[1:]  # a real answer to another prompt, never its own
    assert sorted(make_junk("shuffled_other", PROMPTS[0], ANSWERS[0], others).split()) in [
        sorted(a.split()) for a in ANSWERS[1:]]


def test_junk_kind_names():
    assert junk_kinds("core") == list(CORE_JUNK) and junk_kinds("all") == list(JUNK_KINDS)
    assert junk_kinds("rrm") == list(RRM_JUNK) and not {"template", "scaffold", "refusal"} & set(RRM_JUNK)
    assert junk_kinds("echo, template") == ["echo", "template"] and junk_kinds("") == []
    with pytest.raises(DataError, match="unknown junk kind"):
        junk_kinds("echo,gibberish")
    with pytest.raises(DataError, match=r"field 'kinds': unknown junk kind\(s\) \['nonsense'\] in 'nonsense'; choose "
                                        r"from: all, core, rrm, [a-z_, ]+$"):  # the option the user gave, no rates
        stress_kinds("nonsense")
    with pytest.raises(DataError, match=r"field 'augment': .* \(each optionally with :RATE\)"):
        augment_groups("echo,nonsense")


def test_content_free_answers_vary_and_share_no_line_with_the_stress_tests_fixed_answers():
    prompts = [f"Write a short poem about the number {i} and the sea, in the style of a sailor." for i in range(400)]
    junk = [make_junk("content_free", p, "A real answer. It has content.", [], seed=0) for p in prompts]
    assert junk == [make_junk("content_free", p, "A real answer. It has content.", [], seed=0) for p in prompts]
    assert len(set(junk)) > 300  # composed per row, not a handful of fixed strings
    fixed = {line.strip() for a in (TEMPLATE_ANSWER, REFUSAL_ANSWER, SCAFFOLD_ANSWER) for line in a.splitlines()}
    lines = {line.strip() for j in junk for line in j.splitlines()}
    assert not (fixed - {""}) & lines  # the stress kinds template/scaffold/refusal stay unseen strings
    # every family is drawn: refusals, placeholder scaffolds, the request restated, announcements, deflections
    assert any("can't" in j or "cannot" in j or "unable" in j for j in junk)
    assert any(j.count("\n") >= 4 and ("- " in j or "1. " in j) for j in junk)
    assert any(j.startswith('You asked: "Write a short poem about the number') for j in junk)
    assert any("Here is a detailed response:" in j for j in junk)
    assert "content_free" not in JUNK_KINDS  # training only: the stress test never shows it


def test_augment_spec_groups_kinds_and_gives_a_kind_with_its_own_rate_its_own_stream():
    assert augment_groups("rrm,content_free:0.1", 0.6) == [
        AugmentGroup(tuple(RRM_JUNK), 0.6), AugmentGroup(("content_free",), 0.1, "augment:content_free")]
    assert junk_kinds("rrm,echo,content_free") == list(RRM_JUNK) + ["content_free"]
    labels = np.ones(6, np.float32)
    pairs = PreferencePairs(PROMPTS, ANSWERS, [a.upper() for a in ANSWERS], labels)
    rrm = augment(pairs, "rrm", 2.0, seed=1)
    both = augment(pairs, "rrm,content_free:1", 2.0, seed=1)
    assert rrm.response_b == augment_pairs(pairs, list(RRM_JUNK), 2.0, seed=1).response_b
    assert both.response_b[: len(rrm)] == rrm.response_b  # adding a kind at its own rate leaves RRM's pairs alone
    extra = [m["augmented"] for m in both.meta[len(rrm):]]
    assert extra == ["content_free"] * 6
    for bad, match in (("echo:lots", "finite number"), ("echo:-1", "finite number"), ("echo:inf", "finite number"),
                       ("content_free:", "finite number"), ("echo,nope:1", "nope"), ("rrm,", "empty item"),
                       ("echo:0.1,echo:0.2", "twice")):
        with pytest.raises(DataError, match=match):
            augment_groups(bad, 0.5)
    with pytest.raises(DataError, match="no rates here"):
        junk_kinds("echo:0.1")  # --augment-valid names kinds only
    # a kind asked for again (its own rate on top of RRM's turn, or more pairs than answers) is drawn anew
    twice = augment(pairs, "shuffled_words,shuffled_words:3", 1.0, seed=1)
    assert len(twice) == 24 and len(set(zip(twice.prompt, twice.response_b))) == 24
    # the stress test shows only the stress kinds
    assert stress_kinds("all") == list(JUNK_KINDS) and stress_kinds(None) == list(JUNK_KINDS)
    with pytest.raises(DataError, match="training only"):
        stress_kinds("echo,content_free")
    from vrm_pyro.model_card import _augmentation

    assert _augmentation("rrm,content_free:0.1", 0.6) == "rrm at rate 0.6; content_free at rate 0.1"
    from vrm_pyro import ConfigError, DataConfig

    assert DataConfig(augment="rrm,content_free:0.1", augment_valid="shuffled_sentences").augment_valid
    with pytest.raises(ConfigError, match="finite number"):
        DataConfig(augment="rrm,content_free:x")


def test_augmentation_uses_the_preferred_answer_and_stays_inside_the_split():
    labels = np.array([1, 0, 0.8, 0.2, 1, 1], np.float32)
    pairs = PreferencePairs(PROMPTS, ANSWERS, [a.upper() for a in ANSWERS], labels)
    extra = augment_pairs(pairs, list(CORE_JUNK), rate=2.0, seed=1)
    assert len(extra) == 12 and (extra.label == 1).all()  # one pair per prompt, rate 2 -> two per prompt
    preferred = dict(zip(PROMPTS, [ANSWERS[0], ANSWERS[1].upper(), ANSWERS[2], ANSWERS[3].upper(),
                                   ANSWERS[4], ANSWERS[5]]))
    assert all(real == preferred[p] for p, real in zip(extra.prompt, extra.response_a))
    kinds = [m["augmented"] for m in extra.meta]
    assert all(kinds[i] != kinds[i + 1] for i in range(0, 12, 2)) and set(kinds) <= set(CORE_JUNK)
    borrowed = [b for b, m in zip(extra.response_b, extra.meta) if m["augmented"] == "other_prompt"]
    assert all(b in preferred.values() for b in borrowed)  # only answers of this split's prompts
    # what a prompt gets depends on the prompt: a split with fewer prompts gives the same rows for the rest
    part = augment_pairs(pairs.subset(range(4)), list(CORE_JUNK), rate=2.0, seed=1)
    same = [(p, b) for p, b, m in zip(extra.prompt, extra.response_b, extra.meta)
            if p in PROMPTS[:4] and m["augmented"] not in ("other_prompt", "shuffled_other")]
    assert same == [(p, b) for p, b, m in zip(part.prompt, part.response_b, part.meta)
                    if m["augmented"] not in ("other_prompt", "shuffled_other")]
    # a fractional rate: about rate * pairs in all
    many = PreferencePairs([f"q{i}" for i in range(400)], ["a long real answer."] * 400, ["b"] * 400, np.ones(400))
    assert 25 <= len(augment_pairs(many, ["echo"], rate=0.1)) <= 55
    assert len(augment_pairs(pairs, [], 0.5)) == 0


def test_augmentation_from_both_answers_puts_every_answer_of_the_prompt_above_junk():
    # one prompt, three pairs: "best" beats both others, "mid" beats "worst"; rate 2 -> six augmented pairs
    pairs = PreferencePairs(["q"] * 3, ["best", "best", "mid"], ["mid", "worst", "worst"],
                            np.array([1.0, 0.9, 0.7], np.float32))
    pairs = pairs.concat(PreferencePairs(["r"], ["other answer"], ["another"], np.ones(1, np.float32)))
    extra = augment_pairs(pairs, ["echo", "truncated", "other_prompt"], rate=2.0, source="both")
    reals = [r for p, r in zip(extra.prompt, extra.response_a) if p == "q"]
    assert reals == ["best", "mid", "worst"] * 2  # by mean preference, each in turn, the rejected one too
    borrowed = [b for p, b, m in zip(extra.prompt, extra.response_b, extra.meta)
                if p == "q" and m["augmented"] == "other_prompt"]
    assert borrowed and set(borrowed) == {"other answer"}  # another prompt's most confident answer
    # the default keeps the prompt's most confident preferred answer while there are no more pairs than kinds
    default = augment_pairs(pairs, ["echo", "truncated", "other_prompt"], rate=1.0)
    assert {r for p, r in zip(default.prompt, default.response_a) if p == "q"} == {"best"}
    # answers come from the top: with one pair per prompt (as in HH-RLHF) "both" is "preferred"
    one = PreferencePairs(["q", "r"], ["good q", "good r"], ["weak q", "weak r"], np.array([0.9, 0.2], np.float32))
    for source in ("both", "preferred"):
        got = augment_pairs(one, ["echo"], rate=1.0, source=source)
        assert dict(zip(got.prompt, got.response_a)) == {"q": "good q", "r": "weak r"}
    with pytest.raises(DataError, match="augmentation source"):
        augment_pairs(pairs, ["echo"], 1.0, source="rejected")
    from vrm_pyro import ConfigError, DataConfig

    with pytest.raises(ConfigError, match="augment_from"):
        DataConfig(augment="rrm", augment_from="rejected")


def test_junk_rates_count_ties_as_junk_wins():
    df = junk_rates(np.array([1.0, 1.0, 0.0, 2.0]), np.array([0.0, 1.0, 1.0, 0.0]), ["a", "a", "b", "b"])
    assert df.set_index("kind").junk_wins.to_dict() == {"a": 0.5, "b": 0.5}
    assert df.set_index("kind").n.to_dict() == {"a": 2, "b": 2}


class LengthEncoder:
    """An encoder whose 'embedding' of a text is its word count (first coordinate)."""

    config = EncoderConfig()

    def encode(self, prompts, responses=None, **kwargs):
        texts = responses if responses is not None else prompts
        e = torch.zeros(len(texts), 3)
        e[:, 0] = torch.tensor([float(len(t.split())) for t in texts])
        return e


def test_stress_test_of_a_length_reward_prefers_repetition_and_rejects_echoes():
    rm = build_reward_model(ModelConfig(model="bt", feature_transform="none"), emb_dim=3)
    with torch.no_grad():
        rm.model.head.net.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        rm.model.head.net.bias.zero_()
    stress = stress_set(PROMPTS, ANSWERS, ["repeated", "truncated", "echo"], seed=0)
    assert len(stress) == 18 and stress.kind.count("echo") == 6
    table = stress_test(rm, LengthEncoder(), stress).set_index("kind")
    assert table.loc["repeated", "junk_wins"] == 1.0  # five times longer: a length reward loves it
    assert table.loc["truncated", "junk_wins"] == 0.0 and table.loc["echo", "junk_wins"] == 0.0


def test_stress_rows_from_pairs_or_best_of_n_dev_rows(tmp_path):
    import json

    f = tmp_path / "bon.jsonl"
    f.write_text(json.dumps({"instruction": "q", "samples": [{"output": "bad", "preference": 1.1},
                                                             {"output": "good", "preference": 1.9}]}) + "\n"
                 + json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert load_stress_rows(f) == (["q", "p"], ["good", "r"])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no rows"):
        load_stress_rows(tmp_path / "empty.jsonl")


def test_length_effect_fit_recovers_a_known_beta_and_the_lc_gold_removes_it():
    from vrm_pyro.hacking import fit_length_effect, length_controlled_gold

    rng = np.random.default_rng(0)
    n = 4000
    la, lb = rng.integers(50, 3000, n), rng.integers(50, 3000, n)
    group = rng.integers(0, 4, n)
    delta = lb - la
    sigma = delta.std()
    logit = np.array([-1.0, 0.0, 0.5, 1.0])[group] + 1.7 * np.tanh(delta / sigma)
    p_b = 1 / (1 + np.exp(-logit))
    pairs = PreferencePairs(["q"] * n, ["a" * k for k in la], ["b" * k for k in lb], 1 - p_b,
                            [{"generator_2": f"g{g}"} for g in group])
    fit = fit_length_effect(pairs)
    assert fit["beta"] == pytest.approx(1.7, abs=0.05) and fit["sigma"] == pytest.approx(sigma)
    lc = length_controlled_gold(p_b, delta, fit["beta"], fit["sigma"])
    assert np.allclose(np.log(lc / (1 - lc)), np.array([-1.0, 0.0, 0.5, 1.0])[group], atol=0.1)


def test_augmented_pairs_carry_no_nuisance_difference():
    """The judge never saw a pair made by construction: its length term must not explain why an answer beats its
    own truncation (the authentic reward has to), so φ(b) = φ(a) there; judged pairs keep their covariates."""
    from vrm_pyro.covariates import nuisance_covariates
    from vrm_pyro.encoders import embed_pairs

    real = PreferencePairs(PROMPTS, ANSWERS, ["no."] * len(ANSWERS), np.ones(len(ANSWERS)))
    extra = augment_pairs(real, ["truncated", "repeated"], rate=1.0, seed=0)
    both = real.concat(extra)
    assert both.judged.tolist() == [True] * len(real) + [False] * len(extra)
    emb = embed_pairs(both, LengthEncoder(), nuisance="length,list_items")
    n = len(real)
    assert torch.equal(emb.nuisance_b[:n], torch.as_tensor(nuisance_covariates(real.response_b, "length,list_items")))
    assert torch.equal(emb.nuisance_a[n:], emb.nuisance_b[n:])
    assert (emb.nuisance_a[:n, 0] != emb.nuisance_b[:n, 0]).all()  # the real pairs differ in length
    assert not torch.equal(emb.response_a[n:], emb.response_b[n:])  # the features still see the junk


def test_a_corruption_that_only_moves_whitespace_is_not_junk():
    # "Paris" shuffled, or "Yes.\n\nYes." with its sentences swapped, is "Paris" / "Yes. Yes.": the same tokens as
    # the real answer, so it ties with it (it was counted as junk winning)
    for kind in ("shuffled_words", "shuffled_sentences"):
        for answer in ("Paris", "Yes.\n\nYes.", "ok ok"):
            junk = make_junk(kind, "Write it", answer, [])
            assert junk.split() != answer.split() and junk == TEMPLATE_ANSWER, (kind, answer, junk)


def test_shuffled_sentences_keep_the_answers_layout_and_list_enumerators():
    # the junk moves sentences only: line breaks stay where they were and "2." stays with its item (it used to
    # join every piece with a space, and to split "1." from its item, so the junk's layout gave it away)
    from vrm_pyro.covariates import sentences

    answer = "Here is how:\n\n1. Mix the flour. Add the water.\n2. Knead it well.\n3. Bake for an hour.\n\nEnjoy!"
    layout = lambda t: [line == "" for line in t.split("\n")]  # noqa: E731  (lines, and which are blank)
    for seed in range(5):
        junk = make_junk("shuffled_sentences", "How do I bake bread?", answer, [], seed=seed)
        assert junk != answer and layout(junk) == layout(answer)
        assert len(junk) == len(answer) and all(s in junk for s in sentences(answer))  # items whole, enumerators on
    assert sentences(answer) == ["Here is how:", "1. Mix the flour.", "Add the water.", "2. Knead it well.",
                                 "3. Bake for an hour.", "Enjoy!"]


def test_junk_marked_valid_teaches_the_label_but_not_the_gate():
    """DataConfig.augment_valid: the shuffled pairs still say the answer beats its junk (label 1, not judged), but
    the validity gate is told the junk is valid (junk flag False), so an order-blind gate is not fitted to it."""
    from vrm_pyro import DataConfig
    from vrm_pyro.encoders import embed_pairs
    from vrm_pyro.errors import ConfigError

    real = PreferencePairs(PROMPTS, ANSWERS, ["no."] * len(ANSWERS), np.ones(len(ANSWERS)))
    kinds = ["truncated", "shuffled_sentences"]
    plain = augment_pairs(real, kinds, rate=2.0, seed=0)
    marked = augment_pairs(real, kinds, rate=2.0, seed=0, valid=["shuffled_sentences"])
    assert marked.response_b == plain.response_b and marked.label.tolist() == plain.label.tolist()  # same pairs
    shuffled = np.array([m["augmented"] == "shuffled_sentences" for m in marked.meta])
    assert shuffled.any() and not shuffled.all()
    both = real.concat(marked)
    assert both.judged.tolist() == [True] * len(real) + [False] * len(marked)
    assert both.invalid.tolist() == [False] * len(real) + (~shuffled).tolist()
    assert plain.invalid.all()
    emb = embed_pairs(both, LengthEncoder())
    assert emb.junk.tolist() == both.invalid.tolist()  # what the gate observes as invalid
    with pytest.raises(ConfigError, match=r"augment_valid.*\['shuffled_words'\] not made by --augment 'truncated'"):
        DataConfig(augment="truncated", augment_valid="shuffled_words")
    assert DataConfig(augment="rrm", augment_valid="shuffled_sentences").augment_valid == "shuffled_sentences"


def test_augmentation_of_a_training_split_is_what_vrm_train_adds():
    from vrm_pyro import DataConfig
    from vrm_pyro.experiment import augmentation

    pairs = PreferencePairs(PROMPTS, ANSWERS, [a.upper() for a in ANSWERS], np.ones(6, np.float32))
    cfg = DataConfig(augment="echo,content_free:1", augment_rate=1.0, augment_from="both", augment_valid="echo")
    got = augmentation(pairs, cfg)
    kinds = [m["augmented"] for m in got.meta]
    assert kinds.count("echo") == 6 and kinds.count("content_free") == 6  # each group at its own rate
    assert all(m.get("valid") for m in got.meta if m["augmented"] == "echo")
    assert not any(m.get("valid") for m in got.meta if m["augmented"] == "content_free")
    assert got.response_b == augment(pairs, cfg.augment, 1.0, seed=cfg.split_seed, source="both",
                                     valid=["echo"]).response_b
    assert len(augmentation(pairs, DataConfig())) == 0


def test_stress_report_checks_the_kinds_before_loading_anything(monkeypatch, tmp_path):
    from vrm_pyro import reports

    monkeypatch.setattr(reports, "load_models", lambda *a, **k: pytest.fail("the models were loaded before the check"))
    with pytest.raises(DataError, match="field 'kinds': unknown junk kind"):
        reports.stress_report(tmp_path / "no-checkpoint", tmp_path / "no-input.jsonl", kinds="echo,nonsense")
