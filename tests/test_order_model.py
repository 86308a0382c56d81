"""The self-supervised sentence-order model (representation part ``order_score``): what it learns, and that it
travels with a checkpoint."""

import random

import pytest
import torch

from vrm_pyro.config import DataConfig, EncoderConfig, ModelConfig, TrainConfig
from vrm_pyro.errors import CheckpointError, ConfigError
from vrm_pyro.hacking import JUNK_KINDS
from vrm_pyro.order_model import (
    STATISTICS,
    SentenceOrderModel,
    canonical_reorderings,
    lexical_features,
    needs_order_model,
)

TOPICS = ["bread", "tea", "a bike", "a tent", "soup", "a kite", "a garden", "a desk", "rice", "a fence"]
MIDDLE = ["Gather what you need for {t}.", "Prepare {t} with care.", "Check {t} twice.", "Clean {t} well.",
          "Measure {t} exactly.", "Set {t} aside for a while."]


def answer(rng: random.Random, topic: str) -> str:
    """A written order a reader would recognise: an opener, steps in sequence, a closer."""
    steps = rng.sample(MIDDLE, 3)
    body = " ".join(f"{w} {s.format(t=topic)[0].lower()}{s.format(t=topic)[1:]}"
                    for w, s in zip(("First,", "Then", "Finally,"), steps))
    return f"Sure! Here is how to handle {topic}. {body} I hope this helps with {topic}."


