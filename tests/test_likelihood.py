"""The causal LM's statistics (representation part ``likelihood``): the numbers, the caps, the cache, the wiring."""

from __future__ import annotations

import re

import pytest
import torch

from vrm_pyro.config import EncoderConfig
from vrm_pyro.errors import ConfigError
from vrm_pyro.likelihood import (
    LIKELIHOOD_STATISTICS,
    LikelihoodScorer,
    _cut,
    load_causal_lm,
    resolve_dtype,
)
from vrm_pyro.representations import LIKELIHOOD_PARTS, feature_groups

from .conftest import tiny_llama


def tiny_lm(path=None):
    """The tiny random Llama of the test suite, in eval mode (saved to ``path`` if given)."""
    model, tok = tiny_llama(path)
    return model.eval(), tok


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def scorer(lm, **kw):
    model, tok = lm
    kw.setdefault("use_cache", False)
    return LikelihoodScorer("tiny", model=model, tokenizer=tok, dtype="float32", **kw)


def by_hand(model, tok, prompt, response):
    """The four statistics from one forward pass written out: [CLS] prompt \\n\\n response [SEP]."""
    head = [tok.cls_token_id] + tok(prompt, add_special_tokens=False)["input_ids"] + tok("\n\n", add_special_tokens=False)["input_ids"]
    body = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + body + [tok.sep_token_id]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0], -1)
    lp = torch.stack([logp[t - 1, ids[0, t]] for t in range(len(head), len(head) + len(body))])
    end = logp[len(head) + len(body) - 1, tok.sep_token_id]
    return lp, end


def test_statistics_match_a_forward_pass_written_out(lm):
    model, tok = lm
    s = scorer(lm)
    prompts = ["Name a colour.", "Say something."]
    responses = ["Blue is a colour that many people like.", "Hello there, how are you today?"]
    got = s.score(prompts, responses)
    assert got.shape == (2, len(LIKELIHOOD_STATISTICS))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        lp, end = by_hand(model, tok, p, r)
        alone, _ = by_hand(model, tok, "", r)
        want = torch.stack([lp.mean(), alone.mean(), torch.quantile(lp, 0.1), end])
        torch.testing.assert_close(got[i], want, atol=1e-4, rtol=1e-4)


def test_batching_and_padding_do_not_change_the_numbers(lm):
    prompts = ["Q" * k for k in (1, 5, 9)] + ["Explain gravity in one sentence."]
    responses = ["short.", "a somewhat longer answer with more words in it.", "x y z", "Things fall down."]
    one = scorer(lm, batch_size=1).score(prompts, responses)
    many = scorer(lm, batch_size=8).score(prompts, responses)
    torch.testing.assert_close(one, many, atol=1e-4, rtol=1e-4)


def test_alone_ignores_the_prompt_and_given_prompt_does_not(lm):
    s = scorer(lm)
    out = s.score(["What is two plus two?", "Describe a sunset over the sea."], ["It is four."] * 2)
    assert out[0, 1] == pytest.approx(out[1, 1].item(), abs=1e-5)
    assert abs(out[0, 0].item() - out[1, 0].item()) > 1e-4


def test_long_texts_keep_their_ends():
    assert _cut(list(range(10)), 20, 0.75) == list(range(10))
    assert _cut(list(range(100)), 8, 0.75) == [0, 1, 2, 3, 4, 5, 98, 99]
    assert _cut(list(range(100)), 4, 0.5) == [0, 1, 98, 99]


def test_a_long_response_is_cut_to_head_and_tail(lm):
    s = scorer(lm, max_prompt_tokens=4, max_response_tokens=8)
    ids, first, n = s._ids("one two three four five six seven", " ".join(f"w{i}" for i in range(40)))
    tok = lm[1]
    assert n == 8 and first == 1 + 4 + len(tok("\n\n", add_special_tokens=False)["input_ids"])
    assert ids[-1] == tok.sep_token_id
    body = tok.decode(ids[first:first + n])
    assert body.endswith(tok.decode(tok("w39", add_special_tokens=False)["input_ids"]))


def test_cache_returns_the_same_numbers_without_a_forward_pass(lm, tmp_path):
    model, tok = lm
    first = LikelihoodScorer("tiny", model=model, tokenizer=tok, dtype="float32", cache_dir=str(tmp_path))
    a = first.score(["p", "q"], ["an answer.", "another answer."])
    again = LikelihoodScorer("tiny", model=model, tokenizer=tok, dtype="float32", cache_dir=str(tmp_path))
    b = again.score(["q", "p"], ["another answer.", "an answer."])
    assert again.forward_texts == 0
    torch.testing.assert_close(b, a.flip(0))
    other_caps = LikelihoodScorer("tiny", model=model, tokenizer=tok, dtype="float32", cache_dir=str(tmp_path),
                                  max_response_tokens=16)
    other_caps.score(["p"], ["an answer."])
    assert other_caps.forward_texts == 2  # the caps are part of the cache identity


def test_representation_part_reads_the_configured_model(tmp_path):
    from vrm_pyro.encoders import TextEncoder

    from .conftest import save_tiny_bert

    tiny_lm(tmp_path / "lm")
    cfg = EncoderConfig(name=str(save_tiny_bert(tmp_path / "enc")), max_length=128, cache_dir=str(tmp_path / "cache"),
                        representation="response+likelihood", likelihood_model=str(tmp_path / "lm"),
                        likelihood_dtype="float32")
    enc = TextEncoder(cfg)
    from vrm_pyro.representations import response_features

    assert enc.likelihood.max_response_tokens == 96  # EncoderConfig.likelihood_response_tokens reaches the scorer
    assert TextEncoder(cfg.replace(likelihood_response_tokens=32)).likelihood.max_response_tokens == 32
    h = response_features(enc, ["Name a colour."], ["Blue."], spec=cfg.representation)
    assert feature_groups(cfg.representation, enc.dim) == (enc.dim, 4)
    stats = enc.likelihood.score(["Name a colour."], ["Blue."])
    torch.testing.assert_close(h[:, enc.dim:], stats)
    contrast = response_features(enc, ["Name a colour."], ["Blue."], spec="likelihood_contrast")
    torch.testing.assert_close(contrast, torch.stack([stats[:, 0] - stats[:, 1], stats[:, 3]], -1))
    assert feature_groups("response+likelihood_contrast", enc.dim) == (enc.dim, 2)
    # the gate: the PMI only where it is negative (an answer less likely after the prompt than alone)
    prompts, answers = ["Name a colour.", "Name a colour."], ["Blue.", "The stock market fell sharply today."]
    both = enc.likelihood.score(prompts, answers)
    pmi = both[:, 0] - both[:, 1]
    gate = response_features(enc, prompts, answers, spec="likelihood_gate")
    torch.testing.assert_close(gate, torch.stack([torch.minimum(pmi, torch.zeros(2)), both[:, 3]], -1))
    # with fixed statistics, one answer more likely after the prompt (PMI +1) and one less (PMI -1)
    from types import SimpleNamespace

    fixed = torch.tensor([[-1.0, -2.0, -3.0, -0.5], [-3.0, -2.0, -4.0, -0.7]])
    fake = SimpleNamespace(likelihood=SimpleNamespace(score=lambda *a, **k: fixed))
    torch.testing.assert_close(response_features(fake, prompts, answers, spec="likelihood_gate"),
                               torch.tensor([[0.0, -0.5], [-1.0, -0.7]]))
    torch.testing.assert_close(response_features(fake, prompts, answers, spec="likelihood_contrast"),
                               torch.tensor([[1.0, -0.5], [-1.0, -0.7]]))
    # fluency given the prompt, the PMI, log p(end): no "alone" column that could undo a sign on the first two
    torch.testing.assert_close(response_features(fake, prompts, answers, spec="likelihood_fluency"),
                               torch.tensor([[-1.0, 1.0, -0.5], [-3.0, -1.0, -0.7]]))
    assert feature_groups("response+likelihood_fluency", 8) == (8, 3)