def corpus(seed: int, n: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    topics = [rng.choice(TOPICS) for _ in range(n)]
    return [f"How do I handle {t}?" for t in topics], [answer(rng, t) for t in topics]


def reordered(prompts, responses, seed: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [JUNK_KINDS["shuffled_sentences"](p, r, "", rng) for p, r in zip(prompts, responses)]


def test_it_learns_the_written_order_and_scores_held_out_answers_above_their_reorderings():
    prompts, responses = corpus(0, 120)
    model = SentenceOrderModel.fit(prompts, responses, seed=0)
    held_p, held_r = corpus(1, 60)
    shuffled = reordered(held_p, held_r, 5)
    wins = (model.score(held_p, held_r) > model.score(held_p, shuffled)).float().mean()
    assert wins >= 0.95, wins
    # a statistic that is 0 on every real answer here ("I hope this helps" in the first half) is scaled over the
    # reorderings too: the scores stay on a log-odds scale instead of running into the thousands
    assert model.score(held_p, shuffled).abs().max() < 50
    # what it learned reads as the order: an opening "Sure" early, "I hope" late
    early = model.score(["q"], ["Sure! Gather it. I hope this helps."])
    late = model.score(["q"], ["I hope this helps. Gather it. Sure!"])
    assert early > late


def test_order_margin_keeps_the_gap_to_a_shuffle_and_cancels_what_the_sentences_score_in_any_order():
    """``order_margin = score(y) − mean score(π_k(y))``, the π_k drawn from the sentences sorted: an answer and its
    shuffle share the mean (the same reorderings), so their gap is ``score``'s; the answer's style (an opening
    "Sure" wherever it sits) moves ``score`` across answers and cancels in the margin."""
    prompts, responses = corpus(0, 120)
    model = SentenceOrderModel.fit(prompts, responses, seed=0)
    held_p, held_r = corpus(1, 20)
    shuffled = reordered(held_p, held_r, 5)
    assert all(canonical_reorderings(r) == canonical_reorderings(s) and len(canonical_reorderings(r)) == 4
               for r, s in zip(held_r, shuffled))
    gap_score = model.score(held_p, held_r) - model.score(held_p, shuffled)
    gap_margin = model.margin(held_p, held_r) - model.margin(held_p, shuffled)
    assert torch.allclose(gap_margin, gap_score, atol=1e-4) and (gap_margin > 0).all()
    # one sentence: its words are what move; the answer and its word shuffle share them too
    one = "Gather the bread and check it twice"
    assert canonical_reorderings(one) == canonical_reorderings("bread twice the check Gather and it")
    assert canonical_reorderings("Word.") == [] and model.margin(["q"], ["Word."]).item() == 0.0
    # a sentence that scores alike anywhere shifts score, not the margin
    plain, styled = "Mix it. Bake it. Serve it.", "Mix it. Bake it. Serve it. Thanks a lot for reading this."
    both = model.score(["q"] * 2, [plain, styled]), model.margin(["q"] * 2, [plain, styled])
    assert abs(both[1][1] - both[1][0]) <= abs(both[0][1] - both[0][0]) + 1e-6
    # layout does not count: a list whose items moved under fixed enumerators has the same reorderings
    listed = "Steps:\n1. Mix it.\n2. Bake it.\n3. Serve it."
    assert canonical_reorderings(listed) == canonical_reorderings("Steps:\n1. Serve it.\n2. Mix it.\n3. Bake it.")
    assert all("1." not in t and "\n" not in t for t in canonical_reorderings(listed))


def test_lexical_features_are_stable_hashes_and_empty_for_one_sentence():
    assert lexical_features("Just one sentence here.", 64) == {}
    a = lexical_features("Sure! Then it works. Finally done.", 2**14)
    assert a == lexical_features("Sure! Then it works. Finally done.", 2**14)  # CRC32, not Python's hash
    assert len(a) >= 5 and all(0 <= k < 2**14 for k in a)
    # reversing the order flips the position-weighted first words
    b = lexical_features("Finally done. Then it works. Sure!", 2**14)
    assert a != b


def test_word_bigrams_see_a_one_sentence_word_shuffle_and_travel_with_the_state():
    prompts, responses = corpus(3, 120)
    one = [r.split(". ")[1] + "." for r in responses]  # "Here is how to handle X.": one sentence
    plain = SentenceOrderModel.fit(prompts * 2, responses + one, seed=0, buckets=4096)
    words = SentenceOrderModel.fit(prompts * 2, responses + one, seed=0, buckets=4096, word_bigrams=True)
    held = ["Here is how to handle a kite.", "Here is how to handle soup.", "Here is how to handle a desk."]
    shuffled = ["Here to handle is how a kite.", "Here to handle is how soup.", "Here to handle is how a desk."]
    # without word pairs a one-sentence answer and its word shuffle look alike to the lexical features (the dense
    # statistics still see some of it: frequent bigrams); with them the shuffle loses clearly more
    assert lexical_features(held[0], 4096) == {} and lexical_features(held[0], 4096, word_bigrams=True)
    gap = {name: m.score(["q"] * 3, held) - m.score(["q"] * 3, shuffled) for name, m in (("plain", plain), ("words", words))}
    assert (gap["words"] > gap["plain"] + 0.5).all(), gap
    assert words.identity != plain.identity
    again = SentenceOrderModel.from_state_dict(words.state_dict())
    assert again.word_bigrams and again.identity == words.identity
    torch.testing.assert_close(again.score(["q"] * 3, shuffled), words.score(["q"] * 3, shuffled))
    assert "word_bigrams" not in plain.state_dict()  # the default's state is what older checkpoints hold


def worded(rng: random.Random, topic: str) -> str:
    """Order carried by words inside the sentences, not by their first words: every sentence opens "We now"."""
    verbs = rng.sample(["check", "clean", "measure", "mix", "store"], 3)
    return (f"We now introduce {topic} in this answer. " + " ".join(f"We now {v} {topic} with care." for v in verbs)
            + f" We now conclude with {topic} in summary.")


def test_sentence_words_see_order_inside_sentences_and_travel_with_the_state():
    """Every sentence opens "We now": the first two words carry no order, the words after them do ("introduce" early,
    "summary" late). ``sentence_words`` weighs every word by its position, so it ranks held-out answers above their
    reorderings where the first-word features cannot."""
    rng = random.Random(0)
    topics = [rng.choice(TOPICS) for _ in range(150)]
    prompts, responses = [f"Tell me about {t}." for t in topics], [worded(rng, t) for t in topics]
    plain = SentenceOrderModel.fit(prompts, responses, seed=0, buckets=4096)
    words = SentenceOrderModel.fit(prompts, responses, seed=0, buckets=4096, sentence_words=True, l2=1e-4)
    held_p, held_r = ["Tell me about tea."] * 20, [worded(random.Random(k), "tea") for k in range(20)]
    shuffled = reordered(held_p, held_r, 7)
    wins = {name: float((m.score(held_p, held_r) > m.score(held_p, shuffled)).float().mean())
            for name, m in (("plain", plain), ("words", words))}
    assert wins["words"] == 1.0 and wins["plain"] < 0.9, wins
    assert words.identity != plain.identity and "sentence_words" not in plain.state_dict()
    again = SentenceOrderModel.from_state_dict(words.state_dict())
    assert again.sentence_words and not again.word_bigrams and again.identity == words.identity
    torch.testing.assert_close(again.score(held_p, shuffled), words.score(held_p, shuffled))

def test_state_round_trip_scores_alike_and_bad_states_are_refused():
    prompts, responses = corpus(2, 40)
    model = SentenceOrderModel.fit(prompts, responses, seed=0, buckets=256)
    again = SentenceOrderModel.from_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    assert again.identity == model.identity and again.buckets == 256
    torch.testing.assert_close(again.score(prompts, responses), model.score(prompts, responses))
    with pytest.raises(CheckpointError, match="missing tensors"):
        SentenceOrderModel.from_state_dict({"lexical": model.lexical})
    with pytest.raises(ConfigError, match=f"{len(STATISTICS)} entries"):
        SentenceOrderModel(model.lexical, torch.zeros(3), model.mean, model.scale)
    with pytest.raises(ConfigError, match=f"{len(STATISTICS)} entries"):  # a mean of another length too
        SentenceOrderModel(model.lexical, model.statistics, model.mean[:5], model.scale)
    with pytest.raises(ConfigError, match="at least 10"):
        SentenceOrderModel.fit(["q"] * 3, ["One. Two."] * 3)


def test_the_part_needs_a_fitted_model_and_gives_its_score(tiny_bert):
    from vrm_pyro.encoders import TextEncoder
    from vrm_pyro.representations import representation_dim, response_features

    model, tok = tiny_bert
    enc = TextEncoder(EncoderConfig(representation="response+order_score", max_length=128), model=model, tokenizer=tok, use_cache=False)
    prompts, responses = corpus(3, 20)
    assert needs_order_model("response + order_score") and not needs_order_model("response+order+discourse")
    with pytest.raises(ConfigError, match="order_score needs a fitted sentence-order model"):
        response_features(enc, prompts, responses, spec="order_score")
    enc.order_model = SentenceOrderModel.fit(prompts, responses, buckets=256)
    h = response_features(enc, prompts, responses, spec="response+order_score")
    assert h.shape == (20, representation_dim("response+order_score", enc.dim)) == (20, enc.dim + 1)
    torch.testing.assert_close(h[:, -1], enc.order_model.score(prompts, responses))


def test_fit_order_model_sees_the_real_training_answers_only(capsys):
    from vrm_pyro.experiment import fit_order_model, load_splits

    class Enc:
        config = EncoderConfig(representation="response+order_score")
        order_model = None

    _, splits = load_splits(DataConfig(limit=60, augment="shuffled_sentences", augment_rate=1.0))
    seen = []
    real = {r for r in splits["train"].response_a[:len(splits["train"]) - len(splits["train_augmented"])]}
    fake = set(splits["train_augmented"].response_b) - real

    original = SentenceOrderModel.fit
    try:
        SentenceOrderModel.fit = classmethod(lambda cls, p, r, **kw: seen.extend(r) or original.__func__(cls, p, r, **kw))
        fit_order_model(Enc, splits, progress=True, reorderings=1)
    finally:
        SentenceOrderModel.fit = original
    assert fake and real <= set(seen) and not fake & set(seen)
    assert Enc.order_model is not None
    err = capsys.readouterr().err  # the fit is a stage of `vrm train`'s log, like encoding a split
    assert "fit sentence-order model (training answers): started" in err and ": done in " in err
    # options reach the fit: a heavy penalty keeps the weights small
    fit_order_model(Enc, splits, l2=0.5)
    heavy = Enc.order_model.statistics.abs().max()
    fit_order_model(Enc, splits)
    assert heavy < Enc.order_model.statistics.abs().max() / 5 and not Enc.order_model.sentence_words
    # and the encoder config's order_features and order_l2 (vrm train --order-features, --order-l2) do too
    Enc.config = EncoderConfig(representation="response+order_score", order_features="sentence_words", order_l2=0.5)
    fit_order_model(Enc, splits)
    assert Enc.order_model.sentence_words and Enc.order_model.statistics.abs().max() < heavy * 1.5
    with pytest.raises(ConfigError, match=r"EncoderConfig.order_features, --order-features\): unknown \['bigrams'\]"):
        EncoderConfig(order_features="sentence_words,bigrams")


@pytest.mark.parametrize("part", ["order_score", "order_margin"])
def test_a_run_with_an_order_part_saves_the_order_model_and_reloads_scores_alike(tmp_path, part):
    from vrm_pyro.checkpoint import ORDER_MODEL_NAME, load_checkpoint, save_checkpoint
    from vrm_pyro.experiment import train_and_evaluate
    from vrm_pyro.scoring import encoder_for, reward_texts, score_texts

    from .conftest import save_tiny_bert

    enc_cfg = EncoderConfig(name=str(save_tiny_bert(tmp_path / "enc")), max_length=48, cache_dir=str(tmp_path / "c"),
                            representation=f"response+{part}",
                            order_features="sentence_words" if part == "order_margin" else "")
    result = train_and_evaluate(DataConfig(limit=40), enc_cfg, ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2),
                                TrainConfig(epochs=2, batch_size=8, progress=False), output=tmp_path / "run",
                                progress=False)
    model_ckpt, base_ckpt = load_checkpoint(tmp_path / "run" / "model"), load_checkpoint(tmp_path / "run" / "baseline")
    assert (tmp_path / "run" / "model" / ORDER_MODEL_NAME).is_file()
    card = (tmp_path / "run" / "model" / "README.md").read_text()  # the model card names it, with its features
    assert "sentence-order model" in card and ("first words + sentence_words, L2 0.001" in card) == (part == "order_margin")
    assert model_ckpt.order_model.identity == base_ckpt.order_model.identity  # one fit for the model and its baseline
    assert model_ckpt.order_model.sentence_words == (part == "order_margin")  # the config's features, kept
    encoder = encoder_for(model_ckpt)
    assert encoder.order_model.identity == model_ckpt.order_model.identity
    prompts, responses = ["How do I bake bread?"] * 2, ["Sure! Knead it. Then bake it.", "Then bake it. Sure! Knead it."]
    loaded = score_texts(model_ckpt, encoder, prompts, responses).reward
    torch.testing.assert_close(loaded, reward_texts(result.runs["vrm"].reward_model, encoder, prompts, responses).reward)
    # a checkpoint whose representation needs an order model cannot be saved or loaded without one
    rm = base_ckpt.reward_model
    rm.provenance = {}  # nothing to reuse
    with pytest.raises(CheckpointError, match="no fitted order model"):
        save_checkpoint(tmp_path / "bad", rm, encoder=enc_cfg)
    (tmp_path / "run" / "model" / ORDER_MODEL_NAME).unlink()
    with pytest.raises(CheckpointError, match="order_model.safetensors"):
        load_checkpoint(tmp_path / "run" / "model")