def test_permuted_sentences_keep_their_seams_and_the_order_gain_is_the_difference():
    from types import SimpleNamespace

    from vrm_pyro.likelihood import permute_sentences
    from vrm_pyro.representations import response_features

    text = "First, mix the flour. Then add water!\nKnead it well.\n\nBake for an hour. Serve warm.\n"
    out = permute_sentences(text)
    assert out == permute_sentences(text) and out != text  # deterministic, never the original order
    seams = lambda t: re.findall(r"\s*\n\s*|(?<=[.!?]) +", t)  # noqa: E731
    assert seams(out) == seams(text) and out.endswith("\n")  # only the order moves: spaces and line breaks stay
    split = lambda t: sorted(re.split(r"\s*\n\s*|(?<=[.!?]) +", t.strip()))  # noqa: E731
    assert split(out) == split(text)
    assert permute_sentences("Just one sentence here") == "Just one sentence here"
    assert permute_sentences("Go. Stay.") == "Stay. Go." and permute_sentences(" Go. Stay.") == " Stay. Go."
    assert permute_sentences("Yes. Yes.") == "Yes. Yes."  # no other order exists
    assert permute_sentences("Go. Stay. Go.") != "Go. Stay. Go."  # repeated sentences: still another order
    # a numbered list's items move with their enumerators
    items = permute_sentences("Steps:\n1. Mix the flour.\n2. Add water.\n3. Bake it.").split("\n")
    assert sorted(items) == ["1. Mix the flour.", "2. Add water.", "3. Bake it.", "Steps:"]
    # the part: stats of the answer minus those of its reordered sentences; one sentence -> 0 and no LM call
    calls = []

    table = {"Go. Stay.": [-1.0, -2.0, -5.0, -0.5], "One.": [-3.0, -4.0, -6.0, -0.7], "Stay. Go.": [-2.0, -2.25, -6.0, -0.9]}

    def score(prompts, responses, **_):
        calls.append(list(responses))
        return torch.tensor([table[r] for r in responses])

    fake = SimpleNamespace(likelihood=SimpleNamespace(score=score))
    table["Yes. Yes."] = [-2.0, -3.0, -5.0, -0.5]
    h = response_features(fake, ["p"] * 3, ["Go. Stay.", "One.", "Yes. Yes."], spec="likelihood_order")
    assert calls == [["Go. Stay.", "One.", "Yes. Yes."], ["Stay. Go."]]  # no other order: not scored again
    torch.testing.assert_close(h, torch.tensor([[1.0, 0.25], [0.0, 0.0], [0.0, 0.0]]))
    assert feature_groups("response+likelihood_order", 8) == (8, 2)


def test_the_order_margin_is_the_lm_gap_between_an_answer_and_a_shuffle_that_keeps_its_bag(lm):
    """``likelihood_order_margin``: an answer and its layout-keeping shuffle are read against the same canonical
    texts, so their gap is the LM's alone; what the pieces score in any order cancels."""
    import numpy as np

    from vrm_pyro.covariates import bag_sentences
    from vrm_pyro.hacking import JUNK_KINDS
    from vrm_pyro.likelihood import CANONICAL_REORDERINGS, canonical_permutations
    from vrm_pyro.representations import feature_orientation, response_features

    text = "Sure! Here are three tips:\n\n1. Sleep well.\n2. Eat greens daily.\n3. Walk after meals.\n\nI hope this helps."
    shuffled = JUNK_KINDS["shuffled_sentences"]("p", text, "", np.random.default_rng(3))
    assert shuffled != text and bag_sentences(shuffled) == bag_sentences(text)
    canonical = canonical_permutations(text)
    assert canonical == canonical_permutations(shuffled) == canonical_permutations(text)  # order-free, deterministic
    assert len(canonical) == CANONICAL_REORDERINGS
    assert all(sorted(c.split("\n")) == bag_sentences(text) for c in canonical)  # the bag's pieces, one per line
    assert canonical_permutations("Just one sentence here") == [] == canonical_permutations("Yes. Yes.")
    # with a fake LM whose fluency is known per text: the column is fluency minus its mean over the canonical texts
    other = "Paris is the capital. It lies on the Seine. It has many museums."  # another bag: its own canonical texts
    mine = canonical_permutations(other)
    assert mine and not set(mine) & set(canonical)
    fluency = {t: -0.01 * (i + 1) for i, t in enumerate(dict.fromkeys([text, shuffled, "One.", other, *canonical, *mine]))}
    calls = []

    def score(prompts, responses, **_):
        calls.append(list(responses))
        return torch.tensor([[fluency[r], 0.0, 0.0, 0.0] for r in responses])

    from types import SimpleNamespace

    fake = SimpleNamespace(likelihood=SimpleNamespace(score=score))
    h = response_features(fake, ["p"] * 4, [text, shuffled, "One.", other], spec="likelihood_order_margin")
    base, own = (sum(fluency[c] for c in cs) / len(cs) for cs in (canonical, mine))
    torch.testing.assert_close(h, torch.tensor([[fluency[text] - base], [fluency[shuffled] - base], [0.0],
                                                [fluency[other] - own]]))
    assert calls[1] == canonical * 2 + mine  # each answer's own canonical texts, none for one sentence
    assert feature_groups("response+likelihood_order_margin", 8) == (8, 1)
    assert feature_orientation("response+likelihood_order_margin", 8, ["order_fluency"]) == (0,) * 8 + (1,)
    # the real (tiny) LM: the same arithmetic on its own numbers
    s = scorer(lm)
    real = response_features(SimpleNamespace(likelihood=s), ["p", "p"], [text, shuffled], spec="likelihood_order_margin")
    own = s.score(["p"] * 2, [text, shuffled])[:, 0]
    torch.testing.assert_close(real[0] - real[1], (own[0] - own[1])[None])


def test_errors_say_what_to_set(tmp_path):
    for part in LIKELIHOOD_PARTS:
        with pytest.raises(ConfigError, match="--likelihood-model"):
            EncoderConfig(representation=f"response+{part}")
    with pytest.raises(ConfigError, match="does not exist"):
        load_causal_lm(str(tmp_path / "missing.gguf"))
    # a missing LM is refused when the encoder is built, before any text is encoded (not after the MiniLM views)
    from vrm_pyro.encoders import TextEncoder

    from .conftest import save_tiny_bert

    with pytest.raises(ConfigError, match="does not exist"):
        TextEncoder(EncoderConfig(name=str(save_tiny_bert(tmp_path / "enc")), likelihood_model=str(tmp_path / "x.gguf"),
                                  representation="response+likelihood_gate"))
    with pytest.raises(ConfigError, match="likelihood_response_tokens"):
        EncoderConfig(likelihood_response_tokens=2)
    with pytest.raises(ConfigError, match="likelihood_dtype"):
        EncoderConfig(likelihood_dtype="float16")
    assert resolve_dtype("float32") == "float32"
    assert resolve_dtype("auto", "cuda") == "bfloat16"


def test_a_run_with_the_likelihood_recipe_reloads_scores_alike_and_refuses_another_lm(tmp_path):
    """The ``likelihood`` recipe's model (the PMI monotone, log-normal) end to end on a tiny LM."""
    import dataclasses

    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.config import DataConfig, TrainConfig, recommended_configs
    from vrm_pyro.errors import CheckpointError
    from vrm_pyro.experiment import train_and_evaluate
    from vrm_pyro.scoring import encoder_for, score_texts

    from .conftest import save_tiny_bert

    tiny_lm(tmp_path / "lm")
    enc_cfg = EncoderConfig(name=str(save_tiny_bert(tmp_path / "enc")), max_length=48, cache_dir=str(tmp_path / "c"),
                            representation="response+likelihood_contrast", likelihood_model=str(tmp_path / "lm"),
                            likelihood_dtype="float32")
    model_cfg = recommended_configs("likelihood")["ModelConfig"].replace(hidden_dim=16, num_objectives=3, feature_dim=2)
    assert (model_cfg.monotone, model_cfg.monotone_prior, model_cfg.path_prior) == ("pmi", "log_normal", "part")
    result = train_and_evaluate(DataConfig(limit=30, augment="core", augment_rate=0.2), enc_cfg, model_cfg,
                                TrainConfig(epochs=2, batch_size=8, progress=False), output=tmp_path / "run",
                                compare_baseline=False, progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "model")
    assert ckpt.metadata["likelihood_identity"].startswith("likelihood|lm@")
    mono = ckpt.reward_model.model.path.monotone.squeeze(-1).tolist()
    assert mono[-2:] == [2, 0] and not any(mono[:-2]), mono  # the PMI only (log-normal, code 2); log p(end) free
    card = (tmp_path / "run" / "model" / "README.md").read_text()  # the model card names the LM and the augmentation
    assert ckpt.metadata["likelihood_identity"] in card and "core at rate 0.2, from preferred answers" in card
    encoder = encoder_for(ckpt)
    prompts, responses = ["How do I bake bread?"] * 2, ["Knead and bake.", "No idea."]
    loaded = score_texts(ckpt, encoder, prompts, responses).reward
    live = result.runs["vrm"].reward_model
    from vrm_pyro.scoring import reward_texts

    torch.testing.assert_close(loaded, reward_texts(live, encoder, prompts, responses).reward)
    # another LM (other weights) under the same path: refused, not silently scored
    model, tok = tiny_lm()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="likelihood statistics came from"):
        encoder_for(dataclasses.replace(ckpt))
